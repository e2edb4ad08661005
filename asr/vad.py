"""Voice activity detection: where the speech is, by silero-vad (a small network made for this; its PyPI wheel
ships the model), so that long audio is cut at speech boundaries and non-speech (silence, music, noise) is
not decoded at all.

    spans = speech_spans(wave)             # (S,) float32 at 16 kHz -> [(start, end), ...] in samples
    regions = speech_regions(wave)         # ... joined across pauses shorter than 2 s: what to decode

Used by asr.transcribe for inputs longer than ChunkingOptions.chunk_seconds (ChunkingOptions.vad). The model is
loaded once a process (a TorchScript file, about 2 MB, on the CPU) and is not thread-safe: calls take a lock.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from .audio import SAMPLE_RATE


@dataclass(frozen=True)
class VadOptions:
    """silero-vad's settings as asr uses them (its own defaults but for the padding and the pause joined)."""
    threshold: float = 0.5          # speech probability above which a 32 ms window is speech
    min_speech: float = 0.25        # seconds: shorter bursts are not speech
    min_silence: float = 0.3        # seconds: shorter pauses stay inside a span (asr's min_pause)
    pad: float = 0.1                # seconds of context kept on each side of a span (AN4 long file: 0.03 cut words,
    #                                 0.2 let the model hear letters in the noise beside them)


_model = None
_lock = threading.Lock()


def _silero():
    global _model
    if _model is None:
        from silero_vad import load_silero_vad

        _model = load_silero_vad()
    return _model


def speech_spans(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE,
                 options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """(start, end) sample spans of `wave`'s speech, padded and never overlapping; [] when it holds none."""
    from silero_vad import get_speech_timestamps

    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"speech_spans takes {SAMPLE_RATE} Hz audio, not {sample_rate} Hz")
    with _lock, torch.inference_mode():
        found = get_speech_timestamps(wave.float().contiguous(), _silero(), threshold=options.threshold,
                                      sampling_rate=sample_rate, min_speech_duration_ms=int(options.min_speech * 1000),
                                      min_silence_duration_ms=int(options.min_silence * 1000),
                                      speech_pad_ms=int(options.pad * 1000))
        _silero().reset_states()
    spans: list[tuple[int, int]] = []
    for s in found:
        start, end = max(0, int(s["start"])), min(wave.shape[0], int(s["end"]))
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        elif end > start:
            spans.append((start, end))
    return spans


def speech_regions(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, min_gap: float = 2.0,
                   options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """speech_spans joined where the non-speech between them is shorter than `min_gap` seconds: the stretches
    worth decoding, the long silences, music and noise between them left out. Shorter pauses stay inside (a
    model hears the silence around an utterance as in training: cutting each pause to `pad` cost AN4 two
    points of WER on a file of utterances 0.3-0.6 s apart, recipes/an4/RESULTS.md)."""
    regions: list[tuple[int, int]] = []
    for start, end in speech_spans(wave, sample_rate, options):
        if regions and start - regions[-1][1] < min_gap * sample_rate:
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    return regions
