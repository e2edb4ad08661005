"""`asr <subcommand>`: the command line, one module per domain, each command's flags beside its thin handler.

    data.py     prepare, validate, vocab, kaldi-export, kaldi-import, nemo-export, stats, shard, lm
    train.py    train, average, report, compare
    decode.py   decode, tune, transcribe, export
    score.py    score
    bench.py    bench train | plan | decode | stream | serve
    serve.py    serve
    args.py     the flag groups several commands share (--config and overrides, decoding, the model)

A handler parses, calls one library function and prints; it imports the library when it runs, so building
the parser (and `asr --help`) imports neither torch nor the server's libraries. `python -m asr`,
`python -m asr.cli` and `python -m asr.train` are this command too (`torchrun -m asr train` under DDP).
"""
from __future__ import annotations

import argparse

from . import bench, data, decode, score, serve, train

DOMAINS = (data, train, decode, score, bench, serve)   # the order `asr --help` lists their commands in


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr", description="Recurrent CTC speech recognition.")
    sub = parser.add_subparsers(dest="command", required=True)
    for domain in DOMAINS:
        domain.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # key=value overrides after a later flag (`asr prepare kaldi --out D text.case=lower`): argparse gives a
    # command's positionals all at once, so these come back unparsed; they are still the command's overrides
    if rest and hasattr(args, "overrides") and all("=" in r and not r.startswith("-") for r in rest):
        args.overrides = [*args.overrides, *rest]
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    run_command(f"asr {args.command}", args.func, args)


def run_command(prog: str, command, *args) -> None:
    """Run one command-line action: a user's mistake (a bad file, config or value) exits with one line
    naming it instead of a traceback, and a reader that went away (`asr score ... | head -1`) ends it quietly."""
    import os
    import sys

    from ..audio import AudioError
    from ..config import ConfigError
    from ..guards import NonFiniteError

    try:
        command(*args)
    except (AudioError, ConfigError, FileNotFoundError, ValueError, NonFiniteError) as e:
        sys.exit(f"{prog}: error: {e}")
    except BrokenPipeError:
        # As Unix tools do; stdout goes to /dev/null so the interpreter's final flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
