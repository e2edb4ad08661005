"""NeMo manifests, both ways: JSON lines of `audio_filepath`, `duration`, `text` (and `offset`), relative
paths taken from the manifest's folder (NeMo's rule). asr.data.read_manifest reads them as they are; this
registers them for `asr prepare` (normalised and checked) and writes them back:

    asr prepare nemo --corpus train_manifest.json --out data/mine     # -> data/mine/all.jsonl
    asr nemo-export --manifest data/an4/train.jsonl --out an4_train_nemo.json
"""
from __future__ import annotations

from pathlib import Path

from ..data import Utterance, read_manifest, write_manifest
from .base import Corpus, normalised, register, write_splits


def export_nemo(utts: list[Utterance], path: str | Path) -> Path:
    """A NeMo manifest of `utts` (absolute audio paths; `offset` for segments; our id and speaker kept)."""
    write_manifest(path, utts, form="nemo")
    return Path(path)


def prepare_nemo(corpus: str | Path, out_dir: str | Path, text=None) -> dict[str, Path]:
    """all.jsonl from a NeMo manifest, transcripts normalised per `text` (a TextConfig; default: what they ask
    for, asr.corpora.base.normalised)."""
    splits, text = normalised({"all": read_manifest(corpus)}, text)
    return write_splits(splits, out_dir, text)


register(Corpus("nemo", prepare_nemo, "a NeMo manifest (audio_filepath, duration, text, offset)"))
