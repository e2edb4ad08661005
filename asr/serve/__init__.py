"""`asr serve`: any model `asr.load_model` reads behind OpenAI's transcription API, one module a concern.

    options.py      ServeOptions, every default of the server (and `asr serve`'s flags), no torch
    app.py          Server: the routes, errors, keys, metrics; serve() runs it on uvicorn
    batch.py        Batcher: dynamic batching, requests shared out between model workers
    stream.py       StreamRoute: the WebSocket /v1/audio/stream (a unidirectional model's stream())
    openai_api.py   OpenAI's API where it is its own: error objects, uploads from their bytes, verbose_json
    page.html       the page GET / serves: the microphone streamed, a file transcribed

`from asr.serve import Server, ServeOptions, serve`; only ServeOptions is imported with the package, so that
the command line shows the defaults without loading torch or the server's libraries.
"""
from __future__ import annotations

import importlib

from .options import ServeOptions


def __getattr__(name: str):
    if name in ("Server", "serve"):
        return getattr(importlib.import_module(".app", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ServeOptions", "Server", "serve"]
