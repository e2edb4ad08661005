"""Training commands: train a model, average its checkpoints, and look at the runs.

    asr train --config C key=value ...             train (see asr.config.TrainConfig); torchrun -m asr train: DDP
    asr average --exp EXP --last 5 --out avg.pt    checkpoint averaging (train with keep_epochs=5)
    asr report EXP --manifest T                    EXP/report.html with curves, scores, worst utterances
    asr compare EXP1 EXP2 ... --out D              runs side by side: table, gradient norms and reach, dev WER
"""
from __future__ import annotations

import sys
from pathlib import Path

from .args import add_config_args, given, train_config


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train an acoustic model")
    add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("average", help="average checkpoints' weights into one model file")
    p.add_argument("checkpoints", nargs="*", help="checkpoint files (or --exp with --last / --best)")
    p.add_argument("--exp", help="an exp dir trained with keep_epochs=N")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--last", type=int, help="the last N epochs")
    group.add_argument("--best", type=int, help="the N epochs with the lowest dev WER")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("report", help="report.html (curves, scores, worst utterances, posteriorgram) for an exp dir")
    p.add_argument("exp")
    p.add_argument("--manifest", help="the test manifest the decode_* dirs were decoded from")
    p.add_argument("--results", help="the recipe's RESULTS.md, to compare with its best")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="runs side by side: table, gradient-norm / gradient-reach / dev WER plots")
    p.add_argument("exps", nargs="+", help="exp dirs written by asr train (decode_test/ inside, for test scores)")
    p.add_argument("--out", required=True, help="dir for compare.md, compare.json and the PNGs")
    p.add_argument("--manifest", help="utterances for the gradient-reach plot (its first --reach-utts)")
    p.add_argument("--reach-utts", type=int, help="how many (default: compare_runs' own)")
    p.set_defaults(func=cmd_compare)


def cmd_train(args) -> None:
    from ..train import train

    train(train_config(args))


def cmd_average(args) -> None:
    from ..checkpoint import average_checkpoints, epoch_checkpoints

    if bool(args.checkpoints) == bool(args.exp):
        sys.exit("asr average: give checkpoint files, or --exp with --last N or --best N")
    paths = args.checkpoints or epoch_checkpoints(args.exp, last=args.last or 0, best=args.best or 0)
    out = average_checkpoints(paths, args.out)
    print(f"averaged {len(paths)} checkpoints ({', '.join(Path(p).name for p in paths)}) -> {out}")


def cmd_report(args) -> None:
    from ..report import write_report

    print(f"report -> {write_report(args.exp, args.manifest, args.results)}")


def cmd_compare(args) -> None:
    from ..compare import compare_runs

    print(compare_runs(args.exps, args.out, args.manifest, **given(args, "reach_utts")), end="")
    print(f"table, plots and compare.json -> {args.out}")
