"""The interface every model backend implements: waveforms -> CTC log-probs, and a streaming step.

A backend is how a trained network is stored and run (a checkpoint in eager PyTorch, a TorchScript
archive, ...); everything after the log-probs (decoding, words and times, chunking long audio,
partial transcripts) is asr.transcribe's and asr.stream's, the same for every backend. Frame
arithmetic derives from the two configs every backend carries.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..features import FeatureConfig
from ..model import ModelConfig
from ..tokens import BPEVocabulary, Vocabulary


class Backend:
    """A network ready to run. Subclasses set the attributes and implement `log_probs` (and `stream`)."""
    name = "backend"
    vocab: Vocabulary | BPEVocabulary
    features: FeatureConfig         # the front end: sample rate, hop, window
    config: ModelConfig             # the network: its time stride, whether it can stream
    device: torch.device = torch.device("cpu")
    batches: bool = True            # padded batches give each input exactly what it gets alone
    batch_seconds: float | None = None   # the padded audio per forward pass it runs fastest at, if it has one
    precisions: tuple[str, ...] = ("fp32",)   # what `load(precision=...)` accepts, the default first
    precision = "fp32"              # the one this instance runs at
    precision_hint = ""             # check_precision's error ends with it: what to do instead

    @classmethod
    def accepts(cls, path: Path) -> bool:
        """Whether `path` is a file of this backend's kind (checked without loading it)."""
        return False

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu", precision: str = "fp32") -> Backend:
        """The model at `path` on `device`, run at `precision` (one of `precisions`; check_precision says why not)."""
        raise NotImplementedError

    @classmethod
    def check_precision(cls, path: Path, precision: str) -> None:
        """ValueError naming `path` where this backend cannot run at `precision`."""
        if precision not in cls.precisions:
            raise ValueError(f"{path}: precision {precision!r} is not one this {cls.name} model runs at "
                             f"({', '.join(cls.precisions)}){cls.precision_hint}")

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    @property
    def frame_samples(self) -> int:
        """Samples per output frame: the feature hop times the network's time stride."""
        return self.features.hop_length * self.config.time_stride

    @property
    def frame_seconds(self) -> float:
        return self.frame_samples / self.sample_rate

    def output_frames(self, num_samples):
        """Output frames for inputs of `num_samples` samples (an int or a tensor)."""
        return self.config.output_frames(self.features.num_frames(num_samples))

    def log_probs(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, S) zero-padded float samples at `sample_rate` + (N,) lengths -> (N, T', V) float32 CPU
        log-probs + (N,) output lengths."""
        raise NotImplementedError

    @property
    def streams(self) -> bool:
        """Whether it streams frame by frame (a unidirectional model); any model streams by re-decoding."""
        return not self.config.bidirectional

    def stream(self) -> Stream:
        """A Stream of this network for one input that arrives in pieces (unidirectional models)."""
        raise ValueError(f"streaming needs a unidirectional model run step by step; {self.name} models do not stream")


class Stream:
    """One input arriving in pieces: each piece in, the log-probs of the output frames it made final out."""

    def feed(self, samples: torch.Tensor) -> torch.Tensor:
        """(s,) more samples at the backend's rate -> (t, V) log-probs of the frames now final."""
        raise NotImplementedError

    def finish(self) -> torch.Tensor:
        """The end of the input -> (t, V) log-probs of the last frames."""
        raise NotImplementedError


class StepStream(Stream):
    """A Stream over a step function of tensors, as every backend's streaming graph is:
    step(samples (1, s), final (0-dim bool), *state) -> (log_probs (1, t, V), *state)."""

    def __init__(self, step, state: tuple):
        self.step, self.state = step, tuple(state)

    def _run(self, samples, final: bool) -> torch.Tensor:
        samples = torch.as_tensor(samples, dtype=torch.float32).reshape(1, -1)
        log_probs, *self.state = self.step(samples, torch.tensor(final), *self.state)
        return torch.as_tensor(log_probs)[0].float().cpu()

    def feed(self, samples) -> torch.Tensor:
        return self._run(samples, False)

    def finish(self) -> torch.Tensor:
        return self._run(torch.zeros(0), True)
