"""Transcripts: `Transcript` and `Word` (what transcription gives: text, duration, words with times and
confidences), and every file form of them, read and written, in one home (whisper's `utils.get_writer` is the
model). Light on imports: the command line reads the format names when it builds its parser.

One file per transcribed input (`asr transcribe --format`, `--out-dir`; the server's text, srt and vtt):
    txt     the text                          json    path, text, duration, words with times and confidences
    srt     SubRip cues                       vtt     WebVTT cues (what browsers' <track> reads)
    tsv     whisper's start<TAB>end<TAB>text, times in integer milliseconds
`render(result, fmt)` gives one as text; `get_writer(fmt, out_dir)` writes each to <out_dir>/<stem>.<fmt>.

Many utterances to a file, keyed by id (`asr decode`'s hyp.txt, the files `asr score` pairs):
    kaldi   id words (Kaldi / ESPnet `text`)  trn     words (id) (NIST sclite)
    tsv     id<TAB>words                      jsonl   {"id", "text"} (ours; NeMo's `text` / `pred_text`)
`read_transcripts(path)` detects the form; `write_transcripts(path, {id: text}, fmt)` writes any of them.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

OUTPUT_FORMATS = ("txt", "json", "srt", "vtt", "tsv")       # one file per input (whisper's set)
TRANSCRIPT_FORMATS = ("kaldi", "trn", "tsv", "jsonl")      # many utterances by id


@dataclass(frozen=True)
class Word:
    """One recognised word and where it is."""
    text: str
    start: float        # seconds
    end: float          # seconds
    confidence: float   # mean posterior of its characters at the frames that emit them, 0..1


@dataclass(frozen=True)
class Alternative:
    """One of a transcript's n best (DecodingOptions.nbest): its text and the beam search's score for it."""
    text: str
    score: float


@dataclass(frozen=True)
class Transcript:
    """What transcribing one input gives (`load_model(...).transcribe(...)`)."""
    text: str
    duration: float                 # seconds of audio
    path: str | None = None         # the file, when the input was one
    words: tuple[Word, ...] = ()    # each with start, end (seconds) and confidence
    error: str | None = None        # why the input could not be transcribed (transcribe(..., errors="keep"))
    alternatives: tuple[Alternative, ...] = ()   # with nbest > 1: the n best, best (.text) first


# -- one file per transcribed input


def subtitle_cues(words: Iterable[Word], max_words: int = 8, max_seconds: float = 5.0,
                  pause: float = 0.8) -> list[list[Word]]:
    """Words grouped into subtitle cues: a new cue after a pause, `max_words` or `max_seconds`."""
    cues: list[list[Word]] = []
    for w in words:
        if (not cues or len(cues[-1]) >= max_words or w.start - cues[-1][-1].end > pause
                or w.end - cues[-1][0].start > max_seconds):
            cues.append([])
        cues[-1].append(w)
    return cues


def _stamp(t: float, decimal: str) -> str:
    ms = round(t * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{decimal}{ms % 1000:03d}"


def separator_of(result: Transcript) -> str:
    """What joins the words of `result` in its text: a space, or nothing where its words are characters
    (a script written without spaces)."""
    return "" if len(result.words) > 1 and " " not in result.text else " "


def cue_text(cue: list[Word], separator: str = " ") -> str:
    return separator.join(w.text for w in cue)


def format_srt(words: Iterable[Word], separator: str = " ", **cue_options) -> str:
    """SubRip subtitles (`1`, `00:00:01,000 --> 00:00:02,500`, the words)."""
    return "".join(f"{k}\n{_stamp(c[0].start, ',')} --> {_stamp(c[-1].end, ',')}\n{cue_text(c, separator)}\n\n"
                   for k, c in enumerate(subtitle_cues(words, **cue_options), 1))


def format_vtt(words: Iterable[Word], separator: str = " ", **cue_options) -> str:
    """WebVTT subtitles, what browsers' <track> elements read (`00:00:01.000 --> 00:00:02.500`)."""
    return "WEBVTT\n\n" + "".join(f"{_stamp(c[0].start, '.')} --> {_stamp(c[-1].end, '.')}\n"
                                    f"{cue_text(c, separator)}\n\n" for c in subtitle_cues(words, **cue_options))


def format_tsv(words: Iterable[Word], separator: str = " ", **cue_options) -> str:
    """whisper's tsv: a `start<TAB>end<TAB>text` header, then one cue a line, times in integer milliseconds."""
    return "start\tend\ttext\n" + "".join(f"{round(c[0].start * 1000)}\t{round(c[-1].end * 1000)}\t"
                                          f"{cue_text(c, separator)}\n"
                                          for c in subtitle_cues(words, **cue_options))


def with_digits(result: Transcript, language: str) -> Transcript:
    """The transcript with spelled numbers written as digits ("TWENTY THREE" -> "23"), by text2num's rules for
    `language` (en, fr, es, pt, de, it, nl, ...): for subtitles and display, never before scoring. Each number
    becomes one word spanning the times of the words it was spelled in; other words stay as they are."""
    from difflib import SequenceMatcher

    from text_to_num import alpha2digit

    words = list(result.words) or [Word(w, 0.0, 0.0, 1.0) for w in result.text.split()]
    if not words:
        return result
    try:
        out = alpha2digit(" ".join(w.text.lower() for w in words), language).split()
    except ValueError as e:
        raise ValueError(f"digits: text2num cannot read numbers in language {language!r} ({e})") from None
    merged: list[Word] = []
    for op, i1, i2, j1, j2 in SequenceMatcher(None, [w.text.lower() for w in words], out, autojunk=False).get_opcodes():
        if op == "equal":
            merged += words[i1:i2]
        elif i2 > i1 and j2 > j1:          # words spelled out -> the digits, each number one word over its span
            merged += _numbers(words[i1:i2], out[j1:j2], language)
        else:
            merged += words[i1:i2]
    return replace(result, text=separator_of(result).join(w.text for w in merged),
                   words=tuple(merged) if result.words else ())


def _numbers(words: list[Word], digits: list[str], language: str) -> list[Word]:
    """Spelled words -> the numbers text2num wrote for them, each a Word over the words it read (the longest run
    that reads as it); all of them one Word where they cannot be told apart."""
    from text_to_num import alpha2digit

    def span(run: list[Word], text: str) -> Word:
        return Word(text, run[0].start, run[-1].end, min(w.confidence for w in run))

    out, i = [], 0
    for k, number in enumerate(digits):
        ends = [j for j in range(len(words), i, -1)
                if alpha2digit(" ".join(w.text.lower() for w in words[i:j]), language, threshold=0).split() == [number]]
        if not ends or (k == len(digits) - 1 and ends[0] != len(words)):
            return [span(words, " ".join(digits))]
        out.append(span(words[i:ends[0]], number))
        i = ends[0]
    return out if i == len(words) else [span(words, " ".join(digits))]


def transcript_json(result: Transcript) -> dict:
    """A Transcript as the json form holds it: path, text, duration, words with times (to 10 ms)."""
    out = {"path": result.path, "text": result.text, "duration": round(result.duration, 3),
           "words": [{**asdict(w), "start": round(w.start, 2), "end": round(w.end, 2)} for w in result.words]}
    if result.alternatives:
        out["alternatives"] = alternatives_json(result)
    return out


def alternatives_json(result: Transcript) -> list[dict]:
    """A transcript's n best as JSON holds them (ours and the server's verbose_json): text and score."""
    return [{"text": a.text, "score": round(a.score, 3)} for a in result.alternatives]


_RENDER = {"txt": lambda r: r.text + "\n",
           "json": lambda r: json.dumps(transcript_json(r), ensure_ascii=False) + "\n",   # UTF-8, any script
           "srt": lambda r: format_srt(r.words, separator_of(r)),
           "vtt": lambda r: format_vtt(r.words, separator_of(r)),
           "tsv": lambda r: format_tsv(r.words, separator_of(r))}


def _output_format(fmt: str) -> str:
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r} (one of {', '.join(OUTPUT_FORMATS)})")
    return fmt


def render(result: Transcript, fmt: str = "txt") -> str:
    """One Transcript in an OUTPUT_FORMATS form, as the text of its file."""
    return _RENDER[_output_format(fmt)](result)


class TranscriptWriter:
    """Writes each Transcript it is given to <out_dir>/<input stem>.<fmt> (whisper's ResultWriter); a second
    input of the same stem (a.wav and a.flac, or two folders' a.wav) gets <stem>-2.<fmt>, and so on."""

    def __init__(self, fmt: str, out_dir: str | Path):
        self.fmt, self.out_dir = _output_format(fmt), Path(out_dir)
        self.written: set[Path] = set()

    def target(self, result: Transcript) -> Path:
        stem = Path(result.path or "transcript").stem
        path, n = self.out_dir / f"{stem}.{self.fmt}", 1
        while path in self.written:
            n += 1
            path = self.out_dir / f"{stem}-{n}.{self.fmt}"
        return path

    def __call__(self, result: Transcript) -> Path:
        """Write `result`; returns the file written."""
        path = self.target(result)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(result, self.fmt), encoding="utf-8")
        self.written.add(path)
        return path


def get_writer(fmt: str, out_dir: str | Path) -> TranscriptWriter:
    """The writer of `fmt` files (an OUTPUT_FORMATS entry) into `out_dir`."""
    return TranscriptWriter(fmt, out_dir)


# -- many utterances to a file, by id

_trn_line = re.compile(r"^(.*?)\s*\(([^()\s]+)\)\s*$")
_ID_KEYS = ("id", "utt_id", "utterance_id", "audio_filepath", "audio")


def detect_format(path: str | Path) -> str:
    """The TRANSCRIPT_FORMATS entry `path` is written in, from its first lines."""
    lines = [line for line in _lines(path)[:50] if line.strip()]
    if not lines:
        return "tsv"
    if all(line.lstrip().startswith("{") for line in lines):
        return "jsonl"
    if all(_trn_line.match(line) for line in lines):
        return "trn"
    return "tsv" if any("\t" in line for line in lines) else "kaldi"


def _lines(path: str | Path) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read it as a UTF-8 transcript file ({e})") from e


def read_transcripts(path: str | Path, fmt: str | None = None, hypotheses: bool = False) -> dict[str, str]:
    """{id: text} from a transcript file in any TRANSCRIPT_FORMATS form (detected unless `fmt`). In JSONL the
    id is `id` (or `utt_id`, or NeMo's `audio_filepath`) and the text `text`, or `pred_text` first when
    `hypotheses` (NeMo's transcribe output carries both)."""
    fmt = fmt or detect_format(path)
    if fmt not in TRANSCRIPT_FORMATS:
        raise ValueError(f"{path}: unknown transcript format {fmt!r} (one of {', '.join(TRANSCRIPT_FORMATS)})")
    out: dict[str, str] = {}
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        if fmt == "jsonl":
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not a JSON object ({e.msg})") from None
            key = next((k for k in _ID_KEYS if isinstance(entry, dict) and k in entry), None)
            field = next((k for k in (("pred_text", "text") if hypotheses else ("text",))
                          if isinstance(entry, dict) and k in entry), None)
            if key is None or field is None:
                raise ValueError(f"{where}: a JSON line needs an id ({' / '.join(_ID_KEYS)}) and "
                                 f"{'pred_text or text' if hypotheses else 'text'}")
            uid, text = str(entry[key]), str(entry[field] or "")
        elif fmt == "trn":
            m = _trn_line.match(line)
            if m is None:
                raise ValueError(f"{where}: a trn line is `words (id)`, not {line[:60]!r}")
            text, uid = m.group(1), m.group(2)
        elif fmt == "tsv":
            uid, _, text = line.partition("\t")
        else:
            uid, _, text = line.strip().partition(" ")
        uid = uid.strip()
        if uid in out:
            raise ValueError(f"{where}: utterance {uid!r} a second time")
        out[uid] = " ".join(text.split())
    return out


@dataclass(frozen=True)
class Matched:
    """References and hypotheses paired by id; what only one side has, named."""
    ids: list[str]
    refs: list[str]
    hyps: list[str]
    no_hypothesis: list[str]      # reference ids the hypotheses lack: scored as empty hypotheses (all deletions)
    no_reference: list[str]       # hypothesis ids with no reference: not scored

    def notes(self) -> list[str]:
        def some(ids):
            return ", ".join(ids[:5]) + (f", ... ({len(ids) - 5} more)" if len(ids) > 5 else "")
        lines = []
        if self.no_hypothesis:
            lines.append(f"{len(self.no_hypothesis)} of {len(self.ids)} reference utterance(s) have no hypothesis, "
                         f"scored as empty (all deletions): {some(self.no_hypothesis)}")
        if self.no_reference:
            lines.append(f"{len(self.no_reference)} hypothesis utterance(s) have no reference, not scored: "
                         f"{some(self.no_reference)}")
        return lines


def match(refs: dict[str, str], hyps: dict[str, str]) -> Matched:
    """Pair by id in the references' order, whatever order either file is in."""
    ids = list(refs)
    return Matched(ids, [refs[i] for i in ids], [hyps.get(i, "") for i in ids], [i for i in ids if i not in hyps],
                   [i for i in hyps if i not in refs])


def write_transcripts(path: str | Path, transcripts: dict[str, str], fmt: str = "tsv") -> Path:
    """{id: text} as a TRANSCRIPT_FORMATS file (tsv: `asr decode`'s hyp.txt), in the dict's order, UTF-8."""
    forms = {"kaldi": lambda i, t: f"{i} {t}".rstrip(), "trn": lambda i, t: f"{t} ({i})",
             "tsv": lambda i, t: f"{i}\t{t}",
             "jsonl": lambda i, t: json.dumps({"id": i, "text": t}, ensure_ascii=False)}
    if fmt not in forms:
        raise ValueError(f"{path}: unknown transcript format {fmt!r} (one of {', '.join(TRANSCRIPT_FORMATS)})")
    if fmt != "jsonl":                  # one line an utterance, its id one field of it
        bad = next((i for i in transcripts if not _one_field(i, fmt)), None)
        if bad is not None:
            raise ValueError(f"{path}: utterance id {bad!r} cannot be written as {fmt} (it would not read back)")
        transcripts = {i: " ".join(t.split()) for i, t in transcripts.items()}
    path = Path(path)
    path.write_text("".join(forms[fmt](i, t) + "\n" for i, t in transcripts.items()), encoding="utf-8")
    return path


def _one_field(uid: str, fmt: str) -> bool:
    """Whether `uid` reads back as one id from a `fmt` line: no tab or line break in tsv, no space at all else
    (nor a parenthesis in trn)."""
    if fmt == "tsv":
        return bool(uid.strip()) and uid == uid.strip() and not any(c in uid for c in "\t\r\n")
    return uid.split() == [uid] and not (fmt == "trn" and ("(" in uid or ")" in uid))
