"""`asr serve`: a model behind OpenAI's transcription API (asr.serve).

    asr serve --model M [--port 8000] [--decoding D] [--api-key K]

Every flag left out takes ServeOptions' default, so this is the server `asr.serve.Server(transcriber)` is.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..serve.options import ServeOptions
from .args import add_decoding_args, add_model_args, given, load_transcriber

MIB = 1024 ** 2
# ServeOptions fields that are flags of the same name (--max-batch for max_batch), each with its type and help
FLAGS = {"host": (str, "address to bind (127.0.0.1: this machine only; 0.0.0.0: every interface)"),
         "port": (int, "TCP port"),
         "max_batch": (int, "requests decoded together at most"),
         "batch_window": (float, "seconds to wait for more requests after a batch's first"),
         "max_queue": (int, "transcription requests in progress at once; more get 503"),
         "max_audio_seconds": (float, "longer audio gets 413"),
         "model_workers": (int, "batches computed at once, each in its own thread: two where there are two cores "
                                "or more, on a CPU or a GPU"),
         "model_threads": (int, "torch threads while serving: the cores less one, shared by the workers, at least "
                                "one, leaving a core to the event loop and upload decoding")}
ON_THIS_MACHINE = ("model_workers", "model_threads")    # defaults that depend on the cores


def add_parsers(sub) -> None:
    defaults = ServeOptions()
    p = sub.add_parser("serve", help="an OpenAI-compatible transcription server (POST /v1/audio/transcriptions, "
                                     "a streaming WebSocket, a page at /, /health, /metrics)")
    add_model_args(p)
    p.add_argument("--model-name", help="the id GET /v1/models lists (default: the model file's stem)")
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` (default: $ASR_API_KEY, else none)")
    for name, (kind, text) in FLAGS.items():
        value = defaults.threads if name == "model_threads" else getattr(defaults, name)
        p.add_argument(f"--{name.replace('_', '-')}", type=kind,
                       help=f"{text} (default{' on this machine' if name in ON_THIS_MACHINE else ''}: {value})")
    p.add_argument("--max-upload-mb", type=float,
                   help=f"larger uploads get 413 (default: {defaults.max_upload_bytes / MIB:g})")
    p.add_argument("--timeout", type=float,
                   help=f"seconds per request before 504 (default: {defaults.request_timeout:g})")
    add_decoding_args(p)
    p.set_defaults(func=cmd_serve)


def serve_options(args) -> ServeOptions:
    """ServeOptions of `asr serve`'s flags: those given, the model file's stem as its name, the API key from
    --api-key, else $ASR_API_KEY; ServeOptions' own defaults for the rest."""
    options = {**given(args, *FLAGS), "model_name": args.model_name or Path(args.model).stem,
               "api_key": args.api_key or os.environ.get("ASR_API_KEY") or None}
    if args.max_upload_mb is not None:
        options["max_upload_bytes"] = int(args.max_upload_mb * MIB)
    if args.timeout is not None:
        options["request_timeout"] = args.timeout
    return ServeOptions(**options)


def cmd_serve(args) -> None:
    from ..serve import serve

    options = serve_options(args)
    transcriber = load_transcriber(args)
    print(f"serving {args.model} as {options.model_name!r} on http://{options.host}:{options.port} "
          f"(API key {'required' if options.api_key else 'not required'}; "
          f"{options.model_workers} model workers on {options.threads} torch threads)", file=sys.stderr)
    serve(transcriber, options)
