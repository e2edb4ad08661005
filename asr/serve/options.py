"""What a server accepts and how it computes: `ServeOptions`, the one home of every default `asr serve` has
(its flags default to None and fall back to these), so that `Server(transcriber)` from Python is the server
the command line starts. No torch here: `asr serve --help` shows these numbers without loading it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def serve_workers() -> int:
    """The default model workers: two batches at once where there are two cores or more, on a CPU or a GPU.
    On 2 CPU cores 1.5x the throughput of one worker under 16 clients; on an H200 1.10-1.15x, one batch's
    host-side work overlapping the other's GPU work (recipes/an4/RESULTS.md, "Serving")."""
    return min(2, usable_cores())


def serve_threads(workers: int = 1) -> int:
    """The default torch threads: the cores this process may use less one, shared by the model workers, at
    least one.

    Torch's default (one thread per core) makes its worker threads spin against the event loop and the
    upload decoders on a small machine: on 2 cores one request at a time ran 4.3x slower with 2 threads
    than with 1 (recipes/an4/RESULTS.md, "Serving")."""
    return max(1, (usable_cores() - 1) // workers)


@dataclass(frozen=True)
class ServeOptions:
    """What the server accepts and how it batches and computes."""
    host: str = "127.0.0.1"                  # the address serve() binds: this machine only
    port: int = 8000
    model_name: str = "asr"                  # the id GET /v1/models lists (clients may send any model name)
    api_key: str | None = None               # when set: `Authorization: Bearer <key>` on /v1/*
    max_batch: int = 16                      # requests decoded together at most
    model_workers: int = field(default_factory=serve_workers)  # batches computed at once, each in its own thread
    model_threads: int | None = None         # torch threads while serving (None: serve_threads(model_workers))
    batch_window: float = 0.05               # seconds to wait for more requests after the first of a batch
    max_queue: int = 64                      # transcription requests in progress at once; more get 503
    max_upload_bytes: int = 25 * 1024 ** 2   # OpenAI's cap: 25 MB (413 above)
    max_audio_seconds: float = 600.0         # longer uploads or streams get 413
    max_hotwords: int = 100                  # a request's `prompt` pieces and `hotwords` together (else 400)
    max_nbest: int = 10                      # the most alternatives a request may ask for (else 400)
    request_timeout: float = 120.0           # seconds from a request's start to its answer (504), a stream's silence
    max_streams: int = 8                     # WebSocket streams at once

    def __post_init__(self):
        for name in ("max_batch", "model_workers", "max_queue", "max_upload_bytes", "max_streams"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.model_threads is not None and self.model_threads < 1:
            raise ValueError(f"model_threads must be at least 1, not {self.model_threads}")

    @property
    def threads(self) -> int:
        """The torch threads the server computes on."""
        return self.model_threads or serve_threads(self.model_workers)
