"""Your own data: a folder of audio files with same-named .txt transcripts, or a CSV/TSV of path,text.

    asr prepare folder --corpus my_recordings/ --out data/mine      # a.wav + a.txt, b.flac + b.txt, ...
    asr prepare csv --corpus list.csv --out data/mine               # header: path,text (TSV: path<TAB>text)

Transcripts are normalised (`asr.text.normalize_text`); relative CSV paths are taken from the
CSV's folder. Both write `<out>/all.jsonl`.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..data import Utterance
from ..text import TextConfig, normalize_text
from .base import Corpus, normalised, register, utterance, write_splits

# soundfile's, then what FFmpeg (PyAV) reads: phones' m4a, browsers' webm / opus, video files' audio
AUDIO_SUFFIXES = (".wav", ".flac", ".sph", ".ogg", ".mp3", ".m4a", ".aac", ".webm", ".opus", ".mp4", ".mkv", ".amr")


def read_folder(folder: str | Path, text: TextConfig | None = TextConfig()) -> list[Utterance]:
    """Every audio file under `folder` (recursively) with a .txt of the same name beside it; transcripts
    normalised per `text` (None: as written)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    audio = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    missing = [p for p in audio if not p.with_suffix(".txt").exists()]
    if missing:
        raise ValueError(f"{folder}: {len(missing)} audio file(s) without a transcript, e.g. {missing[0]} "
                         f"(expected {missing[0].with_suffix('.txt').name} beside it)")
    if not audio:
        raise ValueError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    # files in sub-folders (speaker/utt.wav, the common layout): the first sub-folder is the speaker
    return [utterance(str(p.relative_to(folder).with_suffix("")).replace("/", "_"), p,
                      _normalized(p.with_suffix(".txt").read_text(encoding="utf-8"), text),
                      p.relative_to(folder).parts[0] if len(p.relative_to(folder).parts) > 1 else "")
            for p in audio]


def read_csv(path: str | Path, text: TextConfig | None = TextConfig()) -> list[Utterance]:
    """Rows of a CSV (or TSV, by extension) with `path` and `text` columns (and `speaker`, optional); ids from
    the file names; transcripts normalised per `text` (None: as written)."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        if not reader.fieldnames or not {"path", "text"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs a header with 'path' and 'text' columns, found {reader.fieldnames}")
        utts, seen = [], set()
        for line, row in enumerate(reader, 2):
            audio = Path(row["path"])
            audio = audio if audio.is_absolute() else path.parent / audio
            uid = audio.stem
            if uid in seen:
                uid = f"{uid}_{line}"
            seen.add(uid)
            utts.append(utterance(uid, audio, _normalized(row["text"] or "", text), row.get("speaker") or ""))
    return utts


def _normalized(raw: str, text: TextConfig | None) -> str:
    return raw.strip() if text is None else normalize_text(raw, text)


def prepare_folder(corpus: str | Path, out_dir: str | Path, text: TextConfig | None = None) -> dict[str, Path]:
    """all.jsonl of an audio folder, transcripts normalised per `text` (default: what they ask for)."""
    splits, text = normalised({"all": read_folder(corpus, None)}, text)
    return write_splits(splits, out_dir, text)


def prepare_csv(corpus: str | Path, out_dir: str | Path, text: TextConfig | None = None) -> dict[str, Path]:
    """all.jsonl of a CSV / TSV list, transcripts normalised per `text` (default: what they ask for)."""
    splits, text = normalised({"all": read_csv(corpus, None)}, text)
    return write_splits(splits, out_dir, text)


register(Corpus("folder", prepare_folder, "a folder of audio files with same-named .txt transcripts"))
register(Corpus("csv", prepare_csv, "a CSV (path,text) or TSV list of audio files"))
