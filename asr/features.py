"""Audio -> features: log-mel (default), Kaldi-style fbank, log linear spectrogram or MFCC; global
normalisation; SpecAugment.

Frame t of an input of S samples reads `win_length` samples from t * hop_length + `frame_offset`:
- logmel / spectrogram / mfcc: torchaudio's framing without centre padding (the window centred in
  n_fft samples; (S - n_fft) // hop + 1 frames), zeros past the end of a short input;
- fbank: Kaldi's (snip_edges false: frames centred on t * hop + hop / 2, round(S / hop) of them, the
  signal reflected at both ends), pre-emphasis 0.97 and a periodic Hann window, slaney mel 0-8 kHz
  and a log floor of FLT_EPSILON: the front end sherpa-onnx (kaldi-native-fbank) computes for NeMo
  CTC models, so a model trained on it runs there (asr.export, `--format sherpa-onnx`).
Every input gets at least one frame. One function (`FeatureExtractor._frames`) makes the frames of
a padded batch (each input its own length: a batch gives every input exactly its frames alone)
and of audio arriving in pieces (`step`, for streaming), with tensor arithmetic only, so a traced
or exported graph is right for every length; `whole` frames one whole input by the eager path's own
operations, its length in size arithmetic only, for the graph the checkpoint backend traces for this
process (asr.backends.checkpoint). Every frame count and rate derives from FeatureConfig.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchaudio.functional as AF
from torch import nn

from .audio import SAMPLE_RATE
from .native import compiled_spectrum, linear
from .tracing import eager, native

N_FFT = 512          # next power of two above the 25 ms window
WIN_LENGTH = 400     # 25 ms at 16 kHz
HOP_LENGTH = 160     # 10 ms at 16 kHz
LOG_FLOOR = 1e-10    # power below this is silence; keeps log finite
KALDI_LOG_FLOOR = 1.1920928955078125e-07  # FLT_EPSILON: kaldi-native-fbank's log floor (fbank)
PREEMPHASIS = 0.97   # Kaldi's default pre-emphasis (fbank), which sherpa-onnx cannot turn off
KINDS = ("logmel", "fbank", "spectrogram", "mfcc")
_FAR = 2 ** 40       # the length of an input that has not ended yet (2 * _FAR still fits in int64)
PADDED_SHARE = 0.75  # an eager batch whose samples fill less of its padded size is computed input by input


def mostly_padding(lengths: torch.Tensor) -> bool:
    """Whether a batch of these (N,) sample counts, N > 1, is mostly padding: its samples fill less than PADDED_SHARE
    of its padded size (inputs of mixed lengths, as a server's requests are), so that input by input is cheaper."""
    n = lengths.shape[0]
    return n > 1 and int(lengths.sum()) < PADDED_SHARE * n * int(lengths.max())


@dataclass(frozen=True)
class FeatureConfig:
    kind: str = "logmel"        # logmel | fbank (Kaldi framing, sherpa-onnx's front end) | spectrogram | mfcc
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
        if self.kind not in KINDS:
            raise ValueError(f"feature kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not 0 < self.win_length <= self.n_fft:
            raise ValueError(f"win_length must be in 1..n_fft ({self.n_fft}), not {self.win_length}")

    @property
    def dim(self) -> int:
        return {"spectrogram": self.n_fft // 2 + 1, "mfcc": self.n_mfcc}.get(self.kind, self.n_mels)

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def frame_offset(self) -> int:
        """Where frame t's window starts, relative to t * hop_length (negative: before it)."""
        if self.kind == "fbank":
            return self.hop_length // 2 - self.win_length // 2
        return (self.n_fft - self.win_length) // 2

    @property
    def frame_reach(self) -> int:
        """Samples after t * hop_length that frame t needs before it can be computed (without the end)."""
        return self.frame_offset + self.win_length if self.kind == "fbank" else self.n_fft

    def num_frames(self, num_samples):
        """Frames for utterances of `num_samples` samples (an int or a tensor of them); at least one."""
        if self.kind == "fbank":
            frames = (num_samples + self.hop_length // 2) // self.hop_length
        else:
            frames = (num_samples - self.n_fft) // self.hop_length + 1
        return torch.clamp(frames, min=1) if isinstance(frames, torch.Tensor) else max(frames, 1)


class FeatureExtractor(nn.Module):
    """(N, S) waveforms + (N,) sample counts -> (N, T, F) normalised features + (N,) frame counts.

    Frames past an utterance's length are zero (the normalised mean), so padding carries no signal.
    """

    def __init__(self, cfg: FeatureConfig, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        as_buffer = lambda x, default: default if x is None else torch.as_tensor(x, dtype=torch.float32)
        self.register_buffer("mean", as_buffer(mean, torch.zeros(cfg.dim)))
        self.register_buffer("std", as_buffer(std, torch.ones(cfg.dim)))
        window = torch.hann_window(cfg.win_length, periodic=True, dtype=torch.float64)         # (W,)
        k = torch.arange(cfg.n_fft // 2 + 1, dtype=torch.float64)
        angle = 2 * math.pi * torch.outer(torch.arange(cfg.win_length, dtype=torch.float64), k) / cfg.n_fft
        # |DFT|^2 of the windowed frame zero-padded to n_fft, as one matmul: (W, 2K) [cos | -sin]
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)], 1) * window[:, None]
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("dft", basis.float(), persistent=False)
        if cfg.kind != "spectrogram":
            fb = AF.melscale_fbanks(cfg.n_fft // 2 + 1, cfg.f_min, cfg.f_max or cfg.sample_rate / 2, cfg.n_mels,
                                    cfg.sample_rate, norm="slaney", mel_scale="slaney")    # (K, n_mels)
            self.register_buffer("mel", fb, persistent=False)
        if cfg.kind == "mfcc":
            self.register_buffer("dct", AF.create_dct(cfg.n_mfcc, cfg.n_mels, "ortho"), persistent=False)

    def _frames(self, audio: torch.Tensor, start, first, n, total: torch.Tensor) -> torch.Tensor:
        """The maths of every path. (N, r) samples that begin at absolute sample `start` -> (N, n, F)
        un-normalised features of frames first .. first + n - 1 of inputs `total` (N,) samples long (_FAR
        while an input goes on): samples outside an input are reflected (fbank) or zero."""
        if eager():
            return self._spectrum_features(self._unfolded(audio, int(start), int(first), int(n), total))
        return self._spectrum_features(self._gathered(audio, start, first, n, total))

    def _unfolded(self, audio: torch.Tensor, start: int, first: int, n: int, total: torch.Tensor) -> torch.Tensor:
        """_gathered's frames, eagerly: the sample run the frames span (no indices at all for zero padding),
        viewed as (N, n, W) windows."""
        cfg = self.cfg
        N, r = audio.shape
        if n <= 0:
            return audio.new_zeros(N, 0, cfg.win_length, dtype=torch.float32)
        lo = first * cfg.hop_length + cfg.frame_offset                                      # absolute first sample
        span = (n - 1) * cfg.hop_length + cfg.win_length
        if cfg.kind == "fbank" and start == 0 and (runs := self._reflected_runs(audio, first, n, total)) is not None:
            samples = runs                                                                 # whole inputs
        elif cfg.kind == "fbank":
            samples = self._sample_run(audio, start, torch.arange(span, device=audio.device)[None] + lo, total)
        else:                                                      # zero outside each input: mask, pad, slice
            keep = (torch.arange(r, device=audio.device)[None] + start) < total.to(audio.device)[:, None]
            local = lo - start
            padded = nn.functional.pad(audio * keep, (max(-local, 0), max(local + span - r, 0)))
            samples = padded[:, max(local, 0):max(local, 0) + span].float()
        return samples.unfold(1, cfg.win_length, cfg.hop_length)                          # (N, n, W)

    def _sample_run(self, audio: torch.Tensor, start, j: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """(N, r) samples from absolute sample `start` -> (N, L) float samples at absolute positions j (1, L)
        of inputs `total` (N,) long: reflected at both ends (fbank; then pre-emphasised) or zero outside."""
        N, r = audio.shape
        total = total.to(audio.device)[:, None]                                              # (N, 1)
        if self.cfg.kind == "fbank":                               # reflect at both ends: j mod 2S, folded
            s = total.clamp(min=1)
            m = torch.remainder(j, 2 * s)
            j = torch.where(m < s, m, 2 * s - 1 - m)                                         # (N, L)
            inside = total > 0
        else:
            inside = (j >= 0) & (j < total)
        local = torch.where(inside, j - start, torch.full_like(j, r))                       # r: a zero sample
        flat = nn.functional.pad(audio, (0, 1)).reshape(-1)                                 # (N * (r + 1),)
        rows = torch.arange(N, device=audio.device)[:, None] * (r + 1)
        samples = flat[(local + rows).reshape(-1)].reshape(N, -1).float()                   # (N, L)
        return self._preemphasised(samples) if self.cfg.kind == "fbank" else samples

    def _reflected_runs(self, audio: torch.Tensor, first: int, n: int, total: torch.Tensor) -> torch.Tensor | None:
        """_sample_run of whole inputs (N, r), each `total` samples long, for frames first .. first + n - 1, by
        slicing the batch (a few operations for all its inputs, as _reflected_run for one): each input's samples,
        reflected at both its ends as far as its own frames reach (past them, samples no frame of it reads:
        garbage to every caller), pre-emphasised. None where an input is not whole in `audio` or too short for one
        reflection."""
        cfg, (N, r) = self.cfg, audio.shape
        lo, totals = first * cfg.hop_length + cfg.frame_offset, total.tolist()
        span = (n - 1) * cfg.hop_length + cfg.win_length                                   # L
        framed = [(s, lo + (k - 1) * cfg.hop_length + cfg.win_length - s)    # an input's samples, read past them
                  for s in totals if (k := min(n, cfg.num_frames(s) - first)) > 0]
        if max(totals) > r or any(s == 0 or max(-lo, past) > s for s, past in framed):
            return None
        left, right = max(0, -lo), max([0, *(past for _, past in framed)])
        samples = audio.new_zeros(N, max(span, r - lo) + right, dtype=torch.float32)       # sample j at j - lo
        a, b = max(lo, 0), min(r, lo + samples.shape[1])
        samples[:, a - lo:b - lo] = audio[:, a:b]
        if left:
            samples[:, :left] = audio[:, :left].flip(1)                                     # j < 0: sample -j - 1
        if right:                                                   # j = s + t: sample s - 1 - t, t < right
            t = torch.arange(right, device=audio.device)[None]
            total = total.to(audio.device)[:, None]
            at = (total - lo + t).clamp(min=0)                      # (clamped: inputs with no frame here)
            samples.scatter_(1, at, audio.gather(1, (total - 1 - t).clamp(min=0)).to(samples.dtype))
        return self._preemphasised(samples[:, :span])

    def _reflected_run(self, audio: torch.Tensor, lo: int, span: int) -> torch.Tensor:
        """_sample_run of one whole input (1, S) for absolute positions lo .. lo + span - 1, by slicing: the
        same samples (reflected at both ends, pre-emphasised) without an index per sample."""
        r = audio.shape[1]
        left, right = max(0, -lo), lo + span - r              # right: no Python test of r (see `whole`); <= 0: none
        run = torch.cat([audio[:, :left].flip(1), audio, audio[:, r - right:].flip(1)], 1)   # sample j at j + left
        return self._preemphasised(run[:, lo + left:lo + left + span].float())              # (1, L)

    def _preemphasised(self, samples: torch.Tensor) -> torch.Tensor:
        # pre-emphasis on the sample run instead of each frame: the same but for a frame's first sample,
        # which Kaldi pre-emphasises against itself and the Hann window then zeroes either way
        assert self.window[0] == 0
        return torch.cat([samples[:, :1], samples[:, 1:] - PREEMPHASIS * samples[:, :-1]], 1)

    def _gathered(self, audio: torch.Tensor, start, first, n, total: torch.Tensor) -> torch.Tensor:
        """_unfolded's frames in tensor arithmetic only, so a traced graph keeps every length dynamic: the
        sample run picked by one gather (N, L), then the (n, W) windows of it by a second, shared by the batch."""
        cfg = self.cfg
        lo = first * cfg.hop_length + cfg.frame_offset                                      # absolute first sample
        span = torch.clamp(torch.as_tensor(n) - 1, min=0) * cfg.hop_length + cfg.win_length  # L
        samples = self._sample_run(audio, start, torch.arange(span, device=audio.device)[None] + lo, total)
        windows = (torch.arange(n, device=audio.device)[:, None] * cfg.hop_length
                   + torch.arange(cfg.win_length, device=audio.device)[None, :])            # (n, W)
        return samples[:, windows]                                                          # (N, n, W)

    def _spectrum_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n, W) frames -> (N, n, F) un-normalised features."""
        with torch.autocast(x.device.type, enabled=False):
            # One MatMul when tracing or exporting (ONNX has no complex tensors) and for no frames (MKL's FFT
            # refuses empty batches); the FFT, faster, otherwise (a graph for this process too: asr.tracing). The
            # two agree to float32 rounding.
            if not native() or x.shape[1] == 0:
                re, im = (x @ self.dft).chunk(2, dim=-1)
                power = re * re + im * im                                                   # (N, n, K)
            else:
                # the windowed frames written into their zero padding to n_fft, so the FFT pads nothing: the same
                # input, two full-size temporaries fewer (large batches' tensors cost their page faults)
                padded = x.new_zeros(*x.shape[:-1], self.cfg.n_fft)                        # (N, n, n_fft)
                torch.mul(x, self.window, out=padded[..., :x.shape[-1]])
                c = torch.view_as_real(torch.fft.rfft(padded))                              # (N, n, K, 2)
                if self.cfg.kind in ("logmel", "fbank") and (ops := compiled_spectrum()) is not None:
                    # |c|^2, its product by the mel matrix (its nonzero terms) and the floored log in one pass
                    out = x.new_empty(*x.shape[:-1], self.cfg.n_mels)                        # (N, n, n_mels)
                    floor = KALDI_LOG_FLOOR if self.cfg.kind == "fbank" else LOG_FLOOR
                    ops.mel_energies(out.view(-1, self.cfg.n_mels), c.reshape(-1, c.shape[-2], 2), self.mel, floor)
                    return out
                c = c * c                                          # |c|^2 bit for bit, the two parts squared in
                power = torch.add(c[..., 0], c[..., 1])            # one pass (1.4x .real.square() and .imag's)
            if self.cfg.kind == "spectrogram":
                return torch.log(torch.clamp(power, min=LOG_FLOOR))
            mel = linear(power, self.mel.t()) if native() else power @ self.mel              # (N, n, n_mels)
            if self.cfg.kind == "mfcc":
                return torch.log(mel + 1e-6) @ self.dct                                     # as torchaudio's MFCC
            floor = KALDI_LOG_FLOOR if self.cfg.kind == "fbank" else LOG_FLOOR
            return torch.log(torch.clamp(mel, min=floor))

    def raw(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-normalised features (N, T, F) and frame counts (N,); frames past an input's count are garbage.

        Eagerly, a batch that is mostly padding (inputs of mixed lengths, as a server's requests are)
        is computed an input at a time, each over its own samples only: the same frames, without the
        time spent on padding (length-bucketed training batches stay one call)."""
        frames = self.cfg.num_frames(lengths)                                               # (N,)
        n = waves.shape[0]
        if eager() and mostly_padding(lengths):
            out = waves.new_zeros(n, int(frames.max()), self.cfg.dim, dtype=torch.float32)        # (N, T, F)
            for i in range(n):
                out[i, :frames[i]] = self._frames(waves[i:i + 1, :lengths[i]], 0, 0, frames[i], lengths[i:i + 1])[0]
            return out, frames
        return self._frames(waves, 0, 0, frames.max(), lengths), frames

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std                          # (N, T, F)

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, frames = self.raw(waves, lengths)
        return self._normalised(x, frames), frames

    def whole(self, wave: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() of one whole input, (1, S) samples and (1,) its length S >= n_fft: the same frames by the
        same operations as raw's eager path, with S in size arithmetic only (no Python test or int() of it), so
        that a graph traced of it (asr.backends.checkpoint's one-input graph) keeps every length dynamic."""
        cfg, r = self.cfg, wave.shape[1]
        span = (cfg.num_frames(r) - 1) * cfg.hop_length + cfg.win_length                     # L
        if cfg.kind == "fbank":
            samples = self._reflected_run(wave, cfg.frame_offset, span)                       # (1, L)
        else:                                        # S >= n_fft: every frame inside the input, no padding
            samples = wave[:, cfg.frame_offset:cfg.frame_offset + span].float()
        x = self._spectrum_features(samples.unfold(1, cfg.win_length, cfg.hop_length))       # (1, T, F)
        frames = cfg.num_frames(length)                                                     # (1,)
        return self._normalised(x, frames), frames

    def _normalised(self, x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)                                      # (N, T, F)
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < frames[:, None])[..., None]  # (N, T, 1)
        if self.cfg.utterance_mean:
            x = x - (x * mask).sum(1, keepdim=True) / frames[:, None, None]  # mean over valid frames only
        return x * mask

    def initial_state(self, n: int) -> FeatureState:
        if self.cfg.utterance_mean:
            raise ValueError("streaming cannot use features.utterance_mean: it needs the whole utterance")
        zero = torch.zeros((), dtype=torch.long)
        return FeatureState(torch.zeros(n, 0, device=self.mean.device), zero, zero)

    def step(self, samples: torch.Tensor, state: FeatureState, final=False) -> tuple[torch.Tensor, FeatureState]:
        """(N, s) samples that follow `state` -> (N, t, F) normalised feature frames now complete, and the
        state after them. `final` (a bool or a 0-dim tensor): the input ends here. Tensor arithmetic only,
        so a traced graph of it streams correctly at any chunk size."""
        cfg = self.cfg
        audio = torch.cat([state.pending, samples.to(state.pending)], 1)                    # (N, r + s)
        received = state.start + audio.shape[1]                                             # samples so far
        # complete frames, max(0, (received - reach) // hop + 1), with a non-negative division (ONNX truncates)
        ready = torch.clamp(received - cfg.frame_reach + cfg.hop_length, min=0) // cfg.hop_length
        final = torch.as_tensor(final)
        n = torch.where(final, cfg.num_frames(received), ready) - state.frames               # new frames
        total = torch.where(final, received, torch.full_like(received, _FAR)).expand(audio.shape[0])
        x = self.normalize(self._frames(audio, state.start, state.frames, n, total))        # (N, n, F)
        frames = state.frames + n
        start = torch.minimum(torch.clamp(frames * cfg.hop_length + cfg.frame_offset, min=0), received)  # next frame's
        return x, FeatureState(audio[:, start - state.start:], start, frames)


@dataclass
class FeatureState:
    """Audio not yet turned into frames, for N streams advancing together (0-dim int64 counters)."""
    pending: torch.Tensor     # (N, r) samples from `start` on
    start: torch.Tensor       # the absolute index of pending's first sample
    frames: torch.Tensor      # frames made so far


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


def manifest_stats(utts, cfg: FeatureConfig, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """`compute_stats` over utterances (asr.data.Utterance), read and padded in batches of 200 s of audio."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from .data import AudioDataset, FrameBudgetSampler, collate

    batches = FrameBudgetSampler([u.duration for u in utts], 200 * round(cfg.frames_per_second), cfg.frames_per_second,
                                 shuffle=False)
    loader = DataLoader(AudioDataset(utts, None, cfg.sample_rate), collate_fn=collate, batch_sampler=batches)
    loader = tqdm(loader, desc="statistics", unit="batch", disable=not progress, leave=False)
    return compute_stats(FeatureExtractor(cfg), ((b.waves, b.lengths) for b in loader if b))


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
