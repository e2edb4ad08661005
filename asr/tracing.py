"""Whether a call runs eagerly: the one test behind every eager-only fast path (asr.features, asr.model, asr.rnn),
so that a traced, scripted or exported graph sees only standard operations and keeps its lengths dynamic."""
from __future__ import annotations

import torch


def eager() -> bool:
    """True unless a graph is being traced (TorchScript, ONNX), scripted or exported."""
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())
