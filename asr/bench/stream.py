"""Streaming latency: WER, word latency and RTF of a unidirectional model fed as if live.

    asr bench stream --model M --manifest data/an4/test.jsonl --chunk-ms 100
"""
from __future__ import annotations

import time

import torch

from ..score import score


def stream_latency(transcriber, utts, chunk_seconds: float = 0.1) -> dict:
    """Stream each utterance in `chunk_seconds` pieces as if live; for every word of the final transcript,
    the latency from its end (CTC time) to the first partial that shows it (and all before it) as in the
    end. Returns WER / CER of the final transcripts, latency mean / median / p90 (seconds) and the RTF."""
    sr = transcriber.sample_rate
    step = int(chunk_seconds * sr)
    latencies, hyps, busy, audio = [], [], 0.0, 0.0
    for u in utts:
        wave = u.samples(sr)
        stream, partials = transcriber.stream(), []
        started = time.perf_counter()
        for i in range(0, wave.shape[0], step):
            partials.append((min(i + step, wave.shape[0]) / sr, stream.feed(wave[i:i + step]).text.split()))
        final = stream.finish()
        busy += time.perf_counter() - started
        audio += wave.shape[0] / sr
        words = [w.text for w in final.words]
        for k, w in enumerate(final.words):
            shown = next((t for t, p in partials if p[:k + 1] == words[:k + 1]), final.duration)
            latencies.append(shown - w.end)
        hyps.append(final.text)
    s = score([u.text for u in utts], hyps)
    lat = torch.tensor(latencies) if latencies else torch.zeros(1)
    return {"wer": s.wer.rate, "cer": s.cer.rate, "words": len(latencies), "chunk_seconds": chunk_seconds,
            "latency_mean": lat.mean().item(), "latency_median": lat.median().item(),
            "latency_p90": lat.quantile(0.9).item(), "rtf": busy / max(audio, 1e-9)}


def format_latency(row: dict, utterances: int) -> str:
    """`stream_latency`'s row as the line `asr bench stream` prints."""
    return (f"{utterances} utterances streamed in {row['chunk_seconds'] * 1000:.0f} ms chunks: %WER {row['wer']:.2f} "
            f"%CER {row['cer']:.2f}; word latency (end of word -> shown) mean {row['latency_mean'] * 1000:.0f} ms, "
            f"median {row['latency_median'] * 1000:.0f} ms, p90 {row['latency_p90'] * 1000:.0f} ms; "
            f"RTF {row['rtf']:.4f}")
