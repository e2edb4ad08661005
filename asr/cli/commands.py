"""What each `asr` subcommand does (asr.cli parses the command line and calls these): thin
wrappers over the library, importing what they need when they run, so `asr --help` stays quick."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def text_config(args, manifest: str | None = None):
    """The TextConfig of --config's `text` section; else the one prepare recorded beside `manifest`; else the
    default."""
    from ..config import TrainConfig, load_config
    from ..data import read_text_config
    from ..text import TextConfig

    if getattr(args, "config", None):
        return load_config(TrainConfig, args.config).text
    return (read_text_config(manifest) if manifest else None) or TextConfig()


def cmd_prepare(args) -> None:
    from ..corpora import get_corpus

    corpus = get_corpus(args.corpus_name)
    options = {"max_utts": args.max_utts} if args.max_utts is not None else {}
    unsupported = set(options) - set(corpus.options)
    if unsupported:
        sys.exit(f"asr prepare {corpus.name}: --{'/--'.join(sorted(unsupported)).replace('_', '-')} is not an option "
                 f"of this corpus")
    folder = Path(args.corpus) if args.corpus else corpus.locate(args.out)
    paths = corpus.prepare(folder, args.out, text=text_config(args), **options)
    for name, path in paths.items():
        print(f"{name}: {sum(1 for _ in path.open())} utterances -> {path}")
    rejected = Path(args.out) / "rejected.jsonl"
    n = sum(1 for _ in rejected.open()) if rejected.exists() else 0
    print(f"rejected: {n} utterance(s){f' -> {rejected} (with reasons; asr validate explains)' if n else ''}")


def cmd_validate(args) -> None:
    from ..config import TrainConfig, load_config
    from ..data import read_manifest
    from ..validate import Checker, normalisation_notes, screen, summary, write_rejected

    cfg = load_config(TrainConfig, args.config) if args.config else TrainConfig(text=text_config(args, args.manifest))
    checker = Checker.for_config(cfg)
    if args.max_seconds:
        from dataclasses import replace

        checker = replace(checker, max_seconds=args.max_seconds)
    raw = read_manifest(args.manifest)
    utts = read_manifest(args.manifest, cfg.text)   # transcripts normalised as training will see them
    _, findings = screen(utts, checker, full=not args.quick, progress=sys.stderr.isatty())
    findings = normalisation_notes(raw, cfg.text) + findings
    for f in findings:
        print(f"{'REJECT' if f.fatal else 'note  '} {f.id}: {f.reason} ({f.audio})")
    out = Path(args.rejected or Path(args.manifest).with_suffix(".rejected.jsonl"))
    n = write_rejected(out, findings)
    print(summary(len(utts), findings) + (f"; rejected entries -> {out}" if n else ""))
    if n:
        sys.exit(1)


def cmd_stats(args) -> None:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ..config import TrainConfig, load_config
    from ..data import AudioDataset, FrameBudgetSampler, collate, read_manifest
    from ..features import FeatureExtractor, compute_stats, save_stats
    from ..text import Vocabulary

    cfg = load_config(TrainConfig, args.config, args.overrides)
    utts = read_manifest(args.manifest)
    f = cfg.features
    batches = FrameBudgetSampler([u.duration for u in utts], 200 * round(f.frames_per_second), f.frames_per_second,
                                 shuffle=False)                              # 200 s of audio per batch
    loader = DataLoader(AudioDataset(utts, Vocabulary(), f.sample_rate), collate_fn=collate, batch_sampler=batches)
    batches = tqdm(loader, desc="statistics", unit="batch", disable=not sys.stderr.isatty(), leave=False)
    mean, std, frames = compute_stats(FeatureExtractor(cfg.features), ((b.waves, b.lengths) for b in batches if b))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_stats(args.out, cfg.features, mean, std, frames)
    print(f"{cfg.features.kind} statistics over {frames} frames of {len(utts)} utterances -> {args.out}")


def cmd_shard(args) -> None:
    from ..data import read_manifest
    from ..shards import write_shards

    utts = read_manifest(args.manifest)
    print(f"{len(utts)} utterances ({sum(u.duration for u in utts) / 3600:.1f} h) of {args.manifest}")
    write_shards(utts, args.out, int(args.shard_mb * 2 ** 20))


def cmd_train(args) -> None:
    from ..config import TrainConfig, load_config
    from ..train import train

    train(load_config(TrainConfig, args.config, args.overrides))


def decoding_options(args):
    """DecodingOptions from --decoding (a tuned JSON), then --lm-dir, then --method / weights / threads."""
    from ..decode import decoding_options as merged

    return merged(getattr(args, "decoding", None), getattr(args, "lm_dir", None),
                  **{k: getattr(args, k, None) for k in ("method", "beam_size", "lm_weight", "word_score", "threads")})


def chunking_options(args):
    """ChunkingOptions with --chunk-seconds, where given."""
    from ..transcribe import ChunkingOptions

    seconds = getattr(args, "chunk_seconds", None)
    return ChunkingOptions() if seconds is None else ChunkingOptions(chunk_seconds=seconds)


def load_transcriber(args, options=None):
    """The --model file's Transcriber on --device, with the command line's decoding and chunking options."""
    from ..transcribe import load_model

    return load_model(args.model, getattr(args, "device", "cpu"), options or decoding_options(args),
                      chunking_options(args))


def cmd_decode(args) -> None:
    from ..data import read_manifest

    utts = read_manifest(args.manifest)
    transcriber = load_transcriber(args)
    results = transcriber.transcribe([u.input for u in utts])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hyp.txt").write_text("".join(f"{u.id}\t{r.text}\n" for u, r in zip(utts, results)))
    print(f"decoded {len(utts)} utterances ({transcriber.options.method}) -> {out / 'hyp.txt'}")


def cmd_lm(args) -> None:
    from ..data import read_manifest
    from ..lm import build_lm, read_word_list, use_arpa

    if args.arpa:
        paths = use_arpa(args.arpa, args.out)
        print(f"{args.arpa} -> {paths['lm']}; lexicon of {sum(1 for _ in paths['lexicon'].open())} words -> "
              f"{paths['lexicon']}")
        return
    if not args.manifest:
        sys.exit("asr lm: give --manifest (transcripts to train on) or --arpa (an LM made elsewhere)")
    utts = read_manifest(args.manifest)
    words = read_word_list(args.words) if args.words else []
    spelled = read_word_list(args.spell_words) if args.spell_words else []
    paths = build_lm([u.text for u in utts], args.out, order=args.order, transcript_weight=args.transcript_weight,
                     words=words, spelled=spelled, extra_text=args.text)
    size = sum(1 for _ in paths["lexicon"].open())
    extra = (f" (x{args.transcript_weight})" if args.transcript_weight > 1 else "") + (
        f" + {len(words)} listed words" if words else "") + (f" + {len(spelled)} spelled words" if spelled else "") + (
        f" + the lines of {args.text}" if args.text else "")
    print(f"{args.order}-gram LM on {len(utts)} transcripts{extra} -> {paths['lm']}; "
          f"lexicon of {size} words -> {paths['lexicon']}")


def cmd_tune(args) -> None:
    from ..data import read_manifest
    from ..decode import save_decoding
    from ..tune import tune_decoding

    utts = read_manifest(args.manifest)
    transcriber = load_transcriber(args)
    best, grid = tune_decoding(transcriber, utts, transcriber.options)
    save_decoding(args.out, best, grid)
    row = min(grid[1:], key=lambda r: r["wer"])
    print(f"best on {args.manifest}: lm_weight {best.lm_weight:g} word_score {best.word_score:g} "
          f"%WER {row['wer']:.2f} (greedy {grid[0]['wer']:.2f}) -> {args.out}")


def cmd_export(args) -> None:
    from ..export import export_onnx, export_sherpa_onnx, export_torchscript

    fmt = args.format or ("onnx" if args.out.endswith(".onnx") else "torchscript")
    if fmt == "sherpa-onnx":
        if args.int8:
            sys.exit("asr export: --int8 is for --format onnx or torchscript")
        out = export_sherpa_onnx(args.model, args.out)
        print(f"sherpa-onnx (OfflineRecognizer.from_nemo_ctc) -> {out / 'model.onnx'}, {out / 'tokens.txt'}")
        return
    out = (export_onnx if fmt == "onnx" else export_torchscript)(args.model, args.out, int8=args.int8)
    print(f"{'ONNX' if fmt == 'onnx' else 'TorchScript'}{' (int8 dynamic quantisation)' if args.int8 else ''} -> "
          f"{out} ({out.stat().st_size / 1e6:.1f} MB)")
    if fmt == "onnx" and args.int8:
        from ..checkpoint import read_checkpoint

        cell = read_checkpoint(args.model)["model_config"].get("cell", "gru")
        if cell != "lstm":
            print(f"note: onnxruntime has no int8 {cell.upper()} kernel: only the output layer is int8 and the "
                  f"model runs at fp32's speed (recipes/an4/RESULTS.md); the fp32 export is the one to ship")


def cmd_average(args) -> None:
    from ..average import average_checkpoints, epoch_checkpoints

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

    print(compare_runs(args.exps, args.out, args.manifest, args.reach_utts), end="")
    print(f"table, plots and compare.json -> {args.out}")


def cmd_transcribe(args) -> None:
    from ..transcribe import format_srt, format_tsv, format_vtt

    fmt = "json" if args.json else {"text": "txt"}.get(args.format, args.format)
    transcriber = load_transcriber(args)
    results = transcriber.transcribe(args.audio, errors="keep")   # a bad file is reported; the others go on
    render = {"txt": lambda r: r.text + "\n", "json": lambda r: json.dumps(transcript_json(r)) + "\n",
              "srt": lambda r: format_srt(r.words), "vtt": lambda r: format_vtt(r.words),
              "tsv": lambda r: format_tsv(r.words)}[fmt]
    written: set[Path] = set()
    for result in results:
        if result.error:
            print(json.dumps({"path": result.path, "error": result.error}) if fmt == "json"
                  else f"{result.path}\tERROR: {result.error}")
            print(f"asr transcribe: {result.error}", file=sys.stderr)
        elif args.out_dir:
            target, n = Path(args.out_dir) / f"{Path(result.path).stem}.{fmt}", 1
            while target in written:                  # a.wav and a.flac, or two folders' a.wav: a-2.txt
                n += 1
                target = Path(args.out_dir) / f"{Path(result.path).stem}-{n}.{fmt}"
            written.add(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(render(result), encoding="utf-8")
            print(f"{result.path}\t{target}")
        elif fmt == "txt":
            print(f"{result.path}\t{result.text}")
        else:
            print(render(result), end="")
    failed = sum(r.error is not None for r in results)
    if failed:
        sys.exit(f"asr transcribe: {failed} of {len(results)} file(s) could not be transcribed")


def transcript_json(result) -> dict:
    """A Transcript as `asr transcribe --format json` writes it: path, text, duration, words with times."""
    from dataclasses import asdict

    return {"path": result.path, "text": result.text, "duration": round(result.duration, 3),
            "words": [{**asdict(w), "start": round(w.start, 2), "end": round(w.end, 2)} for w in result.words]}


def cmd_vocab(args) -> None:
    from ..data import read_manifest
    from ..text import Vocabulary, vocabulary_report

    utts = read_manifest(args.manifest)
    report = vocabulary_report([u.text for u in utts], Vocabulary(text_config(args, args.manifest).alphabet))
    print(f"{len(utts)} utterances, {sum(report['counts'].values())} characters, {len(report['counts'])} distinct")
    for c, n in report["counts"].items():
        flag = "\toutside the vocabulary" if c in report["outside"] else ""
        print(f"{c!r}\t{n}{flag}")
    for i in report["bad_utterances"]:
        print(f"outside the vocabulary: {utts[i].id}\t{utts[i].text}")
    if report["bad_utterances"]:
        sys.exit(f"asr vocab: {len(report['bad_utterances'])} utterance(s) with characters outside the vocabulary")


def cmd_nemo_export(args) -> None:
    from ..corpora.nemo import export_nemo
    from ..data import read_manifest

    utts = read_manifest(args.manifest)
    print(f"{len(utts)} utterances -> {export_nemo(utts, args.out)}")


def cmd_kaldi_import(args) -> None:
    from ..corpora.kaldi import import_kaldi
    from ..data import write_manifest

    n = write_manifest(args.out, import_kaldi(args.dir))
    print(f"{n} utterances of {args.dir} -> {args.out}")


def cmd_kaldi_export(args) -> None:
    from ..corpora.kaldi import export_kaldi
    from ..data import read_manifest

    utts = read_manifest(args.manifest)
    paths = export_kaldi(utts, args.out, audio=args.audio)
    print(f"{len(utts)} utterances -> {', '.join(str(p) for p in paths.values())}")


def serve_options(args):
    """ServeOptions from `asr serve`'s flags (the API key from --api-key, else $ASR_API_KEY)."""
    import os

    from ..serve.app import ServeOptions
    from ..serve.batch import serve_workers

    return ServeOptions(model_name=args.model_name or Path(args.model).stem,
                        api_key=args.api_key or os.environ.get("ASR_API_KEY") or None, max_batch=args.max_batch,
                        model_workers=args.model_workers or serve_workers(),
                        batch_window=args.batch_window, max_queue=args.max_queue,
                        max_upload_bytes=int(args.max_upload_mb * 1024 ** 2), max_audio_seconds=args.max_audio_seconds,
                        request_timeout=args.timeout)


def cmd_serve(args) -> None:
    import torch

    from ..serve.app import serve
    from ..serve.batch import serve_threads

    options = serve_options(args)
    threads = args.model_threads or serve_threads(options.model_workers)
    torch.set_num_threads(threads)
    transcriber = load_transcriber(args)
    print(f"serving {args.model} as {options.model_name!r} on http://{args.host}:{args.port} "
          f"(API key {'required' if options.api_key else 'not required'}; "
          f"{options.model_workers} model workers of {threads} torch threads)", file=sys.stderr)
    serve(transcriber, options, args.host, args.port)
