"""`asr bench ...`: measurements, each a thin wrapper over its module of asr.bench.

    asr bench train --batch-sizes 32,64 k=v ...    training throughput: model-only vs full pipeline
    asr bench plan --config C --gpus 1,8,64 ...    PREDICTED hours per epoch / run from that throughput
    asr bench decode --model M --manifest T        RTF of every backend and export, greedy and LM beam
    asr bench stream --model M --manifest T        streaming WER, word latency and RTF
    asr bench serve --model M --manifest T         the server under N concurrent clients: latency, throughput
    asr bench soak --model M --manifest T ...      the server under sustained mixed traffic: statuses, latency, RSS
    asr bench peer --model M --manifest T ...      ours beside pocketsphinx's English model: %WER, %CER, RTF
"""
from __future__ import annotations

import json
from pathlib import Path

from .args import (
    add_config_args,
    add_decoding_args,
    add_model_args,
    chunking_options,
    decoding_options,
    given,
    load_transcriber,
    train_config,
)


def _ints(value: str) -> list[int]:
    return [int(x) for x in value.split(",")]


def add_parsers(sub) -> None:
    bench = sub.add_parser("bench", help="throughput benchmarks").add_subparsers(dest="what", required=True)
    p = bench.add_parser("train", help="training steps: model-only vs the full pipeline from audio files")
    add_config_args(p, "training YAML (model, features, precision, num_workers, device)")
    p.add_argument("--batch-sizes", type=_ints, default=[32, 64, 128, 256], help="comma-separated utterances per batch")
    p.add_argument("--seconds", type=lambda v: tuple(float(x) for x in v.split(",")),
                   help="min,max length of the concatenated utterances (default: bench_train's)")
    p.add_argument("--steps", type=int, help="timed steps per batch size (default: bench_train's)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default: bench_train's)")
    p.add_argument("--corpus", help="AN4 dir to build utterances from (default: as asr prepare an4)")
    p.add_argument("--workdir", help="where to write the scratch WAV files (default: the system temp dir)")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.set_defaults(func=cmd_bench_train)

    p = bench.add_parser("plan", help="PREDICTED hours per epoch and per run on N GPUs, from measured bench train rows")
    add_config_args(p, "training YAML (model, batch_frames, epochs, speed_perturb)")
    p.add_argument("--gpus", type=_ints, default=[1, 8, 64], help="comma-separated GPU counts (default 1,8,64)")
    p.add_argument("--train-hours", type=float, help="hours of training audio an epoch (LibriSpeech: 100.6, 960.9)")
    p.add_argument("--manifest", help="... or the training manifest, to sum them")
    p.add_argument("--throughput", help="asr bench train rows: a rows JSON that names its model, or a YAML listing "
                   "rows files with their models (default: recipes/librispeech/h200_throughput.yaml)")
    p.add_argument("--gpus-per-node", type=int, help="(default: asr.bench.plan.Links')")
    p.add_argument("--intra-gbs", type=float, help="all-reduce GB/s per GPU within a node (NVLink; default: Links')")
    p.add_argument("--inter-gbs", type=float, help="... and between nodes (400 Gb/s per GPU; default: Links')")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.set_defaults(func=cmd_bench_plan)

    p = bench.add_parser("decode", help="real-time factor of transcription: checkpoint, ONNX fp32 / int8, sherpa-onnx, "
                                        "TorchScript, LM beam; at each thread count")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--limit", type=int, help="only the first N utterances")
    p.add_argument("--out", help="also write the rows as JSON here")
    add_decoding_args(p)
    p.add_argument("--thread-counts", type=_ints, default=[1, 2],
                   help="comma-separated thread counts, each timed in turn (default 1,2)")
    p.set_defaults(func=cmd_bench_decode)

    p = bench.add_parser("stream", help="streaming: WER, word and endpoint latency, RTF (any model: frame by "
                                        "frame or re-decoded)")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--chunk-ms", type=int, help="audio per feed() call (default: stream_latency's)")
    p.add_argument("--limit", type=int, help="only the first N utterances")
    p.add_argument("--out", help="also write the numbers as JSON here")
    p.set_defaults(func=cmd_bench_stream)

    p = bench.add_parser("serve", help="asr serve under N concurrent clients on loopback: latency percentiles, "
                                       "audio seconds per second, errors, memory; batched vs one at a time")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True, help="the utterances the clients send (in turn, round robin)")
    p.add_argument("--clients", type=int, help="concurrent clients (default: bench_serve's)")
    p.add_argument("--seconds", type=float, help="how long each server is loaded, in all (default: bench_serve's)")
    p.add_argument("--rounds", type=int, help="turns the servers take, seconds / rounds each, so that a host's "
                                              "drifting speed slows every row alike (default: bench_serve's)")
    p.add_argument("--max-batch", type=int, help="the batched server's --max-batch (default: asr serve's)")
    p.add_argument("--batch-window", type=float, help="the servers' --batch-window (default: asr serve's)")
    p.add_argument("--model-threads", type=int, help="the servers' --model-threads (default: asr serve's)")
    p.add_argument("--model-workers", type=int, help="the server's --model-workers for the batched run and the "
                                                     "unbatched one beside it (default: asr serve's)")
    p.add_argument("--device", help="the servers' --device")
    p.add_argument("--precision", help="the servers' --precision (bf16: a checkpoint's largest products in bfloat16)")
    p.add_argument("--no-keepalive", dest="keepalive", action="store_false",
                   help="a new connection for every request (default: each client keeps one open, as HTTP clients do)")
    p.add_argument("--limit", type=int, help="only the first N utterances")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.set_defaults(func=cmd_bench_serve)

    p = bench.add_parser("soak", help="asr serve under sustained mixed traffic (good and bad uploads, streams, "
                                      "keys right and wrong, clients hanging up): statuses, latency and memory "
                                      "over time")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True, help="the utterances good requests carry")
    p.add_argument("--minutes", type=float, default=30.0, help="how long (default: %(default)s)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
    p.add_argument("--windows", type=int, default=10, help="rows: the run in this many equal parts "
                                                           "(default: %(default)s)")
    p.add_argument("--limit", type=int, help="only the first N utterances")
    p.add_argument("--out", help="also write the result as JSON here")
    p.set_defaults(func=cmd_bench_soak)

    p = bench.add_parser("peer", help="ours beside CMU pocketsphinx's general English model on the same test sets: "
                                      "%%WER, %%CER, real-time factor")
    add_model_args(p)
    p.add_argument("--manifest", action="append", required=True, help="a test set, named after its file (repeat)")
    p.add_argument("--limit", type=int, help="only the first N utterances of each")
    p.add_argument("--out", help="also write the rows as JSON here")
    add_decoding_args(p)
    p.set_defaults(func=cmd_bench_peer)


def _write(path: str | None, rows) -> None:
    if path:
        Path(path).write_text(json.dumps(rows, indent=1) + "\n")


def cmd_bench_train(args) -> None:
    from ..bench.train import bench_train, format_table
    from ..corpora.an4 import locate_an4, read_split

    sources = read_split(Path(args.corpus) if args.corpus else locate_an4("data/an4"), "train")
    rows = bench_train(train_config(args), sources, args.batch_sizes, workdir=args.workdir,
                       **given(args, "steps", "warmup", "seconds"))
    print(format_table(rows))
    _write(args.out, rows)


def cmd_bench_plan(args) -> None:
    from ..bench.plan import Links, plan_table
    from ..data import read_manifest

    if (args.train_hours is None) == (args.manifest is None):
        raise SystemExit("asr bench plan: give --train-hours H or --manifest M (the training set)")
    hours = args.train_hours or sum(u.duration for u in read_manifest(args.manifest)) / 3600
    links = Links(**given(args, "gpus_per_node", "intra_gbs", "inter_gbs"))
    text, rows = plan_table(train_config(args), args.gpus, hours, args.throughput, links)
    print(text)
    _write(args.out, rows)


def cmd_bench_decode(args) -> None:
    from ..bench.decode import DECODE_HEADER, against_sherpa, bench_decode_matrix, format_decode_row
    from ..bench.rnn import format_stack
    from ..data import read_manifest

    utts = read_manifest(args.manifest)[:args.limit or None]
    print(f"{len(utts)} utterances, {sum(u.duration for u in utts):.0f} s of audio; threads "
          f"{', '.join(map(str, args.thread_counts))} (torch, onnxruntime and beam search alike)")
    rows = bench_decode_matrix(args.model, utts, args.thread_counts, decoding_options(args), chunking_options(args),
                               log=lambda line: None)
    print("\n".join([DECODE_HEADER, *(format_decode_row(r) for r in rows if r["mode"] != "recurrent stack")]))
    for line in filter(None, (against_sherpa(rows, t) for t in args.thread_counts)):
        print(line)
    print("\n".join(format_stack(r) for r in rows if r["mode"] == "recurrent stack"))
    _write(args.out, rows)


def cmd_bench_stream(args) -> None:
    from ..bench.stream import format_latency, stream_latency
    from ..data import read_manifest
    from ..transcribe import load_model

    utts = read_manifest(args.manifest)[:args.limit or None]
    chunk = {"chunk_seconds": args.chunk_ms / 1000} if args.chunk_ms else {}
    row = stream_latency(load_model(args.model), utts, **chunk)
    print(format_latency(row, len(utts)))
    _write(args.out, row)


def cmd_bench_soak(args) -> None:
    from ..bench.soak import soak
    from ..data import read_manifest

    utts = read_manifest(args.manifest)[:args.limit or None]
    result = soak(args.model, [u.audio for u in utts], args.minutes, args.clients, args.windows)
    _write(args.out, result)
    if result["log_tail"]:
        print(result["log_tail"])
    if result["unexpected"] or result["server_errors"] or not result["alive"] or result["tracebacks"]:
        raise SystemExit("asr bench soak: the server answered unexpectedly (see the rows above)")


def cmd_bench_serve(args) -> None:
    from ..bench.serve import bench_serve, format_serve_table
    from ..data import read_manifest

    utts = read_manifest(args.manifest)[:args.limit or None]
    options = given(args, "clients", "seconds", "rounds", "max_batch", "batch_window", "device", "precision")
    rows = bench_serve(args.model, [u.audio for u in utts], threads=args.model_threads, workers=args.model_workers,
                       keepalive=args.keepalive, **options)
    print(format_serve_table(rows))
    _write(args.out, rows)


def cmd_bench_peer(args) -> None:
    from ..bench.peer import PEER_HEADER, Pocketsphinx, bench_peer
    from ..data import read_manifest
    from ..decode import DecodingOptions

    ours = load_transcriber(args)
    systems = {"ours, greedy": load_transcriber(args, DecodingOptions())}
    if ours.options.method == "beam":
        systems[f"ours, {ours.options.label}"] = ours
    systems[Pocketsphinx.name] = Pocketsphinx()
    test_sets = {Path(m).stem: read_manifest(m)[:args.limit or None] for m in args.manifest}
    print(PEER_HEADER)
    rows = bench_peer(systems, test_sets)
    _write(args.out, rows)
