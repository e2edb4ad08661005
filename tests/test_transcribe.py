import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import soundfile as sf
import torch
from torch import nn

import asr
from asr.audio import AudioError, load_audio
from asr.native import bf16_instructions, compiled_loop
from asr.rnn import products


def test_batched_equals_one_by_one(overfit_model, an4_test_utts, five_utts):
    model = asr.load_model(overfit_model[0])
    paths = [u.audio for u in five_utts] + [u.audio for u in an4_test_utts[:40]]  # 0.7 s to 6 s
    batched = model.transcribe(paths)
    alone = [model.transcribe(p) for p in paths]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.path for r in batched] == paths
    assert any(r.text for r in batched[5:])      # the model does emit text on unseen audio


def test_transcribing_later_gives_transcribes_transcripts(an4_model, an4_test_utts):
    """transcribe_later (a server's model worker: the forward passes now, the decoding in another thread) gives
    transcribe's very Transcripts: inputs of mixed lengths in several batches, one input longer than chunk_seconds
    (cut first), files, with n-best alternatives; and the forward passes are done before decode() is called."""
    from asr.audio import load_audio

    model = asr.load_model(an4_model).with_options(nbest=3, method="beam", batch_seconds=8.0)
    waves = [load_audio(u.audio) for u in an4_test_utts[:9]]
    long = torch.cat(waves[:6] * 2)                                                  # ~40 s: cut at its pauses
    model.transcribe(waves[:2])
    model.transcribe(waves[:2])        # the one-input graph made (the second such call), as a server's would be
    calls, forward = [], model.backend.log_probs
    for audio in (waves, waves[:1], [waves[0], long, waves[1]], [u.audio for u in an4_test_utts[:3]]):
        want = model.transcribe(audio)
        model.backend.log_probs = lambda *a: calls.append(1) or forward(*a)
        try:
            decode = model.transcribe_later(audio)
            before = len(calls)
            got = decode()
            assert len(calls) == before > 0                                       # no forward pass in decode()
        finally:
            del model.backend.log_probs
        assert got == want
    assert len(want) == 3 and any(len(t.alternatives) > 1 for t in want)


@pytest.mark.parametrize("model", ["an4_fbank_model", "english-base"])   # the 1-D and the 2-D front end
def test_a_batch_decoded_in_pieces_has_the_whole_batchs_log_probs(model, an4_test_utts, request):
    """Eager decoding runs the features and convolutions of a batch PIECE_SECONDS of padded audio at a time and
    the recurrent stack over the whole batch: the same log-probs as the batch run whole, frame for frame."""
    from asr.backends.checkpoint import PIECE_SECONDS, _pieces
    from asr.data import pad_waves
    backend = asr.load_model(model if model == "english-base" else request.getfixturevalue(model)).backend
    utts = sorted(an4_test_utts[:40], key=lambda u: u.duration)
    waves, lengths = pad_waves([u.samples() for u in utts])                              # (40, S), 0.7 s to 6 s
    pieces = _pieces(lengths.tolist(), PIECE_SECONDS * 16000)
    assert len(pieces) >= 4 and pieces[0] == (0, pieces[0][1]) and pieces[-1][1] == 40
    assert all(b > a for a, b in pieces) and all(x[1] == y[0] for x, y in zip(pieces, pieces[1:]))
    with torch.no_grad():
        whole, n = backend.model(*backend.extractor(waves, lengths), pack=True)           # (40, T', V)
    split, n_split = backend.log_probs(waves, lengths)
    assert torch.equal(n, n_split) and split.shape == whole.shape
    valid = torch.arange(whole.shape[1])[None, :] < n[:, None]                            # (40, T')
    torch.testing.assert_close(split[valid], whole[valid], atol=1e-4, rtol=1e-4)
    assert not torch.equal(split[0, :n[0]], split[-1, :n[0]])                           # rows not mixed up


def test_a_live_model_is_evaluated_without_dropout_and_left_in_its_modes(an4_model, an4_test_utts):
    """Training scores dev through the live model's backend: the pass runs every module in eval mode (no dropout:
    the frozen model's log-probs) and leaves each module's own mode as it found it, training or not."""
    backend = asr.load_model(an4_model).backend
    wave = an4_test_utts[0].samples()[None]                                             # (1, S)
    lengths = torch.tensor([wave.shape[1]])
    want, _ = backend.log_probs(wave, lengths)                                          # all in eval mode
    backend.network.train()
    backend.model.output.eval()                                      # a module in its own mode: stays so
    modes = {name: m.training for name, m in backend.network.named_modules()}
    assert backend.model.dropout.training and not backend.model.output.training
    got, _ = backend.log_probs(wave, lengths)
    assert torch.equal(got, want)
    assert {name: m.training for name, m in backend.network.named_modules()} == modes


def test_array_and_file_inputs_agree(overfit_model, five_utts, tmp_path):
    model = asr.load_model(overfit_model[0])
    u = five_utts[0]
    wave = load_audio(u.audio)
    flac = tmp_path / "u.flac"
    sf.write(flac, wave.numpy(), 16000)
    assert model.transcribe(wave).text == model.transcribe(flac).text == u.text
    assert model.transcribe(wave.numpy()).path is None


def test_bad_audio_path_names_the_file(overfit_model, tmp_path):
    model = asr.load_model(overfit_model[0])
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        model.transcribe(tmp_path / "missing.wav")


def _asr(*args):
    return subprocess.run([sys.executable, "-m", "asr.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_transcribe_text_and_json(overfit_model, five_utts):
    paths = [u.audio for u in five_utts[:2]]
    out = _asr("transcribe", "--model", overfit_model[0], *paths)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{u.audio}\t{u.text}" for u in five_utts[:2]]
    out = _asr("transcribe", "--json", "--model", overfit_model[0], *paths)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == [u.text for u in five_utts[:2]]
    assert rows[0]["path"] == paths[0] and rows[0]["duration"] == pytest.approx(five_utts[0].duration, abs=0.01)


def test_bf16_precision_runs_the_largest_products_in_bfloat16_and_transcribes_as_fp32(an4_test_utts):
    """precision "bf16" (1.13-1.32x faster decoding than fp32 on a Xeon with AMX, 1.27-1.39x on an AMD EPYC with
    AVX-512 BF16): where the CPU has bfloat16 instructions the 1-D convolution's products and the recurrent
    stack's on bfloat16 operands (the stack's by MKL's product on AMX, else by the loops' own AVX-512 BF16 kernel),
    everything between them float32; the English base model transcribes 40 AN4 test files as in float32 (all 40
    alike on a Xeon, 39 on the EPYC, 2026-12-06), its probabilities within a few hundredths. Without bfloat16
    instructions it runs float32 as it is."""
    utts = an4_test_utts[:40]
    fp32, bf16 = asr.load_model("english-base"), asr.load_model("english-base", precision="bf16")
    model, ops = bf16.backend.model, compiled_loop()
    stack = bf16_instructions() and ops is not None and (ops.blas_bf16() or ops.bf16_pairs())
    assert products(model.rnn) == (torch.bfloat16 if stack else torch.float32)
    assert products(fp32.backend.model.rnn) == torch.float32
    rounded = [n for n, p in model.named_parameters() if p.dtype == torch.bfloat16]
    assert rounded == (["conv2.weight", "conv2.bias"] if bf16_instructions() else [])
    a, b = ([r.text for r in m.transcribe([u.audio for u in utts])] for m in (fp32, bf16))
    assert sum(x == y for x, y in zip(a, b)) >= 38, [(x, y) for x, y in zip(a, b) if x != y]
    waves = [u.samples() for u in utts[:8]]
    (la, n), (lb, nb) = fp32.log_probs(waves), bf16.log_probs(waves)                  # (8, T', V)
    assert lb.dtype == torch.float32 and torch.equal(n, nb)
    if rounded:
        assert 0 < (la.exp() - lb.exp()).abs().max() < 0.1                           # rounded, not unchanged
    else:
        assert torch.equal(la, lb) and a == b
    out = _asr("transcribe", "--precision", "bf16", "--model", "english-base", utts[0].audio)
    assert out.returncode == 0 and out.stdout == f"{utts[0].audio}\t{b[0]}\n", out.stderr


@pytest.mark.parametrize("cell,front_end,bidirectional,kind,utterance_mean", [
    ("gru", "conv2d", True, "fbank", False), ("lstm", "conv1d", True, "logmel", True),
    ("rnn", "conv2d", False, "mfcc", False), ("gru", "conv1d", False, "spectrogram", False)])
@pytest.mark.parametrize("onednn", [False, True])   # the products' engine (asr.native.onednn_products)
def test_inputs_one_by_one_run_as_one_traced_graph_with_the_modules_very_log_probs(
        cell, front_end, bidirectional, kind, utterance_mean, onednn, an4_test_utts, tmp_path, products_engine):
    """A loaded checkpoint on a CPU takes a single input (a file, a served request), or a batch of a few inputs
    that is mostly padding (a server's requests), one input at a time through one traced graph of its features and
    network with the compiled loops in it, whose log-probs are the module's for each input alone bit for bit at
    every length (it checks itself on several when made); inputs shorter than a frame's FFT, batches of like
    lengths or of more than ONE_BY_ONE_MAX inputs and a run's live modules run the module."""
    from asr.backends.checkpoint import ONE_BY_ONE_MAX, CheckpointBackend
    from asr.checkpoint import save_checkpoint
    from asr.data import pad_waves
    from asr.features import FeatureConfig, FeatureExtractor
    from asr.model import AcousticModel, ModelConfig
    from asr.tokens import Vocabulary

    products_engine(onednn)
    torch.manual_seed(0)
    features, vocab = FeatureConfig(kind=kind, utterance_mean=utterance_mean), Vocabulary()
    model = AcousticModel(ModelConfig(n_features=features.dim, vocab_size=len(vocab), cell=cell, front_end=front_end,
                                      bidirectional=bidirectional, lookahead=0 if bidirectional else 3, hidden=48,
                                      conv_channels=32, conv2d_channels=4, layers=2))
    extractor = FeatureExtractor(features, torch.randn(features.dim), torch.rand(features.dim) + 0.5)
    save_checkpoint(tmp_path / "m.pt", model, extractor, vocab)
    backend = asr.load_model(tmp_path / "m.pt").backend
    waves = [u.samples() for u in an4_test_utts[:3]] + [torch.randn(n) * 0.1 for n in (1, 511, 512, 16000 * 9 + 7)]
    calls = []
    alone = lambda w: backend.network(w[None], torch.tensor([w.shape[0]]))      # the module, eagerly: (1, T', V)

    def check(batch: list[torch.Tensor], module_runs: bool):
        calls.clear()
        got, got_n = backend.log_probs(*pad_waves(batch))
        assert len(calls) == (module_runs or compiled_loop() is None)
        for i, wave in enumerate(batch):
            want, want_n = alone(wave)
            if module_runs and len(batch) > 1:    # the module's batch: each input's own to float rounding
                assert torch.allclose(got[i:i + 1, :want.shape[1]], want, atol=1e-4) and got_n[i] == want_n[0]
            else:                                 # a graph's or the module's one input: bit for bit
                assert torch.equal(got[i:i + 1, :want.shape[1]], want) and got_n[i] == want_n[0]

    with torch.no_grad():
        for _ in range(2):                                                     # the graph made at the second
            backend.log_probs(waves[0][None], torch.tensor([waves[0].shape[0]]))
        backend.network.register_forward_hook(lambda *args: calls.append(1))     # the module's forward ran
        for wave in waves:
            check([wave], module_runs=wave.shape[0] < 512)
        check([waves[1], waves[-1]], module_runs=False)                        # mostly padding: one by one
        check([waves[-1]] + [waves[1]] * ONE_BY_ONE_MAX, module_runs=True)    # but not so many: the module
        check([waves[0], waves[0][:-900]], module_runs=True)                   # like lengths: the module
        want = alone(waves[0])[0]
        calls.clear()
        padded = nn.functional.pad(waves[0], (0, 800))[None]                   # (1, S + 800): its own samples
        assert torch.equal(backend.log_probs(padded, torch.tensor([waves[0].shape[0]]))[0], want)
        assert len(calls) == (compiled_loop() is None)
        with ThreadPoolExecutor(2) as pool:                                # two model threads share the graph
            results = list(pool.map(lambda w: backend.log_probs(w[None], torch.tensor([w.shape[0]])), waves * 2))
        for wave, (got, _) in zip(waves * 2, results):
            assert torch.equal(got, alone(wave)[0])
    assert (backend.__dict__["_graph"] is not None) == (compiled_loop() is not None)   # wherever the loops run
    live = CheckpointBackend(backend.model, backend.extractor, vocab)
    for _ in range(2):
        live.log_probs(waves[0][None], torch.tensor([waves[0].shape[0]]))
    assert "_graph" not in live.__dict__                               # its weights may change: never traced


def test_precision_is_checked_and_bf16_is_a_checkpoints(an4_fbank_model, tmp_path):
    """Each backend runs at its own `precisions` and refuses the others naming the file, the backend and what it
    runs at: bf16 is a checkpoint's; an exported model runs as it was exported."""
    from asr.export import export_onnx

    refused = r"english_base.pt: precision 'fp16' is not one this checkpoint model runs at \(fp32, bf16\)"
    with pytest.raises(ValueError, match=refused):
        asr.load_model("english-base", precision="fp16")
    onnx = export_onnx(an4_fbank_model, tmp_path / "model.onnx")
    with pytest.raises(ValueError, match=r"model.onnx: precision 'bf16' is not one this ONNX model runs at \(fp32\): "
                                         "it runs as exported"):
        asr.load_model(onnx, precision="bf16")
    out = _asr("transcribe", "--precision", "fp16", "--model", "english-base", "x.wav")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "precision 'fp16' is not one this checkpoint model runs at (fp32, bf16)" in out.stderr


def test_cli_bad_file_exits_nonzero_naming_it(overfit_model, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....garbage")
    out = _asr("transcribe", "--model", overfit_model[0], bad)
    assert out.returncode != 0 and "broken.wav" in out.stderr and "Traceback" not in out.stderr


def test_two_minutes_of_test_speech_score_as_its_utterances_do(an4_model, an4_test_utts):
    """AN4 test utterances joined by short silences into a 2-minute file: cut at its pauses, it is
    transcribed as well as the same utterances one by one (within a point of WER)."""
    import random

    import torch

    from asr.audio import load_audio
    from asr.score import score

    rng = random.Random(0)
    pieces, chosen, seconds = [], [], 0.0
    for u in an4_test_utts:
        wave, gap = load_audio(u.audio), torch.zeros(int(rng.uniform(0.3, 0.6) * 16000))
        pieces += [wave, gap]
        chosen.append(u)
        seconds += (wave.shape[0] + gap.shape[0]) / 16000
        if seconds >= 120:
            break
    model = asr.load_model(an4_model)
    refs = [u.text for u in chosen]
    per_utt = score(refs, [r.text for r in model.transcribe([u.audio for u in chosen])])
    long = model.with_options(chunk_seconds=20.0).transcribe(torch.cat(pieces))
    joined = score([" ".join(refs)], [long.text])
    assert long.duration >= 120
    assert abs(joined.wer.rate - per_utt.wer.rate) <= 1.0, (joined.summary(), per_utt.summary())
    assert per_utt.wer.rate < 20                                          # a model that transcribes AN4
    starts = [w.start for w in long.words]
    assert starts == sorted(starts) and long.words[-1].end <= long.duration + 0.05


def test_overlapping_chunks_join_into_the_frames_of_one_pass(an4_model, an4_test_utts):
    """40 s of speech in 10 s windows with 2 s of context each side (the window path, below the pause cutting):
    the joined frames are as many as one pass gives, and against the references the seams add no
    duplicated or dropped words (WER, insertions and deletions as one pass's, within one)."""
    import torch

    from asr.audio import load_audio
    from asr.decode import greedy_decode
    from asr.score import score

    model = asr.load_model(an4_model).with_options(chunk_seconds=10.0, chunk_overlap=2.0)
    waves, refs, seconds = [], [], 0.0
    for u in an4_test_utts:
        w = load_audio(u.audio)
        waves.append(w)
        refs.append(u.text)
        seconds += w.shape[0] / 16000
        if seconds > 40:
            break
    wave = torch.cat(waves)
    one_pass, n = model._forward([wave])                                 # (1, T', V)
    chunked, m = model.log_probs([wave])                                 # via 10 s windows
    assert torch.equal(n, m)
    agree = (one_pass.argmax(-1) == chunked.argmax(-1)).float().mean().item()
    assert agree > 0.97, agree
    ref = " ".join(refs)
    whole = score([ref], greedy_decode(one_pass, n, model.vocab)).wer
    joined = score([ref], greedy_decode(chunked, m, model.vocab)).wer
    assert abs(joined.rate - whole.rate) <= 1.5, (whole, joined)
    assert joined.ins <= whole.ins + 1 and joined.dels <= whole.dels + 1, (whole, joined)


LONG_FILE_PROBE = """
import json, resource, sys
import asr
model = asr.load_model(sys.argv[1]).with_options(window_seconds=60.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = model.transcribe(sys.argv[2])
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
whole = model.with_options(window_seconds=1e6).transcribe(sys.argv[2])       # after: read at once, decoded the same
print(json.dumps({"grew_mb": grew, "duration": t.duration, "words": [[w.text, w.start, w.end] for w in t.words],
                  "whole": [[w.text, w.start, w.end] for w in whole.words]}))
"""


def test_a_long_file_is_transcribed_a_window_at_a_time(an4_model, an4_test_utts, tmp_path):
    """12 minutes of 48 kHz stereo FLAC (553 MB as float samples, 660 kB on disk: silence with three AN4 test
    utterances in it, one across a window's edge) through transcribe() in 60 s windows: the process grows by far
    less than the file's samples, the words are those of the file read whole, at
    the same times within 0.1 s (the pieces start a few samples apart: VAD's 32 ms steps fall elsewhere, and a
    letter's one peaked frame may move), and each utterance's
    words are found at its place."""
    import numpy as np

    rate, minutes = 48000, 12
    utts = an4_test_utts[:3]
    places = [100, 359.5, 700]                     # seconds; the second across the edge at 360 s
    waves = [load_audio(u.audio, rate).numpy() for u in utts]
    path = tmp_path / "meeting.flac"
    with sf.SoundFile(path, "w", rate, 2, format="FLAC") as f:   # written a block at a time
        for s in range(0, minutes * 60, 10):
            block = np.zeros((10 * rate, 2), np.float32)
            for p, w in zip(places, waves):
                a, b = max(int(p * rate), s * rate), min(int(p * rate) + len(w), (s + 10) * rate)
                if a < b:
                    block[a - s * rate:b - s * rate] = w[a - int(p * rate):b - int(p * rate), None]
            f.write(block)
    out = subprocess.run([sys.executable, "-c", LONG_FILE_PROBE, str(an4_model), str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["duration"] == minutes * 60
    assert result["grew_mb"] < 300, result["grew_mb"]        # the whole file read at once: > 700 MB
    assert [x for x, _, _ in result["words"]] == [x for x, _, _ in result["whole"]]
    assert all(abs(a - b) < 0.1 for (_, *x), (_, *y) in zip(result["words"], result["whole"]) for a, b in zip(x, y))
    for p, w, u in zip(places, waves, utts):
        inside = [x for x, start, end in result["words"] if p - 0.2 <= start and end <= p + len(w) / rate + 0.2]
        assert len(inside) >= len(u.text.split()) - 1, (p, inside, u.text)
    assert len(result["words"]) <= sum(len(u.text.split()) for u in utts) + 2
