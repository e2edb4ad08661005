"""LibriSpeech and LJSpeech, in the layouts they are published in.

LibriSpeech: `<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac` with one
`<speaker>-<chapter>.trans.txt` per chapter (`<id> <TRANSCRIPT>` lines); each subset
(train-clean-100, dev-clean, test-clean...) becomes one manifest.
LJSpeech: `metadata.csv` (`id|text|normalized text`, no header) beside `wavs/<id>.wav`; the
normalised column (numbers spelled out) is used. Neither prepare function downloads;
`download_librispeech()` and `download_ljspeech()` fetch and extract the published archives.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

from ..data import Utterance, read_manifest, write_manifest
from ..text import TextConfig, normalize_text
from .base import Corpus, fetch, hold_out, register, utterance, write_splits

LIBRISPEECH_URL = "https://www.openslr.org/resources/12/{subset}.tar.gz"   # OpenSLR SLR12
LJSPEECH_URL = "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2"


def _extract(url: str, archive: Path, target: Path) -> None:
    fetch(url, archive)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")


def download_librispeech(target_dir: str | Path, subset: str = "dev-clean", url: str | None = None) -> Path:
    """Fetch and extract one subset (dev-clean, test-clean, train-clean-100...) into `target_dir`;
    returns the LibriSpeech/ dir holding it. Does nothing when the subset is already there."""
    target = Path(target_dir)
    corpus = target / "LibriSpeech"
    if not (corpus / subset).is_dir():
        target.mkdir(parents=True, exist_ok=True)
        _extract(url or LIBRISPEECH_URL.format(subset=subset), target / f"{subset}.tar.gz", target)
        if not (corpus / subset).is_dir():
            raise ValueError(f"{target / f'{subset}.tar.gz'}: extracted, but no LibriSpeech/{subset}/ inside")
    return corpus


def download_ljspeech(target_dir: str | Path, url: str = LJSPEECH_URL) -> Path:
    """Fetch and extract LJSpeech 1.1 into `target_dir`; returns the dir holding metadata.csv and wavs/.
    Does nothing when it is already there."""
    target = Path(target_dir)
    found = sorted(target.glob("*/metadata.csv"))
    if not found:
        target.mkdir(parents=True, exist_ok=True)
        _extract(url, target / "LJSpeech-1.1.tar.bz2", target)
        found = sorted(target.glob("*/metadata.csv"))
        if not found:
            raise ValueError(f"{target / 'LJSpeech-1.1.tar.bz2'}: extracted, but no metadata.csv inside")
    return found[0].parent


def _utt(uid: str, audio: Path, transcript: str, speaker: str, where: str, text: TextConfig) -> Utterance:
    return utterance(uid, audio, normalize_text(transcript, text), speaker)


def read_librispeech(subset_dir: str | Path, text: TextConfig = TextConfig()) -> list[Utterance]:
    """Every utterance of one LibriSpeech subset folder (e.g. .../LibriSpeech/dev-clean)."""
    subset = Path(subset_dir)
    trans = sorted(subset.glob("*/*/*.trans.txt"))
    if not trans:
        raise FileNotFoundError(f"{subset}: no <speaker>/<chapter>/*.trans.txt: not a LibriSpeech subset dir?")
    utts = []
    for t in trans:
        for lineno, line in enumerate(t.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            uid, _, transcript = line.partition(" ")
            utts.append(_utt(uid, t.parent / f"{uid}.flac", transcript, uid.split("-")[0], f"{t}:{lineno}", text))
    return utts


def read_ljspeech(corpus_dir: str | Path, text: TextConfig = TextConfig()) -> list[Utterance]:
    """Every row of LJSpeech's metadata.csv, with the normalised transcript; one speaker."""
    corpus = Path(corpus_dir)
    meta = corpus / "metadata.csv"
    if not meta.exists():
        raise FileNotFoundError(f"{meta}: missing; is {corpus} an LJSpeech dir?")
    utts = []
    for lineno, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("|")
        if len(fields) != 3:
            raise ValueError(f"{meta}:{lineno}: expected id|text|normalized text, got {len(fields)} fields")
        uid, _, normalized = fields
        utts.append(_utt(uid, corpus / "wavs" / f"{uid}.wav", normalized, "LJ", f"{meta}:{lineno}", text))
    return utts


TRAIN_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500")   # 100 h, +360 h = 460 h, +500 h = 960 h
DEV_SUBSETS = ("dev-clean", "dev-other")                                   # the recipe selects on the first there
TEST_SUBSETS = ("test-clean", "test-other")                                # each scored on its own


def prepare_librispeech(corpus_dir: str | Path, out_dir: str | Path,
                        text: TextConfig = TextConfig()) -> dict[str, Path]:
    """One manifest per subset folder found in `corpus_dir` (a LibriSpeech/ dir), named after it, and the
    recipe's: train.jsonl (every train-* subset there, together: train-clean-100, or mini LibriSpeech's
    train-clean-5), dev.jsonl (dev-clean, else dev-other) and the test subsets there. A dir without a dev or
    without a test subset has whole speakers of its training subsets held out for them (asr.corpora.base.hold_out:
    dev.jsonl, test.jsonl), so that a folder holding train-clean-5 alone is a recipe too."""
    corpus, out = Path(corpus_dir), Path(out_dir)
    subsets = sorted(p for p in corpus.iterdir() if p.is_dir() and any(p.glob("*/*/*.trans.txt")))
    if not subsets:
        raise FileNotFoundError(f"{corpus}: no LibriSpeech subset folders (train-clean-100/, dev-clean/...)")
    paths = write_splits({s.name: read_librispeech(s, text) for s in subsets}, out, text)
    train = [paths[name] for name in sorted(paths) if name.startswith("train-")]
    dev = next((paths[name] for name in DEV_SUBSETS if name in paths), None)
    tests = [name for name in TEST_SUBSETS if name in paths]
    if not train:
        return paths
    if dev is not None and tests:           # already checked: joined as written, not screened again
        return {**paths, "train": _join(train, out / "train.jsonl"), "dev": _join([dev], out / "dev.jsonl")}
    held = hold_out([u for m in train for u in read_manifest(m)])
    kept = held["train"] + (held["dev"] if dev is not None else []) + (held["test"] if tests else [])
    write_manifest(out / "train.jsonl", kept)
    found = {**paths, "train": out / "train.jsonl", "dev": _join([dev], out / "dev.jsonl") if dev is not None else None}
    if dev is None:
        write_manifest(out / "dev.jsonl", held["dev"])
        found["dev"] = out / "dev.jsonl"
    if not tests:
        write_manifest(out / "test.jsonl", held["test"])
        found["test"] = out / "test.jsonl"
    return found


def _join(manifests: list[Path], path: Path) -> Path:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for m in manifests:
            f.write(m.read_bytes())
    tmp.replace(path)
    return path


def prepare_ljspeech(corpus_dir: str | Path, out_dir: str | Path, text: TextConfig = TextConfig()) -> dict[str, Path]:
    return write_splits({"all": read_ljspeech(corpus_dir, text)}, out_dir, text)


register(Corpus("librispeech", prepare_librispeech, "LibriSpeech as published: one manifest per subset"))
register(Corpus("ljspeech", prepare_ljspeech, "LJSpeech 1.1: metadata.csv's normalised column"))
