"""Corpora: one module per corpus, each with `download_<name>()` (fetches) and `prepare_<name>()`
(writes manifests, never downloads), registering itself with `asr.corpora.base.register`; the
registry is what `asr prepare <name>` offers. A new corpus is one new module here.

    base.py              Corpus and register (the registry), fetch, write_splits, ../shared/corpora
    an4.py               CMU AN4 (train / dev speakers / test)
    fsdd.py              Free Spoken Digit Dataset
    vctk.py              CSTR VCTK
    librispeech.py       LibriSpeech subsets and LJSpeech
    folder.py            your own: audio files with .txt transcripts, CSV / TSV lists
    custom.py            your own in any form here (detected), split into train / dev / test (RECIPE=custom)
    kaldi.py             Kaldi data dirs, both ways
    nemo.py              NeMo manifests, both ways
    lhotse_manifests.py  lhotse CutSets, or recordings + supervisions
    commonvoice.py       Mozilla Common Voice, any locale, as published
    english.py           every English corpus at hand as one training set (recipes/english)
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import REGISTRY, Corpus


def corpora() -> dict[str, Corpus]:
    """Every registered corpus by name (importing this package's corpus modules registers them)."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return dict(sorted(REGISTRY.items()))


def get_corpus(name: str) -> Corpus:
    known = corpora()
    if name not in known:
        raise ValueError(f"unknown corpus {name!r} (known: {', '.join(known)})")
    return known[name]


__all__ = ["Corpus", "corpora", "get_corpus"]
