"""Reading audio: any soundfile format (NIST SPHERE, WAV, FLAC, OGG) -> mono float32 at 16 kHz."""
from __future__ import annotations

from math import gcd
from pathlib import Path
from typing import Union

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16_000  # every model in this package works at 16 kHz

AudioInput = Union[str, Path, np.ndarray, torch.Tensor]


class AudioError(ValueError):
    """Raised when an audio file cannot be used; the message names the file and the reason."""


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a file as it is stored: (samples, channels) float32 in [-1, 1], and its sample rate."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    try:
        samples, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (S, C)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioError(f"{path}: cannot decode audio ({e})") from e
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples")
    return samples, sr


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Band-limited resampling of (..., S) samples; a no-op when the rates agree."""
    if orig_sr == new_sr:
        return wave
    g = gcd(orig_sr, new_sr)
    return AF.resample(wave, orig_sr // g, new_sr // g)


def change_speed(waves: torch.Tensor, lengths: torch.Tensor, speed: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Play (N, S) zero-padded samples `speed` times faster (pitch and tempo, as in Ko et al. 2015).

    Band-limited resampling by the ratio speed : 1, on whatever device holds `waves`; returns the
    new (N, S') samples and (N,) lengths.
    """
    if speed == 1.0:
        return waves, lengths
    orig, new = round(speed * 100), 100
    g = gcd(orig, new)
    out = AF.resample(waves, orig // g, new // g)                      # (N, S')
    return out, torch.ceil(lengths * (new / orig)).long().clamp(max=out.shape[-1])


def load_audio(audio: AudioInput, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Return (S,) float32 mono samples at `sr`.

    A path is read with soundfile, downmixed by averaging channels and resampled; an array or
    tensor is taken to be mono (S,) samples already at `sr`.
    """
    if isinstance(audio, (str, Path)):
        samples, file_sr = read_audio(audio)
        wave = torch.from_numpy(samples.mean(axis=1))  # (S,)
        return resample(wave, file_sr, sr).contiguous()
    wave = torch.as_tensor(audio, dtype=torch.float32)
    if wave.dim() != 1:
        raise AudioError(f"in-memory audio must be mono (S,) samples, got shape {tuple(wave.shape)}")
    return wave


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header alone (no decoding)."""
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(f"{path}: cannot read audio header ({e})") from e
    return info.frames / info.samplerate
