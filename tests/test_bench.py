"""The training-throughput benchmark, on a tiny CPU setting (the GPU figures are in recipes/an4/RESULTS.md)."""
import json
import re

import pytest
import soundfile as sf

from asr.audio import load_audio
from asr.bench.train import GAP_SECONDS, build_long_utterances
from asr.cli import main as asr_main
from asr.corpora.an4 import read_split
from asr.native import bf16_instructions, compiled_loop


def test_long_utterances_are_real_audio_joined_within_the_length_range(an4_dir, tmp_path):
    sources = read_split(an4_dir, "train")
    utts = build_long_utterances(sources, 12, (10.0, 15.0), tmp_path)
    for u in utts:
        assert 10.0 <= u.duration <= 15.0 + min(s.duration for s in sources)
        wave, sr = sf.read(u.audio, dtype="float32")
        assert sr == 16000 and len(wave) / sr == pytest.approx(u.duration)
    # the first file is a source utterance, then GAP_SECONDS of silence, then more
    wave = load_audio(utts[0].audio).numpy()
    firsts = [load_audio(s.audio).numpy() for s in sources if utts[0].text.startswith(s.text + " ")]
    first = next(f for f in firsts if len(f) < len(wave) and abs(f - wave[:len(f)]).max() < 1e-4)
    assert abs(wave[len(first):len(first) + int(GAP_SECONDS * 16000)]).max() == 0


def test_bench_train_prints_and_writes_both_throughputs(tmp_path, an4_dir, capsys):
    out = tmp_path / "bench.json"
    asr_main(["bench", "train", "--batch-sizes", "2,3", "--steps", "2", "--warmup", "1", "--seconds", "2,4",
              "--corpus", str(an4_dir), "--out", str(out), "--workdir", str(tmp_path),
              "model.hidden=32", "model.conv_channels=32", "model.layers=2", "threads=1", "num_workers=1"])
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [r["batch_size"] for r in rows] == [2, 3]
    for r in rows:
        assert r["model_only"] > 0 and r["pipeline"] > 0 and r["peak_gib"] > 0
        assert r["ratio"] == pytest.approx(r["pipeline"] / r["model_only"])
        assert re.search(rf"^\s+{r['batch_size']}\s+{r['max_frames']}\s+{r['model_only']:.0f}\s+{r['pipeline']:.0f}\s+"
                         rf"{r['ratio']:.2f}", printed, re.M)
    assert "fastest pipeline: batch" in printed and "device cpu" in printed
    for r in rows:                               # the same steps with torch.nn's stack, and the stack alone
        assert r["model_only_torch_nn"] > 0
        stack = r["stack"]
        assert stack["train"] and stack["frames"] > 0 and stack["asr.rnn_gflops"] > 0 and stack["torch.nn_gflops"] > 0
        assert f"batch {r['batch_size']}: recurrent stack, forward + backward (training), 1 thread(s)" in printed
        assert f"{r['model_only'] / r['model_only_torch_nn']:.2f}x" in printed
    assert list(tmp_path.glob("tmp*")) == []                            # scratch audio removed
    # the rows name their model and device, so asr bench plan predicts from them alone
    assert rows[0]["model"]["hidden"] == 32 and rows[0]["device"] == "cpu" and rows[0]["parameters"] > 0
    asr_main(["bench", "plan", "--gpus", "1", "--train-hours", "1", "--throughput", str(out), "epochs=3",
              f"batch_frames={rows[1]['max_frames']}", "model.hidden=32", "model.conv_channels=32", "model.layers=2"])
    planned = capsys.readouterr().out
    assert f"per GPU {rows[1]['pipeline']:.0f} audio-s/s, from cpu" in planned   # its own model, a measured batch
    assert float(planned.splitlines()[-1].split()[-2]) == pytest.approx(3 / rows[1]["pipeline"], abs=0.01)  # run h


def test_bench_decode_prints_rtf_for_checkpoint_onnx_int8_and_lm_beam(an4_model, an4_test_utts, tmp_path, capsys):
    from asr.data import write_manifest
    from asr.lm import build_lm

    manifest = tmp_path / "test.jsonl"
    write_manifest(manifest, an4_test_utts[:12])
    build_lm([u.text for u in an4_test_utts], tmp_path / "lm")
    asr_main(["bench", "decode", "--model", str(an4_model), "--manifest", str(manifest), "--lm-dir",
              str(tmp_path / "lm"), "--thread-counts", "1,2", "--out", str(tmp_path / "rtf.json")])
    printed = capsys.readouterr().out
    rows = {(r["mode"], r["threads"]): r for r in json.loads((tmp_path / "rtf.json").read_text())}
    modes = {"greedy, checkpoint", "greedy, checkpoint, torch.nn stack", "greedy, ONNX", "greedy, ONNX int8",
             "greedy, TorchScript", "LM beam, checkpoint", "LM beam, ONNX"}  # no sherpa-onnx: a log-mel model
    modes |= {"greedy, checkpoint, bf16"} if bf16_instructions() else set()   # where the CPU has bf16 instructions
    stacks = {t: rows.pop(("recurrent stack", t)) for t in (1, 2)}
    assert set(rows) == {(m, t) for m in modes for t in (1, 2)}
    for t, r in stacks.items():                  # asr.rnn and torch.nn on the same inputs, beside a large product
        assert r["frames"] > 100 and r["gflop"] > 0 and not r["train"]
        assert r["peak_gflops"] == max(r["blas_peak_gflops"], r["onednn_peak_gflops"]) > 0   # either engine's
        assert re.search(r"float32 2048\^3 on the same threads: BLAS \d+, oneDNN \d+ GFLOP/s", printed)
        assert r["speedup"] == pytest.approx(r["torch.nn_seconds"] / r["asr.rnn_seconds"])
        assert f"recurrent stack, forward (decoding), {t} thread(s), {r['frames']} frames" in printed
        assert f"asr.rnn / torch.nn: {r['speedup']:.2f}x" in printed
        if compiled_loop().blas_bf16():          # and its products in bfloat16, beside a bfloat16 product's peak
            assert r["asr.rnn bf16_gflops"] > 0 and r["bf16_peak_gflops"] > 0
            assert re.search(r"^  asr\.rnn bf16 .* GFLOP/s \(\d+% of bfloat16\)$", printed, re.M)
    for r in rows.values():                      # the fixture scores 12.94 on all of AN4 test, 3.88 with an LM
        assert 0 < r["rtf"] < 1 and r["wer"] < (10 if "LM" in r["mode"] else 20) and r["search_x_realtime"] > 1
        assert re.search(rf"^{re.escape(r['mode'])}\s+{r['threads']}\s", printed, re.M)
    for t in (1, 2):
        assert rows[("greedy, ONNX", t)]["wer"] == rows[("greedy, checkpoint", t)]["wer"]
        assert rows[("greedy, TorchScript", t)]["wer"] == rows[("greedy, checkpoint", t)]["wer"]
        assert rows[("greedy, checkpoint, torch.nn stack", t)]["wer"] == rows[("greedy, checkpoint", t)]["wer"]
        if bf16_instructions():                        # rounded products: at most a word of the 12 files apart
            assert abs(rows[("greedy, checkpoint, bf16", t)]["wer"] - rows[("greedy, checkpoint", t)]["wer"]) < 2
    assert "12 utterances" in printed and "threads 1, 2" in printed


def test_bench_decode_puts_an_fbank_models_backends_beside_sherpa_onnx(an4_fbank_model, an4_test_utts, tmp_path,
                                                                        capsys):
    """An fbank model's export also runs in sherpa-onnx (the real one, its own features), and the bench prints
    the checkpoint's speed and the fastest row's as multiples of sherpa-onnx's."""
    from asr.data import write_manifest

    write_manifest(tmp_path / "test.jsonl", an4_test_utts[:8])
    asr_main(["bench", "decode", "--model", str(an4_fbank_model), "--manifest", str(tmp_path / "test.jsonl"),
              "--thread-counts", "1", "--out", str(tmp_path / "rtf.json")])
    printed = capsys.readouterr().out
    speed = {r["mode"].removeprefix("greedy, "): 1 / r["rtf"] for r in json.loads((tmp_path / "rtf.json").read_text())
             if r["mode"].startswith("greedy, ")}
    peer = speed.pop("sherpa-onnx")
    fastest = max(speed, key=speed.get)
    assert (f"against sherpa-onnx on the same export, 1 thread(s): checkpoint {speed['checkpoint'] / peer:.2f}x, "
            f"the fastest ({fastest}) {speed[fastest] / peer:.2f}x") in printed


def test_bench_peer_puts_pocketsphinx_beside_ours_on_the_same_test_set(an4_model, an4_test_utts, tmp_path, capsys):
    """`asr bench peer`: CMU's recogniser with its own English model (a real run, not a stand-in) and ours,
    the same references, both normalised alike."""
    from asr.bench.peer import Pocketsphinx
    from asr.data import write_manifest

    write_manifest(tmp_path / "an4_five.jsonl", an4_test_utts[:5])
    asr_main(["bench", "peer", "--model", str(an4_model), "--manifest", str(tmp_path / "an4_five.jsonl"),
              "--out", str(tmp_path / "rows.json")])
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["test"], r["system"]) for r in rows] == [("an4_five", "ours, greedy"), ("an4_five", Pocketsphinx.name)]
    assert all(r["utterances"] == 5 and r["rtf"] > 0 for r in rows)
    assert rows[0]["wer"] < rows[1]["wer"]                     # AN4's own model beats a general one on AN4
    said = [r.text for r in Pocketsphinx().transcribe([u.audio for u in an4_test_utts[:5]])]
    assert all(said) and all(t == t.lower() for t in said)      # real words, in its own lower case
    assert "pocketsphinx 5" in capsys.readouterr().out


def test_bench_soak_mixed_traffic_gets_only_the_expected_answers_and_memory_stays_flat(an4_model, an4_test_utts,
                                                                                     tmp_path, capsys):
    """`asr bench soak` in short form: a real `asr serve` under good and bad uploads, streams, wrong and missing
    keys and clients hanging up. Every answer is the one its kind expects (no 5xx), the server answers after,
    and its memory after the first window (warm-up) stays within a few tens of MB to the end."""
    from asr.bench.soak import EXPECTED
    from asr.data import write_manifest

    write_manifest(tmp_path / "m.jsonl", an4_test_utts[:8])
    asr_main(["bench", "soak", "--model", str(an4_model), "--manifest", str(tmp_path / "m.jsonl"),
              "--minutes", "0.5", "--clients", "4", "--windows", "3", "--out", str(tmp_path / "soak.json")])
    r = json.loads((tmp_path / "soak.json").read_text())
    assert r["alive"] and r["unexpected"] == 0 and r["server_errors"] == 0 and r["requests"] >= 30
    assert r["tracebacks"] == 0, r["log_tail"]
    answered = {kind: {int(s) for s in statuses} for kind, statuses in r["by_kind"].items() if statuses}
    assert {"good", "stream", "wrong_key", "not_audio", "hang_up"} <= set(answered)
    assert all(answered[k] <= EXPECTED[k] for k in answered)
    assert [w["window"] for w in r["windows"]] == [1, 2, 3] and all(w["requests"] for w in r["windows"])
    assert r["rss_end_mb"] - r["rss_after_warmup_mb"] < 60, r
    printed = capsys.readouterr().out
    assert f"{r['requests']} requests, 0 unexpected, 0 5xx" in printed and "answering after, 0 tracebacks" in printed
