"""Decoding commands: a trained model on a manifest or on files, its beam search tuned, and its export.

    asr decode --model M --manifest T --out D      D/hyp.txt (`id<TAB>text`) and D/decoding.json (how)
    asr tune --model M --manifest dev --lm-dir L --out J   LM weight / word score grid on dev
    asr transcribe --model M a.wav b.flac          `path<TAB>text`, or --format json | srt | vtt | tsv
    asr export --model M --out model.onnx          ONNX, a sherpa-onnx dir, or TorchScript (features included)
"""
from __future__ import annotations

import json
import sys

from ..transcripts import OUTPUT_FORMATS
from .args import add_decoding_args, add_model_args, load_transcriber


def add_parsers(sub) -> None:
    p = sub.add_parser("decode", help="transcribe every utterance of a manifest")
    add_model_args(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    add_decoding_args(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("tune", help="grid search of beam-search LM weight and word score on a dev manifest")
    add_model_args(p)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="JSON with the chosen options and the grid")
    add_decoding_args(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("transcribe", help="transcribe audio files")
    add_model_args(p)
    p.add_argument("--format", choices=[*OUTPUT_FORMATS, "text"], default="txt",
                   help="txt: path<TAB>text lines (a file's text alone with --out-dir); json: one object per file "
                        "with words, times, confidences; srt / vtt: subtitles; tsv: whisper's start<TAB>end<TAB>text "
                        "(milliseconds). `text` is txt")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument("--out-dir", help="write <name>.<format> for each file here (and print path<TAB>file) instead of "
                                     "printing the transcripts")
    p.add_argument("--digits", metavar="LANG", help="write spelled numbers as digits by text2num's rules for this "
                                                    "language (en, fr, es, de, ...): TWENTY THREE -> 23")
    add_decoding_args(p)
    p.add_argument("audio", nargs="+")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("export", help="ONNX, a sherpa-onnx model dir, or TorchScript (features + model in one "
                                      "file), optionally int8")
    add_model_args(p, runs=False)
    p.add_argument("--out", required=True, help="the file (onnx, torchscript) or dir (sherpa-onnx) to write")
    p.add_argument("--format", help="onnx, sherpa-onnx or torchscript (default: onnx for an --out ending in .onnx, "
                                    "else torchscript)")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (onnxruntime's for onnx, "
                   "PyTorch's of the recurrent and linear layers for torchscript)")
    p.set_defaults(func=cmd_export)


def cmd_decode(args) -> None:
    from ..data import read_manifest
    from ..decode import decode_manifest

    transcriber = load_transcriber(args)
    hyp = decode_manifest(transcriber, read_manifest(args.manifest), args.out)
    print(f"decoded {sum(1 for _ in hyp.open())} utterances ({transcriber.options.method}) -> {hyp}")


def cmd_tune(args) -> None:
    from ..data import read_manifest
    from ..decode import save_decoding
    from ..tune import tune_decoding

    utts = read_manifest(args.manifest)
    transcriber = load_transcriber(args)
    best, grid = tune_decoding(transcriber, utts, transcriber.options)
    save_decoding(args.out, best, grid)
    row = min(grid[1:], key=lambda r: r["headline"])
    print(f"best on {args.manifest}: lm_weight {best.lm_weight:g} word_score {best.word_score:g} "
          f"%WER {row['wer']:.2f} (greedy {grid[0]['wer']:.2f}) -> {args.out}")


def cmd_transcribe(args) -> None:
    from ..transcripts import get_writer, render, with_digits

    fmt = "json" if args.json else {"text": "txt"}.get(args.format, args.format)
    results = load_transcriber(args).transcribe(args.audio, errors="keep")   # a bad file is reported, others go on
    if args.digits:
        results = [r if r.error else with_digits(r, args.digits) for r in results]
    write = get_writer(fmt, args.out_dir) if args.out_dir else None
    for result in results:
        if result.error:
            print(json.dumps({"path": result.path, "error": result.error}) if fmt == "json"
                  else f"{result.path}\tERROR: {result.error}")
            print(f"asr transcribe: {result.error}", file=sys.stderr)
        elif write is not None:
            print(f"{result.path}\t{write(result)}")
        elif fmt == "txt":
            print(f"{result.path}\t{result.text}")
        else:
            print(render(result, fmt), end="")
    failed = sum(r.error is not None for r in results)
    if failed:
        sys.exit(f"asr transcribe: {failed} of {len(results)} file(s) could not be transcribed")


def cmd_export(args) -> None:
    from ..export import export_model

    fmt = args.format or ("onnx" if args.out.endswith(".onnx") else "torchscript")
    out, notes = export_model(args.model, args.out, fmt, int8=args.int8)
    if fmt == "sherpa-onnx":
        print(f"sherpa-onnx (OfflineRecognizer.from_nemo_ctc) -> {out / 'model.onnx'}, {out / 'tokens.txt'}")
    else:
        print(f"{'ONNX' if fmt == 'onnx' else 'TorchScript'}{' (int8 dynamic quantisation)' if args.int8 else ''} -> "
              f"{out} ({out.stat().st_size / 1e6:.1f} MB)")
    for note in notes:
        print(f"note: {note}")
