"""asr: recurrent CTC speech recognition.

    import asr
    model = asr.load_model("data/an4/exp/cpu/best.pt")
    print(model.transcribe("utterance.wav").text)
    print(asr.wer(["HELLO WORLD"], ["HELLO WORD"]))   # 50.0

The model-side names are imported when first used, so `asr --help` does not wait for torch.
`score` is imported now: it is also the name of its module, which would otherwise replace it here
once imported.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from .score import score

__version__ = "0.1.0"
# The folder holding asr/: in a checkout (an editable install) it has recipes/, .venv/ and ../shared beside it
PROJECT_ROOT = Path(__file__).resolve().parents[1]

_PUBLIC = {"load_model": "transcribe", "Transcriber": "transcribe", "Transcript": "transcripts"}


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'asr' has no attribute {name!r}")


def wer(refs: list[str], hyps: list[str]) -> float:
    """Word error rate in percent of `hyps` against `refs`."""
    return score(refs, hyps).wer.rate


__all__ = ["load_model", "Transcriber", "Transcript", "score", "wer", "__version__"]
