"""Audio -> features: log-mel (default), log linear spectrogram or MFCC; global normalisation; SpecAugment.

Features are computed in batches on whatever device holds the waveform (the GPU when training
there). Frames use only samples inside the utterance (no centre padding), so a padded batch
gives every utterance exactly the frames it gets alone, and audio that arrives in pieces
(`FeatureExtractor.step`, for streaming) gets the frames of the whole: frame i reads samples
[i * hop_length, i * hop_length + n_fft). Every frame count and rate derives from FeatureConfig.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchaudio
from torch import nn

from .audio import SAMPLE_RATE

N_FFT = 512          # next power of two above the 25 ms window
WIN_LENGTH = 400     # 25 ms at 16 kHz
HOP_LENGTH = 160     # 10 ms at 16 kHz
LOG_FLOOR = 1e-10    # power below this is silence; keeps log finite


@dataclass(frozen=True)
class FeatureConfig:
    kind: str = "logmel"        # logmel | spectrogram | mfcc
    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    win_length: int = WIN_LENGTH
    hop_length: int = HOP_LENGTH
    n_mels: int = 80
    n_mfcc: int = 40
    f_min: float = 0.0
    f_max: float | None = None  # None: Nyquist
    utterance_mean: bool = False  # also subtract each utterance's own mean (removes channel / speaker offsets)

    def __post_init__(self):
        if self.kind not in ("logmel", "spectrogram", "mfcc"):
            raise ValueError(f"feature kind must be logmel, spectrogram or mfcc, not {self.kind!r}")

    @property
    def dim(self) -> int:
        return {"logmel": self.n_mels, "spectrogram": self.n_fft // 2 + 1, "mfcc": self.n_mfcc}[self.kind]

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples):
        """Frames for utterances of `num_samples` samples (an int or a tensor of them); at least one
        (input shorter than n_fft is zero-padded to it)."""
        frames = (num_samples - self.n_fft) // self.hop_length + 1
        return torch.clamp(frames, min=1) if isinstance(frames, torch.Tensor) else max(frames, 1)


def _transform(cfg: FeatureConfig) -> nn.Module:
    mel_kwargs = dict(
        n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length, center=False,
        f_min=cfg.f_min, f_max=cfg.f_max, n_mels=cfg.n_mels, norm="slaney", mel_scale="slaney",
    )
    if cfg.kind == "logmel":
        return torchaudio.transforms.MelSpectrogram(sample_rate=cfg.sample_rate, **mel_kwargs)
    if cfg.kind == "spectrogram":
        return torchaudio.transforms.Spectrogram(
            n_fft=cfg.n_fft, win_length=cfg.win_length, hop_length=cfg.hop_length, center=False)
    return torchaudio.transforms.MFCC(
        sample_rate=cfg.sample_rate, n_mfcc=cfg.n_mfcc, log_mels=True, melkwargs=mel_kwargs)


class FeatureExtractor(nn.Module):
    """(N, S) waveforms + (N,) sample counts -> (N, T, F) normalised features + (N,) frame counts.

    Frames past an utterance's length are zero (the normalised mean), so padding carries no signal.
    """

    def __init__(self, cfg: FeatureConfig, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.transform = _transform(cfg)
        as_buffer = lambda x, default: default if x is None else torch.as_tensor(x, dtype=torch.float32)
        self.register_buffer("mean", as_buffer(mean, torch.zeros(cfg.dim)))
        self.register_buffer("std", as_buffer(std, torch.ones(cfg.dim)))

    def frames(self, waves: torch.Tensor) -> torch.Tensor:
        """(N, S) samples, S >= n_fft -> (N, (S - n_fft) // hop + 1, F) un-normalised features: the maths
        of the offline and the streaming path alike."""
        with torch.autocast(waves.device.type, enabled=False):
            x = self.transform(waves.float())                      # (N, F, T)
        if self.cfg.kind != "mfcc":
            x = torch.log(torch.clamp(x, min=LOG_FLOOR))
        return x.transpose(1, 2)                                   # (N, T, F)

    def raw(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-normalised features (N, T, F) and frame counts (N,); padded frames are garbage."""
        if waves.shape[-1] < self.cfg.n_fft:
            waves = nn.functional.pad(waves, (0, self.cfg.n_fft - waves.shape[-1]))
        return self.frames(waves), self.cfg.num_frames(lengths)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std                          # (N, T, F)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, frames = self.raw(waves, lengths)
        x = self.normalize(x)                                      # (N, T, F)
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < frames[:, None])[..., None]  # (N, T, 1)
        if self.cfg.utterance_mean:
            x = x - (x * mask).sum(1, keepdim=True) / frames[:, None, None]  # mean over valid frames only
        return x * mask, frames

    def initial_state(self, n: int) -> FeatureState:
        if self.cfg.utterance_mean:
            raise ValueError("streaming cannot use features.utterance_mean: it needs the whole utterance")
        return FeatureState(torch.zeros(n, 0, device=self.mean.device), 0)

    def step(self, samples: torch.Tensor, state: FeatureState, final: bool = False
             ) -> tuple[torch.Tensor, FeatureState]:
        """(N, s) samples that follow `state` -> (N, t, F) normalised feature frames now complete, and the
        state after them. `final`: the input ends here (a whole input shorter than n_fft still gets its
        one zero-padded frame, as offline)."""
        cfg = self.cfg
        audio = torch.cat([state.pending, samples.to(state.pending)], 1)   # (N, r + s)
        if final and state.frames == 0 and audio.shape[1] < cfg.n_fft:
            audio = nn.functional.pad(audio, (0, cfg.n_fft - audio.shape[1]))
        n = max(0, (audio.shape[1] - cfg.n_fft) // cfg.hop_length + 1)
        if n == 0:
            return audio.new_zeros(audio.shape[0], 0, cfg.dim), FeatureState(audio, state.frames)
        x = self.normalize(self.frames(audio[:, :(n - 1) * cfg.hop_length + cfg.n_fft]))  # (N, n, F)
        return x, FeatureState(audio[:, n * cfg.hop_length:], state.frames + n)


@dataclass
class FeatureState:
    """Audio not yet turned into frames, for N streams advancing together."""
    pending: torch.Tensor     # (N, r) samples after the last complete frame's start + hop
    frames: int               # frames made so far


def compute_stats(extractor: FeatureExtractor, batches) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-dimension mean and std over every valid frame of `batches` of (waves, lengths)."""
    total = torch.zeros(extractor.cfg.dim, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    for waves, lengths in batches:
        x, frames = extractor.raw(waves, lengths)                  # (N, T, F)
        mask = torch.arange(x.shape[1])[None, :] < frames[:, None]
        valid = x[mask].double()                                   # (frames, F)
        total += valid.sum(0)
        total_sq += (valid ** 2).sum(0)
        count += valid.shape[0]
    if count == 0:
        raise ValueError("no frames to compute normalisation statistics from")
    mean = total / count
    std = torch.sqrt(torch.clamp(total_sq / count - mean ** 2, min=1e-8))
    return mean.float(), std.float(), count


def save_stats(path: str | Path, cfg: FeatureConfig, mean: torch.Tensor, std: torch.Tensor, num_frames: int) -> None:
    data = {"features": asdict(cfg), "mean": mean.tolist(), "std": std.tolist(), "num_frames": num_frames}
    Path(path).write_text(json.dumps(data, indent=1))


def load_stats(path: str | Path) -> tuple[FeatureConfig, torch.Tensor, torch.Tensor]:
    data = json.loads(Path(path).read_text())
    return FeatureConfig(**data["features"]), torch.tensor(data["mean"]), torch.tensor(data["std"])


@dataclass(frozen=True)
class SpecAugmentConfig:
    freq_masks: int = 2
    freq_width: int = 15        # mel bands, at most, per mask
    time_masks: int = 2
    time_width: float = 0.05    # fraction of the utterance, at most, per mask


def spec_augment(x: torch.Tensor, frames: torch.Tensor, cfg: SpecAugmentConfig,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero random frequency bands and time spans of (N, T, F) normalised features (training only)."""
    n, t, f = x.shape
    keep = torch.ones(n, t, f, dtype=torch.bool, device=x.device)
    rand = lambda *shape: torch.rand(*shape, generator=generator).to(x.device)
    bands = torch.arange(f, device=x.device)[None, None, :]                      # (1, 1, F)
    for _ in range(cfg.freq_masks):
        width = (rand(n) * (cfg.freq_width + 1)).long()                          # (N,)
        start = (rand(n) * (f - width + 1)).long()
        keep &= ~((bands >= start[:, None, None]) & (bands < (start + width)[:, None, None]))
    steps = torch.arange(t, device=x.device)[None, :, None]                      # (1, T, 1)
    lengths = frames.to(x.device).float()
    for _ in range(cfg.time_masks):
        width = (rand(n) * cfg.time_width * lengths).long()
        start = (rand(n) * (lengths - width + 1)).long()
        keep &= ~((steps >= start[:, None, None]) & (steps < (start + width)[:, None, None]))
    return x * keep
