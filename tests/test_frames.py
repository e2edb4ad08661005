"""Frame arithmetic has one source (FeatureConfig.num_frames, ModelConfig.output_frames): with the feature
hop and the model's time stride changed, validation, training's CTC lengths, decoding times, chunking
and streaming all count the same frames."""
import pytest
import torch

from asr.backends.checkpoint import CheckpointBackend
from asr.config import TrainConfig
from asr.data import Utterance, collate, write_manifest
from asr.decode import TokenPath, words_of
from asr.features import FeatureConfig, FeatureExtractor
from asr.model import AcousticModel, ModelConfig
from asr.tokens import Vocabulary
from asr.transcribe import Transcriber
from asr.validate import Checker

# (hop_length, time_stride): the default 10 ms x 2, then 8 ms x 3 and 15 ms x 1
FRAMINGS = [(160, 2), (128, 3), (240, 1)]


def _setup(hop: int, stride: int, lookahead: int = 2):
    torch.manual_seed(0)
    features = FeatureConfig(hop_length=hop)
    model = AcousticModel(ModelConfig(n_features=features.dim, time_stride=stride, bidirectional=False,
                                      lookahead=lookahead, hidden=32, conv_channels=32, layers=1, dropout=0.0)).eval()
    return features, model, FeatureExtractor(features)


def _lengths(features: FeatureConfig) -> list[int]:
    """Sample counts at the edges of the framing: below, at and just past one window, around a hop."""
    n, h = features.n_fft, features.hop_length
    return [1, n - 1, n, n + 1, n + h - 1, n + h, n + 5 * h + 7, 16000, 16001]


@pytest.mark.parametrize("hop,stride", FRAMINGS)
def test_validation_forward_pass_and_backend_count_the_same_frames(hop, stride):
    features, model, extractor = _setup(hop, stride)
    backend = CheckpointBackend(model, extractor, Vocabulary())
    checker = Checker(features=features, model=model.cfg)
    assert backend.frame_seconds == pytest.approx(hop * stride / features.sample_rate)
    waves = [torch.randn(n) * 0.1 for n in _lengths(features)]
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor([w.shape[0] for w in waves])
    log_probs, out_lengths = backend.log_probs(padded, lengths)               # one padded batch
    for w, n in zip(waves, out_lengths.tolist()):
        alone, m = backend.log_probs(w[None], torch.tensor([w.shape[0]]))
        assert m.item() == n == alone.shape[1] == backend.output_frames(w.shape[0])
        assert checker.output_frames(w.shape[0] / features.sample_rate) == n   # what prepare and train check
    assert log_probs.shape[1] == out_lengths.max()


@pytest.mark.parametrize("hop,stride", FRAMINGS)
def test_ctc_accepts_exactly_what_validation_accepts(hop, stride, five_utts):
    """Training's CTC loss is finite for the longest transcript validation lets through and infinite for
    one character more, which validation rejects: the two count the same frames."""
    features, model, extractor = _setup(hop, stride)
    checker = Checker(features=features, model=model.cfg)
    u = five_utts[0]
    frames = checker.output_frames(u.duration)
    for chars, ok in ((frames, True), (frames + 1, False)):
        text = ("AB" * chars)[:chars]                                         # no repeats: one frame each
        utt = Utterance(u.id, u.audio, u.duration, text)
        assert (checker.check_text(utt) == []) == ok
        batch = collate([(u.samples(), torch.tensor(Vocabulary().encode(text)), utt)])
        loss = _ctc_loss(model, extractor, batch)
        assert torch.isfinite(loss).item() == ok, (chars, frames, loss)


def _ctc_loss(model, extractor, batch) -> torch.Tensor:
    feats, frames = extractor(batch.waves, batch.lengths)
    log_probs, out_lengths = model(feats, frames)
    return torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), batch.targets, out_lengths,
                                        batch.target_lengths, reduction="sum", zero_infinity=False)


@pytest.mark.parametrize("hop,stride", FRAMINGS)
def test_word_times_chunking_and_streaming_follow_the_framing(hop, stride, an4_test_utts):
    features, model, extractor = _setup(hop, stride)
    t = Transcriber(CheckpointBackend(model, extractor, Vocabulary()))
    # a word emitted at output frame k starts k frames of hop x stride samples in
    path = TokenPath([3, 4, 1, 5], [5, 7, 8, 9])                              # "AB C"
    words = words_of(path, torch.zeros(12, len(Vocabulary())), Vocabulary(), t.frame_seconds)
    frame = hop * stride / 16000
    assert [w.text for w in words] == ["AB", "C"]
    assert (words[0].start, words[0].end, words[1].start) == pytest.approx((5 * frame, 8 * frame, 9 * frame))
    wave = torch.cat([u.samples() for u in an4_test_utts[:4]])                # ~10 s of speech
    one, n = t._forward([wave])
    assert n.item() * t.frame_seconds == pytest.approx(wave.shape[0] / 16000, abs=t.frame_seconds + 512 / 16000)
    chunked, m = t.with_options(chunk_seconds=3.0, chunk_overlap=0.5).log_probs([wave])
    assert m.item() == n.item()                                               # chunks join into one pass's frames
    stream, got = t.stream(), []
    for i in range(0, wave.shape[0], 1111):
        got.append(stream.feed(wave[i:i + 1111]).frames)
    stream.finish()
    assert stream.log_probs.shape[0] == n.item() and got == sorted(got)
    torch.testing.assert_close(stream.log_probs, one[0, :n[0]], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_training_with_another_framing_makes_a_model_that_says_so(five_utts, tmp_path):
    """One epoch at an 8 ms hop and stride 3: prepare's checks, training and the saved model agree on it."""
    import asr
    from asr.cli import main as asr_main
    from asr.train import train

    manifest, stats = tmp_path / "five.jsonl", tmp_path / "stats.json"
    write_manifest(manifest, five_utts)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(stats), "features.hop_length=128"])
    cfg = TrainConfig(exp_dir=str(tmp_path), train_manifest=str(manifest), dev_manifest=str(manifest),
                      stats=str(stats), epochs=1, threads=1, features=FeatureConfig(hop_length=128),
                      model=ModelConfig(time_stride=3, hidden=32, conv_channels=32, layers=1))
    train(cfg)
    model = asr.load_model(tmp_path / "best.pt")
    assert model.frame_seconds == pytest.approx(128 * 3 / 16000)
    wave = five_utts[0].samples()
    _, n = model.log_probs([wave])
    assert n.item() == Checker.for_config(cfg).output_frames(wave.shape[0] / 16000)
