"""`asr score`: WER / CER of a recipe's decode against its manifest, or of two transcript files of any form;
a recipe's score lines go into its RESULTS.md.

    asr score --manifest T --hyp D/hyp.txt [--results RESULTS.md]   %WER / %CER, per-utterance results in D
    asr score REF HYP                              Kaldi text, sclite trn, TSV, JSONL (NeMo's too), paired by id
"""
from __future__ import annotations

import sys

from ..transcripts import TRANSCRIPT_FORMATS
from .args import text_config


def add_parsers(sub) -> None:
    p = sub.add_parser("score", help="WER/CER of hypotheses against references: asr score REF HYP, or "
                                     "--manifest M --hyp H",
                       description="Files in any of these forms, detected (or --format): Kaldi / ESPnet text "
                                   "(id words), sclite trn (words (id)), TSV (id<TAB>words), JSONL manifests "
                                   "(ours, NeMo's: text, and pred_text in a hypothesis file). Utterances are "
                                   "paired by id in any order; a reference without a hypothesis is scored as an "
                                   "empty one, a hypothesis without a reference is left out, and both are named.")
    p.add_argument("ref", nargs="?", help="reference transcripts (or one NeMo JSONL with text and pred_text)")
    p.add_argument("hyp_file", nargs="?", metavar="hyp", help="hypothesis transcripts")
    p.add_argument("--format", choices=TRANSCRIPT_FORMATS, help="the files' format (default: detected per file)")
    p.add_argument("--no-normalize", action="store_true",
                   help="score the texts as written (default: both normalised by the `text` section of --config, "
                        "or the default one: upper case, no punctuation, numbers spelled)")
    p.add_argument("--manifest", help="the references as a manifest (with --hyp)")
    p.add_argument("--hyp", help="id<TAB>text lines (with --manifest)")
    p.add_argument("--out", help="where to write wer.txt, per_utt.tsv, alignment.txt (default: beside --hyp)")
    p.add_argument("--config", help="training YAML whose `text` section normalises references and hypotheses "
                                    "(default: the normalisation prepare recorded beside the manifest)")
    p.add_argument("--results", help="append a line (date, config, decoding, WER, CER, device, time) to this "
                                     "RESULTS.md")
    p.add_argument("--exp", help="the experiment dir, for --results (default: the hyp dir's parent)")
    p.set_defaults(func=cmd_score)


def cmd_score(args) -> None:
    from ..report import log_score
    from ..score import score_decode

    if args.ref is not None:
        return score_files(args)
    if not (args.manifest and args.hyp):
        sys.exit("asr score: give REF HYP (two transcript files) or --manifest M --hyp H")
    result = score_decode(args.manifest, args.hyp, text_config(args, args.manifest), args.out)
    if args.results:          # recorded before anything is printed: a closed stdout cannot lose it
        log_score(args.results, result, args.hyp, args.manifest, args.exp, args.config)
    print(result.summary())
    if args.results:
        print(f"logged in {args.results}")


def score_files(args) -> None:
    """`asr score REF [HYP]`: two transcript files (or one JSONL with text and pred_text), paired by id."""
    from ..score import score_files as score

    if args.manifest or args.hyp:
        sys.exit("asr score: give REF HYP or --manifest/--hyp, not both")
    if args.results:
        sys.exit("asr score: --results logs a recipe's decode (--manifest/--hyp), not REF HYP files")
    result, notes = score(args.ref, args.hyp_file, args.format, None if args.no_normalize else text_config(args),
                          args.out)
    for line in notes:
        print(line)
    print(result.summary())
