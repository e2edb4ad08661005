"""`asr <subcommand>`: thin wrappers over the library.

    asr prepare an4 --out data/an4                 manifests (train/dev/test.jsonl)
    asr stats --config C --manifest M --out S      normalisation statistics for C's features
    asr train --config C key=value ...             train (see asr.train.TrainConfig)
    asr decode --model M --manifest T --out D      D/hyp.txt, one `id<TAB>text` per utterance
    asr score --manifest T --hyp D/hyp.txt         %WER / %CER, per-utterance results in D
    asr transcribe --model M a.wav b.flac          `path<TAB>text` (or --json)
    asr bench train --batch-sizes 32,64 k=v ...    training throughput: model-only vs full pipeline
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_prepare(args) -> None:
    from .corpora.an4 import locate_an4, prepare_an4

    corpus = Path(args.corpus) if args.corpus else locate_an4(args.out)
    paths = prepare_an4(corpus, args.out, max_utts=args.max_utts)
    for name, path in paths.items():
        print(f"{name}: {sum(1 for _ in path.open())} utterances -> {path}")


def cmd_stats(args) -> None:
    from torch.utils.data import DataLoader

    from .config import load_config
    from .data import AudioDataset, FrameBudgetSampler, collate, read_manifest
    from .features import FeatureExtractor, compute_stats, save_stats
    from .text import Vocabulary
    from .train import TrainConfig

    cfg = load_config(TrainConfig, args.config, args.overrides)
    utts = read_manifest(args.manifest)
    loader = DataLoader(AudioDataset(utts, Vocabulary()), collate_fn=collate,
                        batch_sampler=FrameBudgetSampler([u.duration for u in utts], 20_000, shuffle=False))
    mean, std, frames = compute_stats(FeatureExtractor(cfg.features), ((b.waves, b.lengths) for b in loader))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_stats(args.out, cfg.features, mean, std, frames)
    print(f"{cfg.features.kind} statistics over {frames} frames of {len(utts)} utterances -> {args.out}")


def cmd_train(args) -> None:
    from .config import load_config
    from .train import TrainConfig, train

    train(load_config(TrainConfig, args.config, args.overrides))


def cmd_decode(args) -> None:
    from .data import read_manifest
    from .transcribe import load_model

    utts = read_manifest(args.manifest)
    transcriber = load_model(args.model, args.device)
    results = transcriber.transcribe([u.audio for u in utts])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hyp.txt").write_text("".join(f"{u.id}\t{r.text}\n" for u, r in zip(utts, results)))
    print(f"decoded {len(utts)} utterances -> {out / 'hyp.txt'}")


def cmd_score(args) -> None:
    from .data import read_manifest
    from .score import read_hyps, score_dataset

    utts = read_manifest(args.manifest)
    hyps = read_hyps(args.hyp)
    missing = [u.id for u in utts if u.id not in hyps]
    if missing:
        sys.exit(f"{args.hyp}: no hypothesis for {len(missing)} utterance(s) of {args.manifest}, e.g. {missing[0]}")
    out = args.out or Path(args.hyp).parent
    result = score_dataset([u.id for u in utts], [u.text for u in utts], [hyps[u.id] for u in utts], out)
    print(result.summary())


def cmd_transcribe(args) -> None:
    from .transcribe import load_model

    transcriber = load_model(args.model, args.device)
    for result in transcriber.transcribe(args.audio):
        if args.json:
            print(json.dumps({"path": result.path, "text": result.text, "duration": round(result.duration, 3)}))
        else:
            print(f"{result.path}\t{result.text}")


def cmd_bench(args) -> None:
    from .bench import bench_train, format_table, write_rows
    from .config import load_config
    from .corpora.an4 import locate_an4, read_split
    from .train import TrainConfig

    cfg = load_config(TrainConfig, args.config, args.overrides)
    sources = read_split(Path(args.corpus) if args.corpus else locate_an4("data/an4"), "train")
    lo, hi = (float(x) for x in args.seconds.split(","))
    rows = bench_train(cfg, sources, [int(b) for b in args.batch_sizes.split(",")], args.steps, args.warmup,
                       (lo, hi), args.workdir)
    print(format_table(rows))
    if args.out:
        write_rows(args.out, rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr", description="Recurrent CTC speech recognition.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="write JSONL manifests for a corpus")
    p.add_argument("corpus_name", choices=["an4"])
    p.add_argument("--out", required=True, help="directory for train/dev/test.jsonl (and a download)")
    p.add_argument("--corpus", help="corpus dir (default: $AN4_DIR, ../shared/corpora/an4/an4, else download)")
    p.add_argument("--max-utts", type=int, help="keep only the first N train utterances (N/4 dev and test)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("stats", help="feature normalisation statistics over a manifest")
    p.add_argument("--config", help="training YAML; its `features` section picks the features")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("train", help="train an acoustic model")
    p.add_argument("--config")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. epochs=10 model.hidden=320")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("decode", help="transcribe every utterance of a manifest")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("score", help="WER/CER of hypotheses against a manifest's transcripts")
    p.add_argument("--manifest", required=True)
    p.add_argument("--hyp", required=True, help="id<TAB>text lines")
    p.add_argument("--out", help="where to write wer.txt, per_utt.tsv, alignment.txt (default: beside --hyp)")
    p.set_defaults(func=cmd_score)

    bench = sub.add_parser("bench", help="throughput benchmarks").add_subparsers(dest="what", required=True)
    p = bench.add_parser("train", help="training steps: model-only vs the full pipeline from audio files")
    p.add_argument("--config", help="training YAML (model, features, precision, num_workers, device)")
    p.add_argument("--batch-sizes", default="32,64,128,256", help="comma-separated utterances per batch")
    p.add_argument("--seconds", default="10,15", help="min,max length of the concatenated utterances")
    p.add_argument("--steps", type=int, default=5, help="timed steps per batch size")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--corpus", help="AN4 dir to build utterances from (default: as asr prepare an4)")
    p.add_argument("--workdir", help="where to write the scratch WAV files (default: the system temp dir)")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. model.hidden=800 model.layers=5")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("transcribe", help="transcribe audio files")
    p.add_argument("--model", required=True)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--device", default="cpu")
    p.add_argument("audio", nargs="+")
    p.set_defaults(func=cmd_transcribe)
    return parser


def main(argv: list[str] | None = None) -> None:
    from .audio import AudioError
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (AudioError, ConfigError, FileNotFoundError, ValueError) as e:
        sys.exit(f"asr {args.command}: error: {e}")


if __name__ == "__main__":
    main()
