"""Kaldi data directories, both ways: `wav.scp`, `text`, `utt2spk` (and `spk2utt` on export).

    asr prepare kaldi --corpus data/train_kaldi --out data/mine        # -> data/mine/all.jsonl
    asr kaldi-export --manifest data/an4/train.jsonl --out data/kaldi/train

Each file holds `<id> <value>` lines sorted by id, as Kaldi's validate_data_dir.sh expects.
`wav.scp` entries must be file paths (Kaldi's `cmd |` pipes are not run). With a `segments`
file, utterances are spans of longer recordings (manifest entries with `start` / `end`).
"""
from __future__ import annotations

from pathlib import Path

from ..audio import AudioError, audio_duration
from ..data import Utterance
from .base import Corpus, register, write_splits


def _table(path: Path) -> dict[str, str]:
    table = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if key in table:
            raise ValueError(f"{path}:{lineno}: id {key} appears twice")
        table[key] = value.strip()
    return table


def import_kaldi(data_dir: str | Path) -> list[Utterance]:
    """Utterances of a Kaldi data dir (ids, audio paths, transcripts as written, speakers).

    With a `segments` file (`<utt> <recording> <start> <end>`, seconds), wav.scp lists recordings
    and each utterance is its span of one; without, wav.scp lists the utterances' own files.
    """
    d = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (d / name).exists():
            raise FileNotFoundError(f"{d / name}: missing; a Kaldi data dir needs wav.scp and text")
    wavs, texts = _table(d / "wav.scp"), _table(d / "text")
    speakers = _table(d / "utt2spk") if (d / "utt2spk").exists() else {}
    segments = _segments(d / "segments") if (d / "segments").exists() else None
    for key, audio in wavs.items():
        if audio.endswith("|"):
            raise ValueError(f"{d / 'wav.scp'}: {key} is a command pipe ({audio!r}); give file paths")
    durations: dict[str, float] = {}

    def duration(key: str) -> float:   # each recording's header read once
        if key not in durations:
            try:
                durations[key] = audio_duration(wavs[key])
            except AudioError as e:
                raise AudioError(f"{d / 'wav.scp'}: {key}: {e}") from e
        return durations[key]

    utts = []
    for uid in sorted(texts):
        if segments is None:
            if uid not in wavs:
                raise ValueError(f"{d / 'text'}: utterance {uid} has no entry in wav.scp")
            utts.append(Utterance(uid, wavs[uid], round(duration(uid), 3), texts[uid], speakers.get(uid, "")))
            continue
        if uid not in segments:
            raise ValueError(f"{d / 'text'}: utterance {uid} has no entry in segments")
        rec, start, end = segments[uid]
        if rec not in wavs:
            raise ValueError(f"{d / 'segments'}: {uid}: recording {rec} has no entry in wav.scp")
        if end > duration(rec) + 0.01:
            raise ValueError(f"{d / 'segments'}: {uid}: ends at {end:.2f} s, after its recording {rec} "
                             f"({duration(rec):.2f} s)")
        utts.append(Utterance(uid, wavs[rec], round(end - start, 3), texts[uid], speakers.get(uid, ""), start, end))
    return utts


def _segments(path: Path) -> dict[str, tuple[str, float, float]]:
    """`<utt> <recording> <start> <end>` lines -> {utt: (recording, start, end)}; bad lines named."""
    out = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            uid, rec, start, end = fields[0], fields[1], float(fields[2]), float(fields[3])
            if len(fields) != 4:
                raise ValueError
        except (ValueError, IndexError):
            expected = "'<utterance> <recording> <start> <end>'"
            raise ValueError(f"{path}:{lineno}: expected {expected}, got {line!r}") from None
        if not 0 <= start < end:
            raise ValueError(f"{path}:{lineno}: {uid}: start {start} must be >= 0 and before end {end}")
        out[uid] = (rec, start, end)
    return out


def export_kaldi(utts: list[Utterance], data_dir: str | Path) -> dict[str, Path]:
    """Write wav.scp, text, utt2spk and spk2utt (speaker = utterance id where unknown), and `segments`
    when utterances are spans of recordings (those are named after their files' stems)."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    utts = sorted(utts, key=lambda u: u.id)
    spk = {u.id: u.speaker or u.id for u in utts}
    spk2utt: dict[str, list[str]] = {}
    for u in utts:
        spk2utt.setdefault(spk[u.id], []).append(u.id)
    files = {"text": [f"{u.id} {u.text}" for u in utts], "utt2spk": [f"{u.id} {spk[u.id]}" for u in utts],
             "spk2utt": [f"{s} {' '.join(ids)}" for s, ids in sorted(spk2utt.items())]}
    if any(u.start is not None for u in utts):
        recordings = _recording_ids(utts)
        files["wav.scp"] = sorted(f"{rec} {audio}" for audio, rec in recordings.items())
        files["segments"] = [f"{u.id} {recordings[u.audio]} {u.start or 0.0:.2f} "
                             f"{u.end if u.end is not None else u.duration:.2f}" for u in utts]
    else:
        files["wav.scp"] = [f"{u.id} {u.audio}" for u in utts]
    for name, lines in files.items():
        (d / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return {name: d / name for name in files}


def _recording_ids(utts: list[Utterance]) -> dict[str, str]:
    """audio path -> a recording id: the file's stem, made unique."""
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for audio in sorted({u.audio for u in utts}):
        rec, n = Path(audio).stem, 1
        while rec in taken:
            n += 1
            rec = f"{Path(audio).stem}-{n}"
        ids[audio] = rec
        taken.add(rec)
    return ids


def prepare_kaldi(corpus: str | Path, out_dir: str | Path, text=None) -> dict[str, Path]:
    """all.jsonl from a Kaldi data dir, transcripts normalised per `text` (a TextConfig; default: the default)."""
    from dataclasses import replace

    from ..text import TextConfig, normalize_text

    text = text or TextConfig()
    utts = [replace(u, text=normalize_text(u.text, text)) for u in import_kaldi(corpus)]
    return write_splits({"all": utts}, out_dir, text)


register(Corpus("kaldi", prepare_kaldi, "a Kaldi data dir (wav.scp, text, utt2spk, optional segments)"))
