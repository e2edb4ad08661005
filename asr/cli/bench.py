"""What the `asr bench ...` subcommands do (asr.cli parses them): training, decoding, streaming and
serving throughput, each a thin wrapper over asr.bench / asr.serve_bench, importing what it needs when
it runs."""
from __future__ import annotations

import json
from pathlib import Path

from .commands import chunking_options, decoding_options


def cmd_bench(args) -> None:
    from ..bench.train import bench_train, format_table, write_rows
    from ..config import TrainConfig, load_config
    from ..corpora.an4 import locate_an4, read_split

    cfg = load_config(TrainConfig, args.config, args.overrides)
    sources = read_split(Path(args.corpus) if args.corpus else locate_an4("data/an4"), "train")
    lo, hi = (float(x) for x in args.seconds.split(","))
    rows = bench_train(cfg, sources, [int(b) for b in args.batch_sizes.split(",")], args.steps, args.warmup,
                       (lo, hi), args.workdir)
    print(format_table(rows))
    if args.out:
        write_rows(args.out, rows)


def cmd_bench_plan(args) -> None:
    from ..bench.plan import Links, plan_table
    from ..config import TrainConfig, load_config

    cfg = load_config(TrainConfig, args.config, args.overrides)
    if (args.train_hours is None) == (args.manifest is None):
        raise SystemExit("asr bench plan: give --train-hours H or --manifest M (the training set)")
    hours = args.train_hours
    if args.manifest:
        from ..data import read_manifest

        hours = sum(u.duration for u in read_manifest(args.manifest)) / 3600
    text, rows = plan_table(cfg, [int(n) for n in str(args.gpus).split(",")], hours, args.throughput,
                            Links(args.gpus_per_node, args.intra_gbs, args.inter_gbs))
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


def cmd_bench_decode(args) -> None:
    import tempfile
    from dataclasses import replace

    import torch

    from ..bench.train import DECODE_HEADER, SherpaTranscriber, bench_decode, format_decode_row
    from ..checkpoint import read_checkpoint
    from ..data import read_manifest
    from ..decode import DecodingOptions
    from ..export import export_onnx, export_sherpa_onnx, export_torchscript
    from ..transcribe import load_model

    utts = read_manifest(args.manifest)[:args.limit or None]
    beam, greedy, chunking = decoding_options(args), DecodingOptions(), chunking_options(args)
    fbank = read_checkpoint(args.model)["feature_config"].get("kind") == "fbank"
    rows = []
    print(f"{len(utts)} utterances, {sum(u.duration for u in utts):.0f} s of audio; threads "
          f"{', '.join(map(str, args.thread_counts))} (torch, onnxruntime and beam search alike)")
    with tempfile.TemporaryDirectory() as tmp:
        files = {"ONNX": export_onnx(args.model, Path(tmp) / "model.onnx"),
                 "ONNX int8": export_onnx(args.model, Path(tmp) / "model_int8.onnx", int8=True),
                 "TorchScript": export_torchscript(args.model, Path(tmp) / "model.ts")}
        sherpa = export_sherpa_onnx(args.model, Path(tmp) / "sherpa") if fbank else None
        for threads in args.thread_counts:
            torch.set_num_threads(threads)          # ONNX sessions take torch's thread count when loaded
            load = lambda path, options: load_model(path, options=options, chunking=chunking)
            models = {"greedy, checkpoint": load(args.model, greedy),
                      **{f"greedy, {name}": load(path, greedy) for name, path in files.items()}}
            if sherpa is not None:
                models["greedy, sherpa-onnx"] = SherpaTranscriber(sherpa, threads)
            if beam.method == "beam":
                label, options = "LM beam" if beam.lm else "beam", replace(beam, threads=threads)
                models.update({f"{label}, checkpoint": load(args.model, options),
                               f"{label}, ONNX": load(files["ONNX"], options)})
            rows += bench_decode(models, utts, threads, log=lambda line: None)
    print(DECODE_HEADER)
    for r in rows:
        print(format_decode_row(r))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


def cmd_bench_stream(args) -> None:
    from ..data import read_manifest
    from ..stream import stream_latency
    from ..transcribe import load_model

    utts = read_manifest(args.manifest)[: args.limit]
    row = stream_latency(load_model(args.model), utts, args.chunk_ms / 1000)
    print(f"{len(utts)} utterances streamed in {args.chunk_ms} ms chunks: %WER {row['wer']:.2f} %CER {row['cer']:.2f}; "
          f"word latency (end of word -> shown) mean {row['latency_mean'] * 1000:.0f} ms, median "
          f"{row['latency_median'] * 1000:.0f} ms, p90 {row['latency_p90'] * 1000:.0f} ms; RTF {row['rtf']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(row, indent=1) + "\n")


def cmd_bench_serve(args) -> None:
    from ..bench.serve import SERVE_HEADER, bench_serve, format_serve_row
    from ..data import read_manifest

    utts = read_manifest(args.manifest)[:args.limit or None]
    rows = bench_serve(args.model, [u.audio for u in utts], args.clients, args.seconds, args.max_batch,
                       args.batch_window, args.model_threads, args.model_workers, args.keepalive, args.rounds,
                       args.device)
    print(SERVE_HEADER)
    for r in rows:
        print(format_serve_row(r))
    if rows[0]["audio_per_second"]:
        print(f"dynamic batching: {rows[-1]['audio_per_second'] / rows[0]['audio_per_second']:.2f}x the throughput "
              f"of one request at a time" + (f", {rows[-1]['audio_per_second'] / rows[1]['audio_per_second']:.2f}x "
                                             f"that of {rows[-1]['workers']} at a time unbatched"
                                             if len(rows) == 3 and rows[1]["audio_per_second"] else ""))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
