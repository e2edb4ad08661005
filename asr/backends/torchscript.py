"""The TorchScript backend: an archive written by `asr export --format torchscript` (asr.export).

The archive holds the traced Recognizer (features + model) and, as its extra file asr.json, the
vocabulary and configs, so it loads alone. The traced network runs unpacked, one input at a time.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from ..features import FeatureConfig
from ..model import ModelConfig
from ..text import vocabulary_from_state
from .base import Backend

META = "asr.json"   # the archive's extra file with the vocabulary and configs


def is_exported(path: str | Path) -> bool:
    """True for a TorchScript archive written by `export_torchscript`."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith(f"/extra/{META}") for name in z.namelist())
    except (zipfile.BadZipFile, FileNotFoundError, IsADirectoryError):
        return False


class TorchScriptBackend(Backend):
    name = "TorchScript"
    batches = False   # traced unpacked: exact for one input at a time

    def __init__(self, network: torch.jit.ScriptModule, meta: dict):
        self.network, self.meta = network, meta
        self.vocab = vocabulary_from_state(meta["vocab"])
        self.features = FeatureConfig(**meta["feature_config"])
        self.config = ModelConfig(**meta["model_config"])

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return is_exported(path)

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> TorchScriptBackend:
        extra = {META: ""}
        network = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)  # the CPU: as it was traced
        return cls(network, json.loads(extra[META]))

    @torch.no_grad()
    def log_probs(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, out_lengths = self.network(waves, lengths)
        return log_probs.float(), out_lengths
