"""Free Spoken Digit Dataset: isolated English digits, 6 speakers, 8 kHz WAV.

Layout as published: `recordings/{digit}_{speaker}_{index}.wav`. The official split puts indices
0-4 in test and 5-49 in train; dev here is indices 5-9 of every speaker (the same speakers as
test, as FSDD has only six), train 10-49.
"""
from __future__ import annotations

import re
import tarfile
from pathlib import Path

from ..data import Utterance
from ..text import TextConfig, normalize_text
from .base import Corpus, fetch, register, utterance, write_splits

FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
DIGITS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
TEST_INDICES, DEV_INDICES = range(0, 5), range(5, 10)
_name = re.compile(r"^(?P<digit>\d)_(?P<speaker>[A-Za-z]+)_(?P<index>\d+)\.wav$")


def download_fsdd(target_dir: str | Path, url: str = FSDD_URL) -> Path:
    """Download and extract the release archive into `target_dir`; returns its `recordings` dir.

    Does nothing when the recordings are already there. (The release is fetched from GitHub by
    tag; no checksum is published for it.)
    """
    target = Path(target_dir)
    found = sorted(target.glob("*/recordings")) + ([target / "recordings"] if (target / "recordings").is_dir() else [])
    if found:
        return found[0]
    target.mkdir(parents=True, exist_ok=True)
    archive = target / "fsdd.tar.gz"
    fetch(url, archive)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    found = sorted(target.glob("*/recordings"))
    if not found:
        raise ValueError(f"{archive}: extracted, but no recordings/ folder inside: not the FSDD archive?")
    return found[0]


def read_fsdd(recordings: str | Path, text: TextConfig = TextConfig()) -> list[Utterance]:
    """Every `{digit}_{speaker}_{index}.wav` in `recordings`, as utterances with the digit's word."""
    recordings = Path(recordings)
    if not recordings.is_dir():
        raise FileNotFoundError(f"{recordings}: no such FSDD recordings folder")
    utts = []
    for path in sorted(recordings.glob("*.wav")):
        m = _name.match(path.name)
        if m is None:
            raise ValueError(f"{path}: not named {{digit}}_{{speaker}}_{{index}}.wav")
        utts.append(utterance(path.stem, path, normalize_text(DIGITS[int(m["digit"])], text), m["speaker"]))
    if not utts:
        raise ValueError(f"{recordings}: no FSDD recordings in it")
    return utts


def prepare_fsdd(corpus_dir: str | Path, out_dir: str | Path, text: TextConfig = TextConfig()) -> dict[str, Path]:
    """Write train/dev/test.jsonl to `out_dir` (official split; dev carved from train); returns their paths.

    `corpus_dir` is the recordings folder or the folder holding it. Never downloads.
    """
    corpus = Path(corpus_dir)
    recordings = corpus / "recordings" if (corpus / "recordings").is_dir() else corpus
    index = lambda u: int(u.id.rsplit("_", 1)[1])
    utts = read_fsdd(recordings, text)
    splits = {"train": [u for u in utts if index(u) >= DEV_INDICES.stop],
              "dev": [u for u in utts if index(u) in DEV_INDICES],
              "test": [u for u in utts if index(u) in TEST_INDICES]}
    return write_splits(splits, out_dir, text)


CORPUS = register(Corpus("fsdd", prepare_fsdd, "Free Spoken Digit Dataset: official test split, dev carved from train",
                         env="FSDD_DIR", shared="fsdd", download=download_fsdd))
locate_fsdd = CORPUS.locate  # $FSDD_DIR, else ../shared/corpora/fsdd beside the project, else a download
