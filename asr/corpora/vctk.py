"""CSTR VCTK: read newspaper sentences, one folder per speaker, one .txt per utterance.

Layout as published (v0.80): `txt/<speaker>/<speaker>_NNN.txt` and the audio as
`wav48/<speaker>/<speaker>_NNN.wav` (48 kHz) or, in resampled copies, `flac16k/<speaker>/...flac`.
Transcripts are normalised (upper case, punctuation dropped). VCTK has no official split: every
10th utterance of each speaker goes to test, the one after it to dev, the rest to train.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from ..data import Utterance
from ..text import TextConfig, normalize_text
from .base import Corpus, fetch, register, utterance, write_splits

VCTK_URL = "https://datashare.ed.ac.uk/bitstream/handle/10283/2651/VCTK-Corpus.zip"
AUDIO_DIRS = (("flac16k", ".flac"), ("wav48", ".wav"))  # first found wins: 16 kHz FLAC needs no resampling


def download_vctk(target_dir: str | Path, url: str = VCTK_URL) -> Path:
    """Download and extract the VCTK zip (about 11 GB) into `target_dir`; returns its `VCTK-Corpus` dir."""
    target = Path(target_dir)
    corpus = target / "VCTK-Corpus"
    if (corpus / "txt").is_dir():
        return corpus
    target.mkdir(parents=True, exist_ok=True)
    archive = target / "VCTK-Corpus.zip"
    fetch(url, archive)
    with zipfile.ZipFile(archive) as z:
        bad = [n for n in z.namelist() if n.startswith("/") or ".." in Path(n).parts]
        if bad:
            raise ValueError(f"{archive}: refusing unsafe member {bad[0]!r}")
        z.extractall(target)
    if not (corpus / "txt").is_dir():
        raise ValueError(f"{archive}: extracted, but {corpus}/txt is missing: not the VCTK archive?")
    return corpus


def read_vctk(corpus: str | Path, speakers: list[str] | None = None,
              text: TextConfig = TextConfig()) -> list[Utterance]:
    """Every transcribed utterance of `speakers` (default: all) whose audio is there."""
    corpus = Path(corpus)
    if not (corpus / "txt").is_dir():
        raise FileNotFoundError(f"{corpus / 'txt'}: missing; is {corpus} a VCTK-Corpus dir?")
    utts = []
    for spk_dir in sorted(p for p in (corpus / "txt").iterdir() if p.is_dir()):
        if speakers and spk_dir.name not in speakers:
            continue
        for txt in sorted(spk_dir.glob("*.txt")):
            audio = next((corpus / d / spk_dir.name / (txt.stem + ext) for d, ext in AUDIO_DIRS
                          if (corpus / d / spk_dir.name / (txt.stem + ext)).exists()), None)
            if audio is None:
                raise FileNotFoundError(f"{txt}: no audio for it under {' or '.join(d for d, _ in AUDIO_DIRS)}")
            utts.append(utterance(txt.stem, audio, normalize_text(txt.read_text(encoding="utf-8"), text), spk_dir.name))
    if not utts:
        raise ValueError(f"{corpus}: no VCTK utterances{f' for {speakers}' if speakers else ''}")
    return utts


def prepare_vctk(corpus_dir: str | Path, out_dir: str | Path, speakers: list[str] | None = None,
                 text: TextConfig = TextConfig()) -> dict[str, Path]:
    """Write train/dev/test.jsonl (per speaker: every 10th utterance test, the next dev). Never downloads."""
    utts = read_vctk(corpus_dir, speakers, text)
    splits: dict[str, list[Utterance]] = {"train": [], "dev": [], "test": []}
    position: dict[str, int] = {}
    for u in utts:
        k = position[u.speaker] = position.get(u.speaker, -1) + 1
        splits["test" if k % 10 == 0 else "dev" if k % 10 == 1 else "train"].append(u)
    return write_splits(splits, out_dir, text)


CORPUS = register(Corpus("vctk", prepare_vctk, "CSTR VCTK: per speaker every 10th utterance test, the next dev",
                         env="VCTK_DIR", shared="vctk_p239/VCTK-Corpus", download=download_vctk))
locate_vctk = CORPUS.locate  # $VCTK_DIR, else ../shared/corpora/vctk_p239/VCTK-Corpus, else a download
