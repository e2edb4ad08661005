"""Scoring with jiwer: WER and CER, a Kaldi-style summary, per-utterance results and alignments; a decode
scored against its manifest, or two transcript files of any form (asr.transcripts) paired by id."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import jiwer
from tqdm import tqdm


@dataclass(frozen=True)
class ErrorCounts:
    errors: int
    total: int          # reference words (or characters)
    ins: int
    dels: int
    subs: int

    @property
    def rate(self) -> float:
        """Error rate in percent."""
        return 100.0 * self.errors / max(self.total, 1)


UNITS = ("word", "char")     # what a word is: space-separated, or each character (scripts written without spaces)


@dataclass(frozen=True)
class Score:
    wer: ErrorCounts
    cer: ErrorCounts
    utterances: int
    unit: str = "word"  # char: words are characters (the WER counts characters, CER is the headline)

    @property
    def headline(self) -> ErrorCounts:
        """What this score is judged by: WER, or CER where characters are the words."""
        return self.cer if self.unit == "char" else self.wer

    def summary(self) -> str:
        """Two Kaldi-style lines: `%WER 12.34 [ 123 / 997, 10 ins, 20 del, 93 sub ]` and `%CER ...`, the
        headline first."""
        lines = [("WER", self.wer), ("CER", self.cer)]
        return "\n".join(
            f"%{name} {c.rate:.2f} [ {c.errors} / {c.total}, {c.ins} ins, {c.dels} del, {c.subs} sub ]"
            for name, c in (lines[::-1] if self.unit == "char" else lines))


def _counts(out) -> ErrorCounts:
    total = out.hits + out.substitutions + out.deletions
    return ErrorCounts(out.substitutions + out.deletions + out.insertions, total,
                       out.insertions, out.deletions, out.substitutions)


def _nonempty(texts: list[str]) -> list[str]:
    # jiwer refuses empty strings; an empty hypothesis is all deletions, which "" scores as.
    return [t if t.strip() else "" for t in texts]


def _as_words(texts: list[str], unit: str) -> list[str]:
    """Texts as space-separated words of `unit`: as they are, or each character a word (spaces left out)."""
    if unit not in UNITS:
        raise ValueError(f"word unit must be one of {', '.join(UNITS)}, not {unit!r}")
    return texts if unit == "word" else [" ".join(t.replace(" ", "")) for t in texts]


def _process(refs: list[str], hyps: list[str], unit: str = "word"):
    """jiwer's word (of `unit`) and character alignments of `hyps` against `refs`."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("nothing to score")
    return (jiwer.process_words(_nonempty(_as_words(refs, unit)), _nonempty(_as_words(hyps, unit))),
            jiwer.process_characters(_nonempty(refs), _nonempty(hyps)))


def score(refs: list[str], hyps: list[str], unit: str = "word") -> Score:
    """WER and CER of `hyps` against `refs` (same order, normalised text); `unit` "char": each character is a
    word (scripts written without spaces)."""
    words, chars = _process(refs, hyps, unit)
    return Score(_counts(words), _counts(chars), len(refs), unit)


def score_dataset(ids: list[str], refs: list[str], hyps: list[str], out_dir: str | Path | None = None,
                  unit: str = "word") -> Score:
    """Score and, with `out_dir`, write `wer.txt` (summary), `per_utt.tsv` and `alignment.txt` there."""
    words, chars = _process(refs, hyps, unit)
    result = Score(_counts(words), _counts(chars), len(refs), unit)
    refs, hyps = _as_words(refs, unit), _as_words(hyps, unit)     # per_utt.tsv and alignment.txt in its words
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "wer.txt").write_text(result.summary() + "\n", encoding="utf-8")
        lines = ["id\terrors\tref_words\tref\thyp"]
        rows = tqdm(zip(ids, refs, hyps, words.alignments), total=len(ids), desc="scoring", unit="utt",
                    leave=False, disable=not sys.stderr.isatty())
        for i, r, h, chunks in rows:
            errors = sum(max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx)
                         for c in chunks if c.type != "equal")
            lines.append(f"{i}\t{errors}\t{len(r.split())}\t{r}\t{h}")
        (out / "per_utt.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        text = jiwer.visualize_alignment(words, show_measures=True, skip_correct=False)
        for n, i in enumerate(ids):  # jiwer numbers sentences from 1; name them by utterance id
            text = text.replace(f"=== SENTENCE {n + 1} ===", f"=== {i} ===", 1)
        (out / "alignment.txt").write_text(text, encoding="utf-8")
    return result



def score_decode(manifest: str | Path, hyp: str | Path, text=None, out_dir: str | Path | None = None) -> Score:
    """`asr decode`'s hyp.txt against its manifest: both normalised by `text` (a TextConfig; default: what
    prepare recorded beside the manifest), as the training targets were; files as `score_dataset` writes them
    into `out_dir` (default: beside hyp.txt). Every utterance of the manifest needs a hypothesis."""
    from .config import text_config
    from .data import read_manifest
    from .text import normalize_text
    from .transcripts import read_transcripts

    utts = read_manifest(manifest)
    hyps = read_transcripts(hyp, "tsv")
    missing = [u.id for u in utts if u.id not in hyps]
    if missing:
        raise ValueError(f"{hyp}: no hypothesis for {len(missing)} utterance(s) of {manifest}, e.g. {missing[0]}")
    text = text or text_config(None, manifest)
    return score_dataset([u.id for u in utts], [normalize_text(u.text, text) for u in utts],
                         [normalize_text(hyps[u.id], text) for u in utts], out_dir or Path(hyp).parent,
                         text.word_unit)


def score_files(ref: str | Path, hyp: str | Path | None = None, fmt: str | None = None, text=None,
                out_dir: str | Path | None = None) -> tuple[Score, list[str]]:
    """Two transcript files of any asr.transcripts form (detected unless `fmt`), or one JSONL holding both `text`
    and `pred_text` (NeMo's), paired by id; both normalised by `text` (a TextConfig; None: as written). Returns
    the score and notes naming what only one side has (a reference without a hypothesis counts as all deletions)."""
    from dataclasses import replace

    from .text import normalize_text
    from .transcripts import match, read_transcripts

    refs = read_transcripts(ref, fmt)
    hyps = read_transcripts(hyp or ref, fmt, hypotheses=True)
    if hyp is None and hyps == refs:
        raise ValueError(f"{ref} alone has no hypotheses (pred_text); give REF HYP")
    if not set(refs) & set(hyps):
        raise ValueError(f"{ref} and {hyp} share no utterance id (e.g. {next(iter(refs), '-')!r} and "
                         f"{next(iter(hyps), '-')!r})")
    matched = match(refs, hyps)
    if text is not None:
        matched = replace(matched, refs=[normalize_text(t, text) for t in matched.refs],
                          hyps=[normalize_text(t, text) for t in matched.hyps])
    result = score_dataset(matched.ids, matched.refs, matched.hyps, out_dir or Path(hyp or ref).parent,
                           text.word_unit if text is not None else "word")
    return result, [*matched.notes(), f"{len(matched.ids)} utterances scored"]
