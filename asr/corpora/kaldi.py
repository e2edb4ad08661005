"""Kaldi data directories, both ways: `wav.scp`, `text`, `utt2spk` (and `spk2utt` on export).

    asr prepare kaldi --corpus data/train_kaldi --out data/mine        # -> data/mine/all.jsonl
    asr kaldi-export --manifest data/an4/train.jsonl --out data/kaldi/train

Each file holds `<id> <value>` lines sorted by id, as Kaldi's validate_data_dir.sh expects.
`wav.scp` entries must be file paths (Kaldi's `cmd |` pipes are not run); directories with a
`segments` file (utterances cut from longer recordings) are refused for now.
"""
from __future__ import annotations

from pathlib import Path

from ..audio import AudioError, audio_duration
from ..data import Utterance


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
    """Utterances of a Kaldi data dir (ids, audio paths, transcripts as written, speakers)."""
    d = Path(data_dir)
    for name in ("wav.scp", "text"):
        if not (d / name).exists():
            raise FileNotFoundError(f"{d / name}: missing; a Kaldi data dir needs wav.scp and text")
    if (d / "segments").exists():
        raise ValueError(f"{d / 'segments'}: utterances cut from recordings are not supported yet")
    wavs, texts = _table(d / "wav.scp"), _table(d / "text")
    speakers = _table(d / "utt2spk") if (d / "utt2spk").exists() else {}
    utts = []
    for uid in sorted(texts):
        if uid not in wavs:
            raise ValueError(f"{d / 'text'}: utterance {uid} has no entry in wav.scp")
        audio = wavs[uid]
        if audio.endswith("|"):
            raise ValueError(f"{d / 'wav.scp'}: {uid} is a command pipe ({audio!r}); give file paths")
        try:
            duration = audio_duration(audio)
        except AudioError as e:
            raise AudioError(f"{d / 'wav.scp'}: {uid}: {e}") from e
        utts.append(Utterance(uid, audio, round(duration, 3), texts[uid], speakers.get(uid, "")))
    return utts


def export_kaldi(utts: list[Utterance], data_dir: str | Path) -> dict[str, Path]:
    """Write wav.scp, text, utt2spk and spk2utt (speaker = utterance id where unknown)."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    utts = sorted(utts, key=lambda u: u.id)
    spk = {u.id: u.speaker or u.id for u in utts}
    spk2utt: dict[str, list[str]] = {}
    for u in utts:
        spk2utt.setdefault(spk[u.id], []).append(u.id)
    files = {"wav.scp": [f"{u.id} {u.audio}" for u in utts], "text": [f"{u.id} {u.text}" for u in utts],
             "utt2spk": [f"{u.id} {spk[u.id]}" for u in utts],
             "spk2utt": [f"{s} {' '.join(ids)}" for s, ids in sorted(spk2utt.items())]}
    for name, lines in files.items():
        (d / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return {name: d / name for name in files}


def prepare_kaldi(corpus: str | Path, out_dir: str | Path) -> dict[str, Path]:
    from . import write_splits

    return write_splits({"all": import_kaldi(corpus)}, out_dir)
