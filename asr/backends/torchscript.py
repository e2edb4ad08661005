"""The TorchScript backend: an archive written by `asr export --format torchscript` (asr.export).

The archive holds the traced Recognizer (features + model; packed, so padded batches are exact),
for a unidirectional model its streaming step as the method `stream_step`, and, as its extra file
asr.json, the vocabulary and configs, so it loads alone. Archives from before packing was traced
run one input at a time.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import torch

from ..features import FeatureConfig
from ..model import ModelConfig
from ..tokens import vocabulary_from_state
from .base import Backend, StepStream

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
    precision_hint = ": it runs as exported (bf16 is a checkpoint's)"

    def __init__(self, network: torch.jit.ScriptModule, meta: dict):
        self.network, self.meta = network, meta
        self.batches = meta.get("packed", False)   # unpacked archives (int8, older ones): one input at a time
        self.vocab = vocabulary_from_state(meta["vocab"])
        self.features = FeatureConfig(**meta["feature_config"])
        self.config = ModelConfig(**meta["model_config"])

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return is_exported(path)

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu", precision: str = "fp32") -> TorchScriptBackend:
        cls.check_precision(path, precision)
        extra = {META: ""}
        network = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)  # the CPU: as it was traced
        return cls(network, json.loads(extra[META]))

    @torch.no_grad()
    def log_probs(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, out_lengths = self.network(waves, lengths)
        return log_probs.float(), out_lengths

    def stream(self) -> StepStream:
        if "stream_state" not in self.meta:
            raise ValueError("streaming needs a unidirectional model (model.bidirectional: false), exported "
                             "with its streaming step")
        state = [torch.zeros(shape, dtype=getattr(torch, dtype)) for shape, dtype in self.meta["stream_state"]]
        return StepStream(torch.no_grad()(self.network.stream_step), state)
