"""Kaldi data directories, both ways: `wav.scp`, `text`, `utt2spk` (and `spk2utt` on export).

    asr prepare kaldi --corpus data/train_kaldi --out data/mine        # -> data/mine/all.jsonl
    asr kaldi-export --manifest data/an4/train.jsonl --out data/kaldi/train [--audio pipe|copy]

Exports obey Kaldi's `utils/validate_data_dir.sh --no-feats` (tests/kaldi runs it): every file sorted
by utterance id and unique, utt2spk sorted by speaker too (utterance ids get their speaker as a
prefix where the corpus's do not put it first, and `utt2uniq` keeps the corpus's own id, which
import restores), spk2utt matching utt2spk, no `<s>` / `</s>` / `#0` in text, segments inside their
recordings. wav.scp entries are what Kaldi's binaries read: WAV paths as they are; SPHERE, FLAC
and the rest through the pipe Kaldi recipes use (`sph2pipe -f wav -p -c 1 F |`, `flac -c -d -s F |`,
`ffmpeg ... |`), or, with `--audio copy`, as 16-bit WAV copies written into the dir. Import reads
those pipes back to their files; other command pipes are refused.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from ..audio import AudioError, audio_duration, audio_info, read_audio
from ..data import Utterance
from .base import Corpus, normalised, register, write_splits


def _table(path: Path) -> dict[str, str]:
    """`<id> <value>` lines: the id ends at the first white space, a space or a tab (speechocean762's text)."""
    table = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, value = (line.strip().split(maxsplit=1) + [""])[:2]
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
        wavs[key] = _located(_pipe_source(audio, f"{d / 'wav.scp'}: {key}") if audio.endswith("|") else audio, d)
    uniq = _table(d / "utt2uniq") if (d / "utt2uniq").exists() else {}
    if len(set(uniq.values())) < len(uniq):     # Kaldi's perturbed copies share one: not ids of their own
        uniq = {}
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
            utts.append(Utterance(uniq.get(uid, uid), wavs[uid], round(duration(uid), 3), texts[uid],
                                  speakers.get(uid, "")))
            continue
        if uid not in segments:
            raise ValueError(f"{d / 'text'}: utterance {uid} has no entry in segments")
        rec, start, end = segments[uid]
        if rec not in wavs:
            raise ValueError(f"{d / 'segments'}: {uid}: recording {rec} has no entry in wav.scp")
        if end > duration(rec) + 0.01:
            raise ValueError(f"{d / 'segments'}: {uid}: ends at {end:.2f} s, after its recording {rec} "
                             f"({duration(rec):.2f} s)")
        utts.append(Utterance(uniq.get(uid, uid), wavs[rec], round(end - start, 3), texts[uid],
                              speakers.get(uid, ""), start, end))
    return sorted(utts, key=lambda u: u.id)


def _located(audio: str, data_dir: Path) -> str:
    """A wav.scp path as a path from here: relative ones are relative to where the Kaldi recipe runs, the folder
    holding data/ (speechocean762: WAVE/... beside train/), so they are looked for from here, then from the data
    dir and the folders above it."""
    if os.path.isabs(audio) or "://" in audio or Path(audio).exists():
        return audio
    found = next((base / audio for base in (data_dir, data_dir.parent, data_dir.parent.parent)
                  if (base / audio).exists()), None)
    return str(found) if found is not None else audio


# The pipes Kaldi recipes put in wav.scp for audio its binaries cannot read (they read RIFF WAV only).
_PIPES = {".sph": "sph2pipe -f wav -p -c 1 {} |", ".flac": "flac -c -d -s {} |"}
_OTHER_PIPE = "ffmpeg -nostdin -loglevel error -i {} -ac 1 -f wav -acodec pcm_s16le - |"
_PIPE_SOURCES = [re.compile(r"^sph2pipe(?: -[a-z](?: \S+)?)* (\S+|'[^']*') \|$"),
                 re.compile(r"^flac -c -d -s (\S+|'[^']*') \|$"),
                 re.compile(r"^ffmpeg .*?-i (\S+|'[^']*') .*\|$"),
                 re.compile(r"^sox (\S+|'[^']*') -t wav - \|$"),
                 re.compile(r"^cat (\S+|'[^']*') \|$")]


def _pipe_source(command: str, where: str) -> str:
    """The file a known wav.scp pipe decodes (sph2pipe, flac, ffmpeg, sox, cat); other commands are refused."""
    for pattern in _PIPE_SOURCES:
        m = pattern.match(command.strip())
        if m:
            return shlex.split(m.group(1))[0]
    raise ValueError(f"{where} is a command pipe this package cannot read back ({command!r}); give file paths, "
                     f"or one of sph2pipe / flac / ffmpeg / sox / cat on one file")


def _wav_entry(audio: str, out_dir: Path, rec: str, mode: str) -> str:
    """What wav.scp says for `audio`: a WAV path as it is, else a pipe Kaldi recipes use, or (`copy`) a 16-bit
    WAV copy of it in out_dir/wav/."""
    import soundfile as sf

    path = Path(audio)
    try:
        is_wav = audio_info(path).format == "WAV" and path.suffix.lower() == ".wav"
    except AudioError:
        is_wav = False
    if is_wav and " " not in audio:
        return audio
    if mode == "copy":
        target = out_dir / "wav" / f"{rec}.wav"
        target.parent.mkdir(exist_ok=True)
        samples, rate = read_audio(audio)
        sf.write(str(target), samples, rate, subtype="PCM_16")
        return str(target.resolve())
    quoted = shlex.quote(audio)
    if is_wav:
        return f"cat {quoted} |"
    return _PIPES.get(path.suffix.lower(), _OTHER_PIPE).format(quoted)


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


def export_kaldi(utts: list[Utterance], data_dir: str | Path, audio: str = "pipe") -> dict[str, Path]:
    """Write a data dir Kaldi's validate_data_dir.sh accepts: wav.scp, text, utt2spk, spk2utt (speaker = the
    utterance where unknown), `segments` when utterances are spans of recordings, `utt2uniq` when ids had to
    take their speaker as a prefix. `audio`: "pipe" (Kaldi's pipes for non-WAV files) or "copy" (WAV copies)."""
    if audio not in ("pipe", "copy"):
        raise ValueError(f"audio must be pipe or copy, not {audio!r}")
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    for u in utts:
        bad = [w for w in u.text.split() if w in ("<s>", "</s>", "#0")]
        if bad or "\n" in u.text or any(c.isspace() for c in u.id + u.speaker):
            raise ValueError(f"{u.id}: cannot be a Kaldi utterance: "
                             + (f"{bad[0]} in its text" if bad else "whitespace in its id or speaker"))
    speaker = {u.id: u.speaker or u.id for u in utts}
    kid = _kaldi_ids(utts, speaker)
    utts = sorted(utts, key=lambda u: kid[u.id])
    if len({kid[u.id] for u in utts}) < len(utts):
        raise ValueError("utterance ids are not unique")
    spk2utt: dict[str, list[str]] = {}
    for u in utts:
        spk2utt.setdefault(speaker[u.id], []).append(kid[u.id])
    files = {"text": [f"{kid[u.id]} {u.text}" for u in utts],
             "utt2spk": [f"{kid[u.id]} {speaker[u.id]}" for u in utts],
             "spk2utt": [f"{s} {' '.join(ids)}" for s, ids in sorted(spk2utt.items())]}
    if any(kid[u.id] != u.id for u in utts):
        files["utt2uniq"] = [f"{kid[u.id]} {u.id}" for u in utts]
    if any(u.start is not None for u in utts):
        recordings = _recording_ids(utts)
        files["wav.scp"] = sorted(f"{rec} {_wav_entry(a, d, rec, audio)}" for a, rec in recordings.items())
        files["segments"] = [f"{kid[u.id]} {recordings[u.audio]} {u.start or 0.0:.2f} "
                             f"{u.end if u.end is not None else u.duration:.2f}" for u in utts]
    else:
        files["wav.scp"] = [f"{kid[u.id]} {_wav_entry(u.audio, d, kid[u.id], audio)}" for u in utts]
    for name in ("utt2uniq", "segments"):      # a stale one from an earlier export would contradict these
        if name not in files and (d / name).exists():
            (d / name).unlink()
    for name, lines in files.items():
        (d / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return {name: d / name for name in files}


def _kaldi_ids(utts: list[Utterance], speaker: dict[str, str]) -> dict[str, str]:
    """Kaldi's utterance ids: the corpus's where sorting them also sorts their speakers (Kaldi's rule),
    else each prefixed with its speaker (`spk-id`) unless it already starts with it."""
    by_id = sorted(utts, key=lambda u: u.id)
    if [speaker[u.id] for u in by_id] == sorted(speaker[u.id] for u in by_id):
        return {u.id: u.id for u in utts}
    return {u.id: u.id if u.id.startswith(speaker[u.id] + "-") else f"{speaker[u.id]}-{u.id}" for u in utts}


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
    """all.jsonl from a Kaldi data dir, transcripts normalised per `text` (a TextConfig; default: what they ask
    for, asr.corpora.base.normalised)."""
    splits, text = normalised({"all": import_kaldi(corpus)}, text)
    return write_splits(splits, out_dir, text)


register(Corpus("kaldi", prepare_kaldi, "a Kaldi data dir (wav.scp, text, utt2spk, optional segments)"))
