"""Exports (ONNX fp32 / int8 through onnxruntime, TorchScript, sherpa-onnx) of real trained models: the
checkpoint's log-probs and transcripts at every input length, batched as one by one, streaming too."""
import warnings

import pytest
import torch

import asr
from asr.backends.torchscript import is_exported
from asr.checkpoint import save_checkpoint
from asr.cli import main as asr_main
from asr.decode import DecodingOptions
from asr.features import FeatureConfig, FeatureExtractor
from asr.lm import build_lm
from asr.model import AcousticModel, ModelConfig
from asr.score import score
from asr.tokens import Vocabulary

# empty, shorter than one window, one frame, one second, ten seconds
LENGTHS = [0, 1, 100, 399, 511, 512, 513, 16000, 160000]


@pytest.fixture(autouse=True)
def _quiet_tracer():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # the tracer's warnings about shapes it keeps dynamic
        yield


@pytest.fixture(scope="module")
def an4_exports(an4_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    for name, args in (("model.onnx", []), ("int8.onnx", ["--int8"]), ("model.ts", []), ("int8.ts", ["--int8"])):
        asr_main(["export", "--model", str(an4_model), "--out", str(out / name), *args])
    return out


def _max_diff(a, an, b, bn) -> float:
    assert torch.equal(an, bn) and a.shape == b.shape
    return max((a[i, :n] - b[i, :n]).abs().max().item() for i, n in enumerate(an.tolist()))


@pytest.mark.parametrize("name", ["model.onnx", "model.ts"])
def test_export_gives_the_checkpoints_log_probs_at_every_length(an4_model, an4_exports, name):
    eager, other = asr.load_model(an4_model), asr.load_model(an4_exports / name)
    assert type(other.backend).__name__ == ("OnnxBackend" if name.endswith(".onnx") else "TorchScriptBackend")
    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(n, generator=g) * 0.1 for n in LENGTHS]
    for w in waves:                                               # one by one
        assert _max_diff(*eager._forward([w]), *other._forward([w])) < 1e-4
    assert _max_diff(*eager._forward(waves), *other._forward(waves)) < 1e-4          # one padded batch
    alone = [other._forward([w]) for w in waves]
    batch, lengths = other._forward(waves)
    for i, (lp, n) in enumerate(alone):                            # the export's batch is its inputs alone
        assert lengths[i] == n[0] and (batch[i, :n[0]] - lp[0, :n[0]]).abs().max() < 1e-5


def test_onnx_transcribes_an4_test_as_the_checkpoint_and_ten_minutes_too(an4_model, an4_exports, an4_test_utts):
    eager, onnx = asr.load_model(an4_model), asr.load_model(an4_exports / "model.onnx")
    paths = [u.audio for u in an4_test_utts]
    expected = [r.text for r in eager.transcribe(paths)]
    assert [r.text for r in onnx.transcribe(paths)] == expected                    # batched
    assert [onnx.transcribe(p).text for p in paths[:20]] == expected[:20]          # one by one
    ten_minutes = torch.cat([u.samples() for u in an4_test_utts] * 3)[:9_600_000]
    assert ten_minutes.shape[0] == 9_600_000
    one = eager.with_options(chunk_seconds=700.0)                                  # one forward pass each
    whole = onnx.with_options(chunk_seconds=700.0)._forward([ten_minutes])
    assert _max_diff(*one._forward([ten_minutes]), *whole) < 1e-4
    assert onnx.transcribe(ten_minutes).text == eager.transcribe(ten_minutes).text  # cut at pauses, chunked


def test_int8_is_smaller_and_close_in_wer_on_an4_test(an4_model, an4_exports, an4_test_utts):
    refs, paths = [u.text for u in an4_test_utts], [u.audio for u in an4_test_utts]
    wer = lambda m: score(refs, [r.text for r in asr.load_model(m).transcribe(paths)]).wer.rate
    checkpoint = wer(an4_model)
    assert checkpoint < 20
    # onnxruntime has no int8 GRU: its int8 file quantises the output layer only (PyTorch's dynamic
    # quantisation, behind the TorchScript export, does quantise the GRU)
    for fp32, int8, smaller, bar in (("model.onnx", "int8.onnx", 1.0, 0.5), ("model.ts", "int8.ts", 0.6, 1.0)):
        assert (an4_exports / int8).stat().st_size < smaller * (an4_exports / fp32).stat().st_size
        assert abs(wer(an4_exports / int8) - checkpoint) <= bar, int8
    assert is_exported(an4_exports / "model.ts") and not is_exported(an4_model)


def test_onnx_gives_the_checkpoints_words_times_and_lm_beam_search(an4_model, an4_exports, an4_test_utts,
                                                                  tmp_path):
    paths = [u.audio for u in an4_test_utts[:12]]
    build_lm([u.text for u in an4_test_utts], tmp_path)
    beam = DecodingOptions(method="beam", lm=str(tmp_path / "lm.arpa"), lexicon=str(tmp_path / "lexicon.txt"))
    for options in (DecodingOptions(), beam):
        eager = asr.load_model(an4_model, options=options).transcribe(paths)
        onnx = asr.load_model(an4_exports / "model.onnx", options=options).transcribe(paths)
        assert [r.text for r in onnx] == [r.text for r in eager]
        for a, b in zip(onnx, eager):
            assert [(w.text, w.start, w.end) for w in a.words] == [(w.text, w.start, w.end) for w in b.words]
            assert all(abs(x.confidence - y.confidence) < 1e-3 for x, y in zip(a.words, b.words))
    assert sum(len(r.words) for r in onnx) > 20


def test_int8_onnx_quantises_lstm_cells_and_keeps_their_outputs(tmp_path, an4_test_utts):
    import onnx

    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(cell="lstm", hidden=160, conv_channels=160, layers=2, dropout=0.0)).eval()
    save_checkpoint(tmp_path / "lstm.pt", model, FeatureExtractor(FeatureConfig()), Vocabulary())
    for name, args in (("fp32.onnx", []), ("int8.onnx", ["--int8"])):
        asr_main(["export", "--model", str(tmp_path / "lstm.pt"), "--out", str(tmp_path / name), *args])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "LSTM" not in ops
    assert (tmp_path / "int8.onnx").stat().st_size < 0.6 * (tmp_path / "fp32.onnx").stat().st_size
    fp32, int8 = asr.load_model(tmp_path / "fp32.onnx"), asr.load_model(tmp_path / "int8.onnx")
    a, n = fp32._forward([u.samples() for u in an4_test_utts[:4]])
    b, m = int8._forward([u.samples() for u in an4_test_utts[:4]])
    assert torch.equal(n, m) and (a - b).abs().max() < 0.1


@pytest.mark.parametrize("cell, front_end", [("gru", "conv1d"), ("lstm", "conv1d"), ("rnn", "conv1d"),
                                             ("gru", "conv2d")])
def test_exported_unidirectional_models_stream_their_offline_frames(cell, front_end, tmp_path, an4_test_utts):
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(cell=cell, bidirectional=False, lookahead=2, hidden=48, conv_channels=48,
                                      layers=2, dropout=0.0, front_end=front_end, conv2d_channels=8)).eval()
    extractor = FeatureExtractor(FeatureConfig(kind="fbank" if cell == "lstm" else "logmel"),
                                 torch.randn(80), torch.rand(80) + 0.5)
    save_checkpoint(tmp_path / "uni.pt", model, extractor, Vocabulary())
    for name in ("uni.onnx", "uni.ts"):
        asr_main(["export", "--model", str(tmp_path / "uni.pt"), "--out", str(tmp_path / name)])
        exported = asr.load_model(tmp_path / name)
        for u, chunk in zip(an4_test_utts[:2], (777, 3200)):
            wave = u.samples()
            offline, n = asr.load_model(tmp_path / "uni.pt")._forward([wave])
            stream = exported.stream()
            for i in range(0, wave.shape[0], chunk):
                stream.feed(wave[i:i + chunk])
            stream.finish()
            assert stream.log_probs.shape[0] == n.item()
            torch.testing.assert_close(stream.log_probs, offline[0, :n[0]], atol=1e-4, rtol=1e-4)


def test_a_bidirectional_export_streams_by_redecoding_only(an4_exports):
    model = asr.load_model(an4_exports / "model.onnx")
    with pytest.raises(ValueError, match="unidirectional"):
        model.stream(mode="frames")
    assert model.stream().mode == "redecode"


def test_sherpa_onnx_export_needs_fbank_features(an4_model, tmp_path):
    with pytest.raises(SystemExit, match="features.kind=fbank"):
        asr_main(["export", "--model", str(an4_model), "--format", "sherpa-onnx", "--out", str(tmp_path / "s")])


def test_sherpa_onnx_decodes_an4_test_with_its_own_features_as_we_do(an4_fbank_model, an4_test_utts, tmp_path):
    from asr.export import sherpa_recognizer, sherpa_transcribe

    asr_main(["export", "--model", str(an4_fbank_model), "--format", "sherpa-onnx", "--out", str(tmp_path / "s")])
    tokens = (tmp_path / "s" / "tokens.txt").read_text().splitlines()
    assert tokens[0] == "<blk> 0" and "\u2581 1" in tokens
    refs = [u.text for u in an4_test_utts]
    ours = [r.text for r in asr.load_model(an4_fbank_model).transcribe([u.audio for u in an4_test_utts])]
    recognizer = sherpa_recognizer(tmp_path / "s")
    waves = [u.samples() for u in an4_test_utts]
    theirs = sherpa_transcribe(recognizer, waves)                          # one batch of streams
    assert sherpa_transcribe(recognizer, waves[:5]) == [sherpa_transcribe(recognizer, [w])[0] for w in waves[:5]]
    ours_wer, theirs_wer = score(refs, ours).wer.rate, score(refs, theirs).wer.rate
    assert ours_wer < 20 and abs(theirs_wer - ours_wer) <= 0.5, (ours_wer, theirs_wer)
    assert sum(a == b for a, b in zip(ours, theirs)) >= 120                 # nearly every transcript the same
