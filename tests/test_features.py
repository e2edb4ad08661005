import math

import librosa
import numpy as np
import pytest
import torch

from asr.audio import load_audio
from asr.data import pad_waves
from asr.features import (
    KALDI_LOG_FLOOR,
    LOG_FLOOR,
    FeatureConfig,
    FeatureExtractor,
    SpecAugmentConfig,
    compute_stats,
    load_stats,
    save_stats,
    spec_augment,
)


def test_logmel_agrees_with_librosa(an4_test_utts):
    wave = load_audio(an4_test_utts[0].audio)
    cfg = FeatureConfig()
    ours, frames = FeatureExtractor(cfg).raw(wave[None], torch.tensor([wave.shape[0]]))  # (1, T, 80)
    ref = librosa.feature.melspectrogram(
        y=wave.numpy(), sr=16000, n_fft=512, win_length=400, hop_length=160, n_mels=80, center=False,
        power=2.0, htk=False, norm="slaney")                                           # (80, T)
    ref = np.log(np.maximum(ref, 1e-10)).T
    assert ours.shape[1] == frames.item() == ref.shape[0]
    loud = ref > np.log(1e-7)  # compare where there is signal; float32 noise dominates near the floor
    assert loud.mean() > 0.9
    np.testing.assert_allclose(ours[0].numpy()[loud], ref[loud], atol=2e-3)


@pytest.mark.parametrize("kind, dim", [("logmel", 80), ("spectrogram", 257), ("mfcc", 40)])
def test_feature_kinds_shapes(kind, dim, an4_test_utts):
    wave = load_audio(an4_test_utts[1].audio)
    x, frames = FeatureExtractor(FeatureConfig(kind=kind))(wave[None], torch.tensor([wave.shape[0]]))
    assert x.shape == (1, (wave.shape[0] - 512) // 160 + 1, dim) == (1, frames.item(), dim)
    assert torch.isfinite(x).all()


def test_unknown_feature_kind():
    with pytest.raises(ValueError, match="logmel, fbank, spectrogram, mfcc"):
        FeatureConfig(kind="wavelets")


@pytest.mark.parametrize("utterance_mean", [False, True])
def test_padding_does_not_leak(an4_test_utts, utterance_mean):
    waves = [load_audio(u.audio) for u in an4_test_utts[:4]]
    padded, lengths = pad_waves(waves)
    extractor = FeatureExtractor(FeatureConfig(utterance_mean=utterance_mean), torch.randn(80), torch.rand(80) + 0.5)
    batch, frames = extractor(padded, lengths)
    for i, w in enumerate(waves):
        alone, n = extractor(w[None], torch.tensor([w.shape[0]]))
        assert frames[i] == n.item()
        torch.testing.assert_close(batch[i, :n], alone[0])
        assert (batch[i, n:] == 0).all()
        if utterance_mean:
            assert alone[0].mean(0).abs().max() < 1e-4


@pytest.mark.parametrize("kind", ["logmel", "fbank", "spectrogram", "mfcc"])
def test_a_mostly_padded_batch_input_by_input_gives_the_padded_batch_frames(kind, an4_test_utts, monkeypatch):
    """A batch of mixed lengths (less than PADDED_SHARE of it samples) is computed input by input; its
    valid frames are the one-call padded computation's (to float rounding: a 1-frame input's FFT batch
    rounds differently) and each input's alone, bit for bit."""
    import asr.features as features

    waves = [load_audio(u.audio)[:n] for u, n in zip(an4_test_utts, (48000, 6000, 12000, 400, 30000))]
    padded, lengths = pad_waves(waves)
    assert lengths.sum() < features.PADDED_SHARE * len(waves) * lengths.max()    # the per-input path
    extractor = FeatureExtractor(FeatureConfig(kind=kind))
    each, frames = extractor.raw(padded, lengths)
    monkeypatch.setattr(features, "PADDED_SHARE", 0.0)                           # one call over the padding
    whole, frames_whole = extractor.raw(padded, lengths)
    assert torch.equal(frames, frames_whole) and each.shape == whole.shape
    for i, w in enumerate(waves):
        alone, n = extractor.raw(w[None], torch.tensor([w.shape[0]]))
        torch.testing.assert_close(each[i, :frames[i]], whole[i, :frames[i]], rtol=1e-6, atol=1e-5)  # float rounding
        assert torch.equal(each[i, :frames[i]], alone[0]) and n.item() == frames[i]


@pytest.mark.parametrize("kind", ["fbank", "logmel"])
@pytest.mark.parametrize("n_mels", [80, 23])
def test_the_compiled_filterbank_step_gives_the_tensor_operations_features(kind, n_mels, an4_test_utts, monkeypatch):
    """The features' |spectrum|^2, mel product and floored log in one compiled pass (asr/spectrum.cpp, its nonzero
    terms only) equal the tensor operations' to float rounding: speech, silence at the log floor, mel counts that
    fill whole vectors and that leave a part, a batch padded from inputs of unequal lengths."""
    import asr.features
    from asr.native import compiled_spectrum
    if compiled_spectrum() is None:
        pytest.skip("the compiled code could not be built here")
    waves = [load_audio(u.audio) for u in an4_test_utts[:5]] + [torch.zeros(4000)]      # the last: silence
    cfg = FeatureConfig(kind=kind, n_mels=n_mels)
    extractor, (w, n) = FeatureExtractor(cfg), pad_waves(waves)
    calls = []
    real = compiled_spectrum()
    monkeypatch.setattr(asr.features, "compiled_spectrum", lambda: calls.append(1) or real)
    compiled, frames = extractor.raw(w, n)
    monkeypatch.setattr(asr.features, "compiled_spectrum", lambda: None)
    tensors, _ = extractor.raw(w, n)
    assert calls and compiled.shape == tensors.shape == (6, int(frames.max()), n_mels)
    valid = torch.arange(compiled.shape[1])[None] < frames[:, None]                       # (N, T)
    torch.testing.assert_close(compiled[valid], tensors[valid], atol=1e-5, rtol=1e-5)
    floor = math.log(KALDI_LOG_FLOOR if kind == "fbank" else LOG_FLOOR)
    assert torch.allclose(compiled[5, :frames[5]], torch.tensor(floor), atol=1e-6, rtol=0)  # silence: the floor


def test_stats_normalise_to_zero_mean_unit_variance(tmp_path, an4_test_utts):
    waves = [load_audio(u.audio) for u in an4_test_utts[:8]]
    cfg = FeatureConfig()
    batches = [pad_waves(waves[:4]), pad_waves(waves[4:])]
    mean, std, count = compute_stats(FeatureExtractor(cfg), batches)
    save_stats(tmp_path / "stats.json", cfg, mean, std, count)
    cfg2, mean2, std2 = load_stats(tmp_path / "stats.json")
    assert cfg2 == cfg and torch.allclose(mean, mean2) and torch.allclose(std, std2)
    x, frames = FeatureExtractor(cfg, mean2, std2)(*pad_waves(waves))
    valid = x[torch.arange(x.shape[1])[None] < frames[:, None]]    # (frames, 80)
    assert valid.shape[0] == count
    assert valid.mean(0).abs().max() < 1e-3 and (valid.std(0) - 1).abs().max() < 1e-2


def test_spec_augment_masks_and_is_seeded():
    x = torch.ones(3, 100, 80)
    frames = torch.tensor([100, 60, 30])
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width=0.1)
    a = spec_augment(x, frames, cfg, torch.Generator().manual_seed(1))
    b = spec_augment(x, frames, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    masked = (a == 0).float().mean()
    assert 0 < masked < 0.4
    # time masks stay inside each utterance: utterance 2 (30 frames) keeps its padding untouched
    assert (a[2, 30:] == 0).float().mean() < 0.3


def _kaldi_native_fbank(samples: np.ndarray) -> np.ndarray:
    """kaldi-native-fbank as sherpa-onnx runs it for NeMo CTC models (no dither, snip_edges false, Hann window,
    librosa's mel scale): the front end `kind: fbank` matches, frame for frame."""
    knf = pytest.importorskip("kaldi_native_fbank")
    o = knf.FbankOptions()
    o.frame_opts.samp_freq, o.frame_opts.dither, o.frame_opts.snip_edges = 16000, 0, False
    o.frame_opts.remove_dc_offset, o.frame_opts.window_type = False, "hann"
    o.mel_opts.num_bins, o.mel_opts.low_freq, o.mel_opts.high_freq, o.mel_opts.is_librosa = 80, 0, 0, True
    f = knf.OnlineFbank(o)
    f.accept_waveform(16000, samples.tolist())
    f.input_finished()
    return np.stack([f.get_frame(i) for i in range(f.num_frames_ready)]) if f.num_frames_ready else np.zeros((0, 80))


def test_fbank_is_sherpa_onnx_front_end_frame_for_frame(an4_test_utts):
    extractor = FeatureExtractor(FeatureConfig(kind="fbank"))
    wave = an4_test_utts[0].samples()
    cases = [wave[:n] for n in (1, 80, 81, 160, 239, 240, 401, 1000, 1601)] + [u.samples() for u in an4_test_utts[:5]]
    for w in cases:
        ours, n = extractor.raw(w[None], torch.tensor([w.shape[0]]))
        theirs = _kaldi_native_fbank(w.numpy())
        # at least one frame, as for every kind here (Kaldi gives none under half a hop)
        assert n.item() == max(theirs.shape[0], 1) == extractor.cfg.num_frames(w.shape[0]), w.shape
        if theirs.shape[0]:
            assert np.abs(ours[0, :n].numpy() - theirs).max() < 1e-3, w.shape
    batch, lengths = extractor.raw(*pad_waves(cases))                      # padded batch: each as alone
    for i, w in enumerate(cases):
        alone, m = extractor.raw(w[None], torch.tensor([w.shape[0]]))
        torch.testing.assert_close(batch[i, :lengths[i]], alone[0, :m[0]], atol=1e-4, rtol=0)
