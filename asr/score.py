"""Scoring with jiwer: WER and CER, a Kaldi-style summary, per-utterance results and alignments."""
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


@dataclass(frozen=True)
class Score:
    wer: ErrorCounts
    cer: ErrorCounts
    utterances: int

    def summary(self) -> str:
        """Two Kaldi-style lines: `%WER 12.34 [ 123 / 997, 10 ins, 20 del, 93 sub ]` and `%CER ...`."""
        return "\n".join(
            f"%{name} {c.rate:.2f} [ {c.errors} / {c.total}, {c.ins} ins, {c.dels} del, {c.subs} sub ]"
            for name, c in (("WER", self.wer), ("CER", self.cer)))


def _counts(out) -> ErrorCounts:
    total = out.hits + out.substitutions + out.deletions
    return ErrorCounts(out.substitutions + out.deletions + out.insertions, total,
                       out.insertions, out.deletions, out.substitutions)


def _nonempty(texts: list[str]) -> list[str]:
    # jiwer refuses empty strings; an empty hypothesis is all deletions, which "" scores as.
    return [t if t.strip() else "" for t in texts]


def _process(refs: list[str], hyps: list[str]):
    """jiwer's word and character alignments of `hyps` against `refs`."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("nothing to score")
    return (jiwer.process_words(_nonempty(refs), _nonempty(hyps)),
            jiwer.process_characters(_nonempty(refs), _nonempty(hyps)))


def score(refs: list[str], hyps: list[str]) -> Score:
    """WER and CER of `hyps` against `refs` (same order, normalised text)."""
    words, chars = _process(refs, hyps)
    return Score(_counts(words), _counts(chars), len(refs))


def score_dataset(ids: list[str], refs: list[str], hyps: list[str], out_dir: str | Path | None = None) -> Score:
    """Score and, with `out_dir`, write `wer.txt` (summary), `per_utt.tsv` and `alignment.txt` there."""
    words, chars = _process(refs, hyps)
    result = Score(_counts(words), _counts(chars), len(refs))
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "wer.txt").write_text(result.summary() + "\n")
        lines = ["id\terrors\tref_words\tref\thyp"]
        rows = tqdm(zip(ids, refs, hyps, words.alignments), total=len(ids), desc="scoring", unit="utt",
                    leave=False, disable=not sys.stderr.isatty())
        for i, r, h, chunks in rows:
            errors = sum(max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx)
                         for c in chunks if c.type != "equal")
            lines.append(f"{i}\t{errors}\t{len(r.split())}\t{r}\t{h}")
        (out / "per_utt.tsv").write_text("\n".join(lines) + "\n")
        text = jiwer.visualize_alignment(words, show_measures=True, skip_correct=False)
        for n, i in enumerate(ids):  # jiwer numbers sentences from 1; name them by utterance id
            text = text.replace(f"=== SENTENCE {n + 1} ===", f"=== {i} ===", 1)
        (out / "alignment.txt").write_text(text)
    return result


def read_hyps(path: str | Path) -> dict[str, str]:
    """`id<TAB>text` lines (the decode stage's hyp.txt) -> {id: text}."""
    hyps = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        uid, _, text = line.partition("\t")
        hyps[uid] = text.strip()
    return hyps
