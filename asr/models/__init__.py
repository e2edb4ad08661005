"""Trained models that ship with the package, by name: `asr.load_model("english-base")`, `asr transcribe --model
english-base`, `init_from: english-base` (`INIT=english-base` for a recipe) to fine-tune from.

    english-base    english_base.pt: recipes/english's BiGRU-CTC on every English corpus at hand (MODEL_CARD.md:
                    its data, hours, parameters and %WER / %CER on each held-out test set)

A name that is not one of these is a path.
"""
from __future__ import annotations

from pathlib import Path

MODELS = {"english-base": "english_base.pt"}


def model_file(name_or_path: str | Path) -> Path:
    """The file of a shipped model by its name; any other `name_or_path` as the path it is."""
    name = str(name_or_path)
    if name in MODELS:
        path = Path(__file__).parent / MODELS[name]
        if not path.exists():
            raise FileNotFoundError(f"{name}: the named model's file {path} is not in this installation")
        return path
    return Path(name_or_path)
