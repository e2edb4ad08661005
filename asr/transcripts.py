"""Transcript files of other tools, read and paired by id for scoring: Kaldi / ESPnet `text` (id words),
NIST sclite `trn` (words (id)), TSV (id<TAB>words, what `asr decode` writes) and JSONL manifests (ours,
NeMo's `text` and `pred_text`). Light on imports: the command line reads TRANSCRIPT_FORMATS."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

TRANSCRIPT_FORMATS = ("kaldi", "trn", "tsv", "jsonl")
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
