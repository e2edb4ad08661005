"""`asr score`: WER / CER of a recipe's decode against its manifest, or of two transcript files of any form;
a recipe's score lines go into its RESULTS.md."""
from __future__ import annotations

import sys
from pathlib import Path

from .commands import text_config


def cmd_score(args) -> None:
    from ..data import read_manifest
    from ..score import read_hyps, score_dataset
    from ..text import normalize_text

    if args.ref is not None:
        return score_files(args)
    if not (args.manifest and args.hyp):
        sys.exit("asr score: give REF HYP (two transcript files) or --manifest M --hyp H")
    utts = read_manifest(args.manifest)
    hyps = read_hyps(args.hyp)
    missing = [u.id for u in utts if u.id not in hyps]
    if missing:
        sys.exit(f"{args.hyp}: no hypothesis for {len(missing)} utterance(s) of {args.manifest}, e.g. {missing[0]}")
    out = args.out or Path(args.hyp).parent
    text = text_config(args, args.manifest)  # references and hypotheses normalised alike, as training targets were
    result = score_dataset([u.id for u in utts], [normalize_text(u.text, text) for u in utts],
                           [normalize_text(hyps[u.id], text) for u in utts], out)
    if args.results:          # recorded before anything is printed: a closed stdout cannot lose it
        log_result(args, result)
    print(result.summary())
    if args.results:
        print(f"logged in {args.results}")


def score_files(args) -> None:
    """`asr score REF [HYP]`: two transcript files of any TRANSCRIPT_FORMATS form (or one JSONL with text and
    pred_text), paired by id; what only one of them has is named."""
    from dataclasses import replace

    from ..score import score_dataset
    from ..text import normalize_text
    from ..transcripts import match, read_transcripts

    if args.manifest or args.hyp:
        sys.exit("asr score: give REF HYP or --manifest/--hyp, not both")
    if args.results:
        sys.exit("asr score: --results logs a recipe's decode (--manifest/--hyp), not REF HYP files")
    try:
        refs = read_transcripts(args.ref, args.format)
        hyps = read_transcripts(args.hyp_file or args.ref, args.format, hypotheses=True)
    except ValueError as e:
        sys.exit(f"asr score: {e}")
    if args.hyp_file is None and hyps == refs:
        sys.exit(f"asr score: {args.ref} alone has no hypotheses (pred_text); give REF HYP")
    if not set(refs) & set(hyps):
        sys.exit(f"asr score: {args.ref} and {args.hyp_file} share no utterance id "
                 f"(e.g. {next(iter(refs), '-')!r} and {next(iter(hyps), '-')!r})")
    matched = match(refs, hyps)
    if not args.no_normalize:
        text = text_config(args)
        matched = replace(matched, refs=[normalize_text(t, text) for t in matched.refs],
                          hyps=[normalize_text(t, text) for t in matched.hyps])
    out = args.out or Path(args.hyp_file or args.ref).parent
    result = score_dataset(matched.ids, matched.refs, matched.hyps, out)
    for line in matched.notes():
        print(line)
    print(f"{len(matched.ids)} utterances scored")
    print(result.summary())


def log_result(args, result) -> None:
    """Append the score to the recipe's RESULTS.md (date, config, decoding, WER/CER, device, training time)."""
    import datetime

    from ..report import append_result, read_log

    exp = Path(args.exp) if args.exp else Path(args.hyp).parent.parent
    log = read_log(exp)
    mode = "beam + LM" if Path(args.hyp).parent.name.endswith("_lm") else "greedy"
    if Path(args.manifest).stem != "test":       # a recipe with several test sets (librispeech: test-clean, -other)
        mode += f", {Path(args.manifest).stem}"
    append_result(Path(args.results), {
        "date": datetime.date.today().isoformat(), "config": args.config or "-", "decoding": mode,
        "wer": f"{result.wer.rate:.2f}", "cer": f"{result.cer.rate:.2f}",
        "device": log[-1].get("device", "?") if log else "?",
        "wall": f"{log[-1].get('elapsed', 0) / 60:.1f} min" if log else "?", "exp": exp.name})
