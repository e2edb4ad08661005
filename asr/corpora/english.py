"""Every English corpus at hand as one training set, for an English base model (recipes/english).

    asr prepare english --out data/english                 # ../shared/corpora's, and the optional ones below
    LIBRISPEECH_DIR=.../LibriSpeech SPEECHOCEAN_DIR=.../speechocean762 asr prepare english --out data/english

From `--corpus` (default ../shared/corpora): AN4, VCTK p239 and the mini LibriSpeech speakers there; and, where
their environment variables name them, the whole mini LibriSpeech train-clean-5 ($LIBRISPEECH_DIR, a LibriSpeech/
dir, instead of the shared speakers) and speechocean762 ($SPEECHOCEAN_DIR: its train/ and test/ Kaldi dirs, 250
non-native speakers). Each corpus keeps whole speakers out of training:

    an4          dev: 6 train speakers (as recipes/an4); test: its test set (10 speakers)
    librispeech  dev and test: speakers held out of train-clean-5 (asr.corpora.base.hold_out)
    speechocean  dev: speakers held out of its train half; test: its test half (other speakers)
    vctk         p239 is never trained on: test_vctk, and adapt_train / adapt_dev (its first 100 and next 50
                 sentences) for fine-tuning to a speaker the base has not heard

Writes train.jsonl and dev.jsonl (every corpus's), test_<corpus>.jsonl, adapt_train.jsonl and adapt_dev.jsonl.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..text import TextConfig
from .base import Corpus, hold_out, register, write_splits

ADAPT = (100, 50)          # VCTK p239 sentences for fine-tuning to a new speaker: train, dev (the rest: test)
HELD_OUT = 0.05            # LibriSpeech / speechocean762 audio held out for dev (and test), by whole speakers


def read_english(corpora: Path, text: TextConfig) -> dict[str, list]:
    """The splits (see the module doc) of every English corpus found."""
    from .an4 import dev_speakers, read_split
    from .kaldi import import_kaldi
    from .librispeech import read_librispeech
    from .vctk import read_vctk

    an4 = read_split(corpora / "an4" / "an4", "train", text)
    held = set(dev_speakers([u.speaker for u in an4]))
    splits = {"train": [u for u in an4 if u.speaker not in held], "dev": [u for u in an4 if u.speaker in held],
              "test_an4": read_split(corpora / "an4" / "an4", "test", text)}
    libri = Path(os.environ.get("LIBRISPEECH_DIR") or corpora / "mini_librispeech" / "LibriSpeech")
    split = hold_out(read_librispeech(libri / "train-clean-5", text), HELD_OUT)
    splits["train"] += split["train"]
    splits["dev"] += split["dev"]
    splits["test_librispeech"] = split["test"]
    if os.environ.get("SPEECHOCEAN_DIR"):
        ocean = Path(os.environ["SPEECHOCEAN_DIR"])
        normalised = lambda utts: [_normalised(u, text) for u in utts]
        split = hold_out(normalised(import_kaldi(ocean / "train")), HELD_OUT)
        splits["train"] += split["train"]
        splits["dev"] += split["dev"] + split["test"]          # its own test half is the test set
        splits["test_speechocean"] = normalised(import_kaldi(ocean / "test"))
    vctk = read_vctk(corpora / "vctk_p239" / "VCTK-Corpus", text=text)
    splits["adapt_train"], splits["adapt_dev"] = vctk[:ADAPT[0]], vctk[ADAPT[0]:sum(ADAPT)]
    splits["test_vctk"] = vctk[sum(ADAPT):]
    return splits


def _normalised(u, text: TextConfig):
    from dataclasses import replace

    from ..text import normalize_text

    return replace(u, text=normalize_text(u.text, text))


def prepare_english(corpus: str | Path, out_dir: str | Path, text: TextConfig | None = None) -> dict[str, Path]:
    """train / dev / test_<corpus> / adapt_* manifests of every English corpus at hand (see the module doc)."""
    text = text or TextConfig()
    splits = read_english(Path(corpus), text)
    speakers = {name: len({u.speaker for u in us}) for name, us in splits.items()}
    print(f"English corpora of {corpus}: " + ", ".join(
        f"{name} {len(us)} ({sum(u.duration for u in us) / 3600:.2f} h, {speakers[name]} speakers)"
        for name, us in splits.items()), file=sys.stderr)
    return write_splits(splits, out_dir, text)


register(Corpus("english", prepare_english, "every English corpus at hand (AN4, VCTK p239, mini LibriSpeech, "
                                            "speechocean762), whole speakers held out of each", shared="."))
