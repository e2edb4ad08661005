"""Model backends: how a trained network is stored and run. Each is one module here implementing
asr.backends.base.Backend (waveforms -> log-probs, and a streaming step); `load_backend` picks the
one whose `accepts(path)` says the file is its kind, the eager checkpoint backend last.

    base.py          Backend, the interface (waveforms -> log-probs, a streaming step) and frame arithmetic
    checkpoint.py    best.pt from training, eager PyTorch on any device (the fallback)
    torchscript.py   `asr export --format torchscript`
    onnx.py          `asr export --format onnx`, on onnxruntime (CPU, or CUDA where installed)
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import torch

from .base import Backend
from .checkpoint import CheckpointBackend


def backends() -> list[type[Backend]]:
    """Every Backend class of this package's modules, the checkpoint backend (the fallback) last."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found = [cls for cls in _subclasses(Backend) if cls.__module__.startswith(__name__)]
    return sorted(found, key=lambda cls: cls is CheckpointBackend)


def _subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


def load_backend(path: str | Path, device: str | torch.device = "cpu", precision: str = "fp32") -> Backend:
    """The backend for the model file at `path` (or a shipped model's name, asr.models), loaded at `precision`
    (each backend's `precisions`: bf16 is the checkpoint backend's; an exported model runs as it was exported)."""
    from ..models import model_file

    path = model_file(path)
    backend = next(cls for cls in backends() if cls.accepts(path))
    return backend.load(path, device, precision)


__all__ = ["Backend", "CheckpointBackend", "backends", "load_backend"]
