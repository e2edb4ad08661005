"""The eager PyTorch backend: a checkpoint written by training (best.pt), or the live modules of a run."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..features import FeatureExtractor
from ..model import AcousticModel
from .base import Backend, Stream


class Recognizer(nn.Module):
    """Waveforms to log-probabilities: the feature extractor and the acoustic model, the unit that is exported.

    (N, S) float samples + (N,) lengths -> (N, T', V) log-probs + (N,) output lengths.
    """

    def __init__(self, extractor: FeatureExtractor, model: AcousticModel, pack: bool = True):
        super().__init__()
        self.extractor, self.model, self.pack = extractor, model, pack

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, frames = self.extractor(waves, lengths)                 # (N, T, F)
        return self.model(feats, frames, pack=self.pack)               # (N, T', V)


class CheckpointBackend(Backend):
    """An AcousticModel and its FeatureExtractor in eager PyTorch, on any device; packed batches are exact."""
    name = "checkpoint"

    def __init__(self, model: AcousticModel, extractor: FeatureExtractor, vocab, device: str | torch.device = "cpu"):
        self.model, self.extractor, self.vocab = model, extractor, vocab
        self.features, self.config, self.device = extractor.cfg, model.cfg, torch.device(device)
        self.network = Recognizer(extractor, model)

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return True   # the fallback: anything else is tried as a checkpoint, whose loader names what is wrong

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> CheckpointBackend:
        model, extractor, vocab, _ = load_checkpoint(path, device)
        return cls(model, extractor, vocab, device)

    @torch.no_grad()
    def log_probs(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = self.model.training    # a run's live model evaluates on dev between epochs
        self.network.eval()
        try:
            log_probs, out_lengths = self.network(waves.to(self.device), lengths.to(self.device))  # (N, T', V)
        finally:
            self.network.train(was_training)
        return log_probs.float().cpu(), out_lengths.cpu()

    def stream(self) -> CheckpointStream:
        if self.config.bidirectional:
            raise ValueError("streaming needs a unidirectional model (model.bidirectional: false)")
        return CheckpointStream(self)


class CheckpointStream(Stream):
    """The feature extractor's and the model's own steps, their state carried from piece to piece."""

    def __init__(self, backend: CheckpointBackend):
        self.extractor, self.model = backend.extractor, backend.model.eval()
        self.features = self.extractor.initial_state(1)
        self.state = self.model.initial_state(1, backend.device)

    @torch.no_grad()
    def _step(self, samples: torch.Tensor, final: bool) -> torch.Tensor:
        feats, self.features = self.extractor.step(samples.reshape(1, -1), self.features, final)  # (1, t, F)
        log_probs, self.state = self.model.step(feats, self.state, final)                      # (1, t', V)
        return log_probs[0].cpu()

    def feed(self, samples: torch.Tensor) -> torch.Tensor:
        return self._step(torch.as_tensor(samples, dtype=torch.float32), final=False)

    def finish(self) -> torch.Tensor:
        return self._step(torch.zeros(0), final=True)
