"""Whether a call runs eagerly: the one test behind every eager-only fast path (asr.features, asr.model, asr.rnn),
so that a traced, scripted or exported graph sees only standard operations and keeps its lengths dynamic; and
`native`, the test behind the fast paths a graph traced to run in this process alone may record too
(asr.backends.checkpoint's one-input graph: the compiled loops, torch's FFT)."""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

_local = threading.local()   # .in_process: this thread traces a graph for this process alone


def eager() -> bool:
    """True unless a graph is being traced (TorchScript, ONNX), scripted or exported."""
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export())


def native() -> bool:
    """True eagerly, and while tracing a graph that runs in this process alone (`tracing_in_process`): it may
    record this process's own operations (asr.rnn's compiled loops, torch's FFT), which no saved or exported
    graph may hold, so long as they keep its lengths dynamic."""
    return eager() or (torch.jit.is_tracing() and getattr(_local, "in_process", False))


@contextmanager
def tracing_in_process():
    """Within: a torch.jit.trace on this thread makes a graph for this process alone (see `native`)."""
    _local.in_process = True
    try:
        yield
    finally:
        _local.in_process = False
