"""Streaming latency: WER, word latency, endpoint latency and RTF of a model fed as if live (a unidirectional
model frame by frame, a bidirectional one re-decoded: asr.stream).

    asr bench stream --model M --manifest data/an4/test.jsonl --chunk-ms 100
"""
from __future__ import annotations

import time

import torch

from ..score import score
from ..stream import EndpointRules


def stream_latency(transcriber, utts, chunk_seconds: float = 0.1, tail: float = 2.0,
                   endpoints: EndpointRules | None = EndpointRules()) -> dict:
    """Stream each utterance in `chunk_seconds` pieces as if live, then `tail` seconds of silence. For every word
    of the final transcript, the latency from its end (CTC time) to the first partial that shows it (and all
    before it) as in the end; for every utterance, the endpoint latency from its last word's end to the final
    the endpoint rules emit (that end as an offline pass over the utterance alone places it: a bidirectional
    model re-decoding the utterance with the silence after it may place its last character late). Returns
    WER / CER of the final transcripts, word latency mean / median / p90 and endpoint latency mean / median
    (seconds), the utterances ended by the rules (`endpoints`; None: none), and the RTF."""
    sr = transcriber.sample_rate
    step = int(chunk_seconds * sr)
    latencies, waits, hyps, busy, audio, ended = [], [], [], 0.0, 0.0, 0
    for u in utts:
        wave = torch.cat([u.samples(sr), torch.zeros(int(tail * sr))])
        speech = u.samples(sr).shape[0]
        stream, partials, final_at = transcriber.stream(endpoints=endpoints), [], None
        started = time.perf_counter()
        for i in range(0, wave.shape[0], step):
            partial = stream.feed(wave[i:i + step])
            if i < speech:
                partials.append((min(i + step, wave.shape[0]) / sr, partial.text.split()))
            if partial.finals and final_at is None:
                final_at = min(i + step, wave.shape[0]) / sr
        final = stream.finish()
        busy += time.perf_counter() - started
        audio += wave.shape[0] / sr
        words = [w.text for w in final.words]
        for k, w in enumerate(final.words):
            shown = next((t for t, p in partials if p[:k + 1] == words[:k + 1]), speech / sr)
            latencies.append(shown - w.end)
        alone = transcriber.transcribe(u.samples(sr)).words if final_at is not None else ()
        if final_at is not None and alone:
            ended += 1
            waits.append(final_at - alone[-1].end)
        hyps.append(final.text)
    s = score([u.text for u in utts], hyps)
    lat = torch.tensor(latencies) if latencies else torch.zeros(1)
    ends = torch.tensor(waits) if waits else torch.full((1,), float("nan"))
    return {"wer": s.wer.rate, "cer": s.cer.rate, "words": len(latencies), "chunk_seconds": chunk_seconds,
            "latency_mean": lat.mean().item(), "latency_median": lat.median().item(),
            "latency_p90": lat.quantile(0.9).item(), "utterances": ended, "endpoint_mean": ends.mean().item(),
            "endpoint_median": ends.median().item(), "rtf": busy / max(audio, 1e-9)}


def format_latency(row: dict, utterances: int) -> str:
    """`stream_latency`'s row as the line `asr bench stream` prints."""
    return (f"{utterances} utterances streamed in {row['chunk_seconds'] * 1000:.0f} ms chunks: %WER {row['wer']:.2f} "
            f"%CER {row['cer']:.2f}; word latency (end of word -> shown) mean {row['latency_mean'] * 1000:.0f} ms, "
            f"median {row['latency_median'] * 1000:.0f} ms, p90 {row['latency_p90'] * 1000:.0f} ms; endpoint "
            f"(end of speech -> final) median {row['endpoint_median'] * 1000:.0f} ms, {row['utterances']} of "
            f"{utterances} ended by the rules; RTF {row['rtf']:.4f}")
