"""Decoding speed: the real-time factor of transcription with every way of running a model, in one run.

    asr bench decode --model M --manifest data/an4/test.jsonl --decoding exp/decoding.json --thread-counts 1,2

`bench_decode_matrix` exports the checkpoint (ONNX fp32 and int8, TorchScript, and sherpa-onnx for an fbank
model), loads each on its backend, greedy and (with an LM) beam search, and times transcribing the manifest's
files at each thread count: RTF, times real time, the search alone, WER. The checkpoint also runs with torch.nn's
recurrent stack (asr.rnn off: the speed before it), and the stack alone is timed both ways against one large
sgemm on the same threads (asr.bench.rnn).
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..audio import SAMPLE_RATE, load_audio
from ..data import Utterance
from ..native import bf16_instructions
from .rnn import bench_stack, format_stack


class SherpaTranscriber:
    """sherpa-onnx's OfflineRecognizer behind the one method bench_decode needs (`transcribe(paths)`)."""

    def __init__(self, model_dir: str | Path, threads: int):
        from ..export import sherpa_recognizer

        self.recognizer = sherpa_recognizer(model_dir, threads)

    def transcribe(self, inputs) -> list:
        from ..export import sherpa_transcribe
        from ..transcripts import Transcript

        waves = [load_audio(a) for a in inputs]
        texts = sherpa_transcribe(self.recognizer, waves)
        return [Transcript(t, w.shape[0] / SAMPLE_RATE) for t, w in zip(texts, waves)]


ROUNDS = 3   # timed passes of each row after its warm-up, the fastest counting (one pass moved rows by a tenth)


def bench_decode(transcribers: dict, utts: list[Utterance], threads: int, log=print) -> list[dict]:
    """Real-time factor of transcribing `utts` (files to words) with each named transcriber (the fastest of ROUNDS
    passes), and its WER.

    For a Transcriber, the search alone is also timed on log-probs computed beforehand.
    """
    from ..decode import greedy_paths
    from ..score import score

    paths, refs = [u.input for u in utts], [u.text for u in utts]
    audio = sum(u.duration for u in utts)
    rows = []
    for name, t in transcribers.items():
        # warm-up: every file once, untimed. A first pass pays for the decoder's set-up and for the page faults of its
        # largest batches' tensors (glibc maps big allocations afresh until freeing one raises its threshold); 32
        # files were too few: the first row ran 1.15x slower than the same path in the second
        t.transcribe(paths)
        wall = math.inf
        for _ in range(ROUNDS):                   # the fastest of a few passes: the one least disturbed by the machine
            start = time.perf_counter()
            hyps = [r.text for r in t.transcribe(paths)]
            wall = min(wall, time.perf_counter() - start)
        row = {"mode": name, "threads": threads, "audio_seconds": audio, "seconds": wall, "rtf": wall / audio,
               "wer": score(refs, hyps).wer.rate, "search_x_realtime": None}
        if hasattr(t, "log_probs"):
            outputs = [t.log_probs([load_audio(p, t.sample_rate)]) for p in paths]
            lengths = torch.cat([n for _, n in outputs])                    # (N,)
            log_probs = torch.zeros(len(outputs), int(lengths.max()), outputs[0][0].shape[-1])  # (N, T', V)
            for i, (lp, n) in enumerate(outputs):
                log_probs[i, :n[0]] = lp[0, :n[0]]
            start = time.perf_counter()                                 # all at once: beam search in parallel
            t._beam(log_probs, lengths) if t._beam is not None else greedy_paths(log_probs, lengths)
            row["search_x_realtime"] = audio / (time.perf_counter() - start)
        rows.append(row)
        log(format_decode_row(row))
    return rows


DECODE_HEADER = f"{'mode':<30} {'threads':>7} {'RTF':>8} {'x real time':>12} {'search x RT':>12} {'%WER':>7}"


def format_decode_row(r: dict) -> str:
    search = f"{r['search_x_realtime']:>12.0f}" if r.get("search_x_realtime") else f"{'-':>12}"
    return (f"{r['mode']:<30} {r.get('threads', ''):>7} {r['rtf']:>8.4f} {1 / r['rtf']:>12.0f} {search} "
            f"{r['wer']:>7.2f}")


def bench_decode_matrix(model: str | Path, utts: list[Utterance], thread_counts: list[int], beam=None,
                        chunking=None, log=print) -> list[dict]:
    """`bench_decode` of the checkpoint `model` and its exports (ONNX, ONNX int8, TorchScript; sherpa-onnx for an
    fbank model), greedy, and with `beam` (DecodingOptions with method beam) on the checkpoint and ONNX, at each
    thread count (torch, onnxruntime and beam search alike)."""
    from ..checkpoint import read_checkpoint
    from ..decode import DecodingOptions
    from ..export import export_onnx, export_sherpa_onnx, export_torchscript
    from ..features import FeatureConfig
    from ..transcribe import ChunkingOptions, load_model

    greedy, chunking = DecodingOptions(), chunking or ChunkingOptions()
    fbank = FeatureConfig(**read_checkpoint(model)["feature_config"]).kind == "fbank"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {"ONNX": export_onnx(model, Path(tmp) / "model.onnx"),
                 "ONNX int8": export_onnx(model, Path(tmp) / "model_int8.onnx", int8=True),
                 "TorchScript": export_torchscript(model, Path(tmp) / "model.ts")}
        sherpa = export_sherpa_onnx(model, Path(tmp) / "sherpa") if fbank else None
        for threads in thread_counts:
            torch.set_num_threads(threads)          # ONNX sessions take torch's thread count when loaded
            load = lambda path, options: load_model(path, options=options, chunking=chunking)
            before = load(model, greedy)
            before.backend.model.fast_rnn = False
            before.backend.one_input_graph = False
            models = {"greedy, checkpoint": load(model, greedy), "greedy, checkpoint, torch.nn stack": before}
            if bf16_instructions():   # where the CPU has bf16 instructions (elsewhere bf16 is emulated, and slow)
                models["greedy, checkpoint, bf16"] = load_model(model, options=greedy, chunking=chunking,
                                                                precision="bf16")
            models.update({f"greedy, {name}": load(path, greedy) for name, path in files.items()})
            if sherpa is not None:
                models["greedy, sherpa-onnx"] = SherpaTranscriber(sherpa, threads)
            if beam is not None and beam.method == "beam":
                label, options = "LM beam" if beam.lm else "beam", replace(beam, threads=threads)
                models.update({f"{label}, checkpoint": load(model, options),
                               f"{label}, ONNX": load(files["ONNX"], options)})
            rows += bench_decode(models, utts, threads, log=log)
            rows.append(decode_stack(models["greedy, checkpoint"].backend, utts, threads))
            log(format_stack(rows[-1]))
    return rows


def against_sherpa(rows: list[dict], threads: int) -> str | None:
    """The greedy rows at `threads` as multiples of sherpa-onnx's speed on the same export: the checkpoint (what
    transcribe() and `asr serve` run) and the fastest of ours; None without a sherpa-onnx row (a log-mel model)."""
    speed = {r["mode"].removeprefix("greedy, "): 1 / r["rtf"] for r in rows
             if r["mode"].startswith("greedy, ") and r["threads"] == threads}
    if "sherpa-onnx" not in speed:
        return None
    peer = speed.pop("sherpa-onnx")
    fastest = max(speed, key=speed.get)
    return (f"against sherpa-onnx on the same export, {threads} thread(s): checkpoint "
            f"{speed['checkpoint'] / peer:.2f}x, the fastest ({fastest}) {speed[fastest] / peer:.2f}x")


@torch.no_grad()
def decode_stack(backend, utts: list[Utterance], threads: int) -> dict:
    """asr.rnn against torch.nn on the recurrent-stack inputs of `utts`, one file at a time as transcribe() runs."""
    batches = []
    for u in utts:
        wave = load_audio(u.input, backend.features.sample_rate)
        feats, frames = backend.extractor(wave[None], torch.tensor([wave.shape[0]]))
        x, lengths, _ = backend.model.front_end(feats, frames)
        batches.append((x, lengths))
    return {"mode": "recurrent stack", **bench_stack(backend.model.rnn, batches, False, threads)}
