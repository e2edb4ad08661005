"""Waveform augmentation for training: speed perturbation and additive noise on padded batches, on whatever
device holds them (asr.step applies them per TrainConfig)."""
from __future__ import annotations

from math import gcd

import torch
import torchaudio.functional as AF


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


def add_noise(waves: torch.Tensor, lengths: torch.Tensor, snr_db: tuple[float, float],
              generator: torch.Generator) -> torch.Tensor:
    """(N, S) zero-padded samples plus white noise at a signal-to-noise ratio drawn per utterance from
    `snr_db` (min, max); padding stays zero. Reproducible: every draw comes from `generator` (CPU)."""
    n, s = waves.shape
    snr = snr_db[0] + torch.rand(n, generator=generator) * (snr_db[1] - snr_db[0])          # (N,) dB
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    noise = torch.randn(n, s, device=waves.device, generator=torch.Generator(waves.device).manual_seed(seed))
    valid = torch.arange(s, device=waves.device)[None, :] < lengths[:, None].to(waves.device)  # (N, S)
    power = (waves.pow(2) * valid).sum(1) / lengths.to(waves.device).clamp(min=1)             # (N,)
    scale = (power / 10 ** (snr.to(waves.device) / 10)).sqrt()                                 # noise RMS
    return waves + noise * scale[:, None] * valid
