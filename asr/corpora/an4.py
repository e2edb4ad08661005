"""CMU AN4 (census database): 948 train / 130 test utterances of spoken letters, digits and words.

Read in the publisher's layout: `wav/an4_clstk/<spk>/<id>.sph` (train), `wav/an4test_clstk/...`
(test), transcripts in `etc/an4_train.transcription` (`<s> W O R D S </s> (id)`) and
`etc/an4_test.transcription.full130` or `etc/an4_test.transcription` (`W O R D S (id)`).
"""
from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
from pathlib import Path

from ..audio import AudioError, audio_duration
from ..data import Utterance
from ..text import TextConfig, normalize_text
from .base import Corpus, fetch, register, write_splits

AN4_URL = "http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz"
# SHA-256 of an4_sphere.tar.gz as published in NeMo's AN4 mirror script; not re-checked here
# (no network to the publisher from this project's machines).
AN4_SHA256 = "a0525579493735d32b60fb6fa5975dd0eaacde087b0a4eeb7f13b7ef33077b12"
SPLIT_DIRS = {"train": "an4_clstk", "test": "an4test_clstk"}
DEV_SPEAKERS = 6  # whole speakers held out of train (of 74) for tuning

_line = re.compile(r"^(?P<text>.*?)\s*\((?P<id>[^()]+)\)\s*$")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_an4(target_dir: str | Path, url: str = AN4_URL, sha256: str | None = AN4_SHA256) -> Path:
    """Download and extract the archive into `target_dir`; returns the corpus dir (`target_dir/an4`).

    Does nothing if the corpus is already extracted there. The archive is verified against
    `sha256` before extraction and kept beside it; a mismatch removes it and raises.
    """
    target = Path(target_dir)
    corpus = target / "an4"
    if (corpus / "etc").is_dir():
        return corpus
    target.mkdir(parents=True, exist_ok=True)
    archive = target / "an4_sphere.tar.gz"
    fetch(url, archive)
    if sha256 is not None and (actual := _sha256(archive)) != sha256:
        archive.unlink()
        raise ValueError(f"{archive}: checksum mismatch (sha256 {actual}, expected {sha256}); removed, download again")
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")  # "data" refuses absolute paths and ../ members
    if not (corpus / "etc").is_dir():
        raise ValueError(f"{archive}: extracted, but {corpus}/etc is missing: not the AN4 archive?")
    return corpus


def read_transcription(path: Path, text: TextConfig = TextConfig()) -> dict[str, str]:
    """`<s> W O R D S </s> (id)` or `W O R D S (id)` lines -> {id: normalised text}."""
    texts = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = _line.match(line)
        if m is None:
            raise ValueError(f"{path}:{lineno}: expected 'WORDS (utterance-id)', got {line!r}")
        words = [w for w in m["text"].split() if w not in ("<s>", "</s>")]
        texts[m["id"]] = normalize_text(" ".join(words), text)
    return texts


def _test_transcription(corpus: Path) -> Path:
    full = corpus / "etc" / "an4_test.transcription.full130"
    return full if full.exists() else corpus / "etc" / "an4_test.transcription"


def read_split(corpus: str | Path, split: str, text: TextConfig = TextConfig()) -> list[Utterance]:
    """All utterances of `split` (train | test), in transcription order."""
    corpus = Path(corpus)
    trans = corpus / "etc" / "an4_train.transcription" if split == "train" else _test_transcription(corpus)
    if not trans.exists():
        raise FileNotFoundError(f"{trans}: AN4 transcription missing; is {corpus} an AN4 corpus dir?")
    utts = []
    for uid, transcript in read_transcription(trans, text).items():
        speaker = uid.split("-")[1]
        audio = corpus / "wav" / SPLIT_DIRS[split] / speaker / f"{uid}.sph"
        try:
            duration = audio_duration(audio)
        except AudioError as e:
            raise AudioError(f"{audio}: listed in {trans} but unusable ({e})") from e
        utts.append(Utterance(uid, str(audio), round(duration, 3), transcript, speaker))
    return utts


def dev_speakers(speakers: list[str], n: int = DEV_SPEAKERS) -> list[str]:
    """`n` speakers spread evenly over the sorted list (so both f* and m* speakers are held out)."""
    ordered = sorted(set(speakers))
    return [ordered[(2 * i + 1) * len(ordered) // (2 * n)] for i in range(n)]


def prepare_an4(corpus_dir: str | Path, out_dir: str | Path, n_dev_speakers: int = DEV_SPEAKERS,
                max_utts: int | None = None, text: TextConfig = TextConfig()) -> dict[str, Path]:
    """Write `train.jsonl`, `dev.jsonl` and `test.jsonl` to `out_dir` and return their paths; also copy
    the corpus's task dictionary there (etc/an4.dic: the 130-entry vocabulary AN4 was designed with,
    read by the LM stage for its lexicon).

    Dev is `n_dev_speakers` whole speakers held out of train. `max_utts` keeps only the first
    `max_utts` train utterances and a quarter as many dev and test ones (quick runs and tests).
    Never downloads.
    """
    train_all = read_split(corpus_dir, "train", text)
    held = set(dev_speakers([u.speaker for u in train_all], n_dev_speakers))
    splits = {
        "train": [u for u in train_all if u.speaker not in held],
        "dev": [u for u in train_all if u.speaker in held],
        "test": read_split(corpus_dir, "test", text),
    }
    if max_utts is not None:
        splits = {name: utts[: max_utts if name == "train" else max(max_utts // 4, 1)] for name, utts in splits.items()}
    paths = write_splits(splits, out_dir, text)
    dictionary = Path(corpus_dir) / "etc" / "an4.dic"
    if dictionary.exists():
        shutil.copyfile(dictionary, Path(out_dir) / "an4.dic")
    return paths


CORPUS = register(Corpus("an4", prepare_an4, "CMU AN4: train / dev (6 speakers held out) / test manifests",
                         env="AN4_DIR", shared="an4/an4", download=download_an4, options=("max_utts",)))
locate_an4 = CORPUS.locate   # $AN4_DIR, else ../shared/corpora/an4/an4 beside the project, else a download
