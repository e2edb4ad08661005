"""The flags several commands share, each group beside what it turns into: the training config (`--config`
and key=value overrides), decoding and chunking options, the model a command loads. Building the flags
imports no torch; turning them into options imports the library, when a command runs.

A flag left out is None and the library's own default applies (the options dataclass, the function's
keyword default): a default is written once, where the option lives.
"""
from __future__ import annotations

import argparse


def given(args: argparse.Namespace, *names: str) -> dict:
    """{name: value} of the flags among `names` that were given (not None): what a library call should override."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def default_of(function, name: str):
    """The default of `function`'s keyword `name`: what a flag left out gets, read from its one source."""
    import inspect

    return inspect.signature(function).parameters[name].default


def add_config_args(p: argparse.ArgumentParser, config_help: str = "training YAML listing what differs from the "
                                                                  "TrainConfig defaults (asr.config)") -> None:
    """`--config YAML` and `key=value ...` overrides (asr.config.load_config), for every command that builds a
    TrainConfig: stats, train, bench train, bench plan."""
    p.add_argument("--config", help=config_help)
    p.add_argument("overrides", nargs="*", help="key=value, e.g. epochs=10 model.hidden=320 (type-checked)")


def train_config(args: argparse.Namespace):
    """The TrainConfig of --config and the overrides."""
    from ..config import TrainConfig, load_config

    return load_config(TrainConfig, args.config, getattr(args, "overrides", ()))


def text_config(args: argparse.Namespace, manifest: str | None = None):
    """How transcripts are normalised: --config's `text` section, else what prepare recorded beside `manifest`."""
    from ..config import text_config as resolve

    return resolve(getattr(args, "config", None), manifest, getattr(args, "overrides", ()))


def add_model_args(p: argparse.ArgumentParser, required: bool = True, runs: bool = True) -> None:
    """--model (any file asr.load_model reads) and --device; where the command runs the model (`runs`), --precision."""
    p.add_argument("--model", required=required, help="a checkpoint (best.pt) or an `asr export` file")
    p.add_argument("--device", help="cpu (the default), cuda, cuda:N")
    if runs:
        p.add_argument("--precision", help="fp32 (the default), or bf16: a checkpoint's largest products (its 1-D "
                                           "convolution; the recurrent stack's on CPUs with AMX) on bfloat16 operands "
                                           "where the CPU runs them faster (AN4 test 1.13-1.32x on a Xeon, same WER)")


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    """How a loaded model decodes (asr.decode.DecodingOptions) and cuts long inputs (ChunkingOptions)."""
    p.add_argument("--decoding", help="decoding options tuned by `asr tune` (JSON)")
    p.add_argument("--method", choices=["greedy", "beam"])
    p.add_argument("--lm-dir", help="beam search with this dir's LM (lm.bin, else lm.arpa) and lexicon.txt "
                                    "(from `asr lm`)")
    p.add_argument("--beam-size", type=int)
    p.add_argument("--lm-weight", type=float)
    p.add_argument("--word-score", type=float)
    p.add_argument("--threads", type=int, help="beam-search threads (default: one per core)")
    p.add_argument("--hotwords", help="words / phrases to favour, comma-separated, each `PHRASE` or `PHRASE:BOOST` "
                                      "(asr.hotwords; implies beam search)")
    p.add_argument("--hotwords-file", help="hotwords one a line, `PHRASE` or `PHRASE<tab>BOOST`, # comments")
    p.add_argument("--nbest", type=int, help="alternatives per transcript with their scores (--format json; "
                                             "implies beam search)")
    p.add_argument("--chunk-seconds", type=float, help="cut longer inputs at pauses, then into overlapping chunks of "
                                                        "this many seconds (asr.transcribe.ChunkingOptions)")
    p.add_argument("--vad", choices=["auto", "on", "off"], help="decode only speech (silero-vad): auto (the default) "
                                                                 "for inputs longer than --chunk-seconds")


def decoding_options(args: argparse.Namespace):
    """DecodingOptions from --decoding (a tuned JSON), then --lm-dir, then --method / weights / threads /
    hotwords / nbest."""
    from ..decode import decoding_options as merged

    return merged(getattr(args, "decoding", None), getattr(args, "lm_dir", None), **hotwords(args),
                  **given(args, "method", "beam_size", "lm_weight", "word_score", "threads", "nbest"))


def hotwords(args: argparse.Namespace) -> dict:
    """{"hotwords": (...)} from --hotwords and --hotwords-file, where given."""
    from ..hotwords import read_hotwords

    items = [w.strip() for w in (getattr(args, "hotwords", None) or "").split(",") if w.strip()]
    if getattr(args, "hotwords_file", None):
        items += read_hotwords(args.hotwords_file)
    return {"hotwords": tuple(items)} if items else {}


def chunking_options(args: argparse.Namespace):
    """ChunkingOptions with --chunk-seconds and --vad, where given."""
    from ..transcribe import ChunkingOptions

    return ChunkingOptions(**given(args, "chunk_seconds", "vad"))


def load_transcriber(args: argparse.Namespace, options=None):
    """The --model file's Transcriber on --device, with the command line's decoding and chunking options."""
    from ..transcribe import load_model

    return load_model(args.model, options=options or decoding_options(args), chunking=chunking_options(args),
                      **given(args, "device", "precision"))
