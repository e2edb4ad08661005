"""What keeps a training run alive and its work safe: out-of-memory detection, non-finite steps, signals."""
from __future__ import annotations

import contextlib
import signal
import threading

import torch


def out_of_memory(e: BaseException) -> bool:
    """torch.OutOfMemoryError on a GPU; on the CPU a failed allocation is a RuntimeError saying so
    (torch's allocator: "can't allocate memory"; oneDNN's recurrent kernels: "std::bad_alloc")."""
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(e)
    # With memory exhausted the allocator's own message can be cut short ("[enforce fail a"): a c10 enforce
    # failure whose text did not fit is taken for one.
    cut_short = message.startswith(("[enforce fail", "std::bad")) and len(message) < 40
    return isinstance(e, RuntimeError) and ("can't allocate memory" in message or "bad_alloc" in message
                                            or message.startswith("[enforce fail at alloc") or cut_short)


class NonFiniteError(RuntimeError):
    """Too many consecutive training steps had a non-finite loss or gradient."""


class Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signal = signum


@contextlib.contextmanager
def stop_on_signals(stop: list[int]):
    """While training: SIGINT / SIGTERM append themselves to `stop` (the step in progress finishes, then
    last.pt is saved and the run exits); a second one stops at once. Outside the main thread: nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop:
            raise KeyboardInterrupt
        stop.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

