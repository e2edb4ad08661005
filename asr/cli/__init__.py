"""`asr <subcommand>`: thin wrappers over the library.

    asr prepare an4 --out data/an4                 manifests (train/dev/test.jsonl), rejected.jsonl
    asr validate data/an4/train.jsonl              every entry checked, problems named, exit 1 if any is unusable
    asr stats --config C --manifest M --out S      normalisation statistics for C's features
    asr shard --manifest M --out D                 WebDataset tar shards + D/index.json (train_shards=D/index.json)
    asr train --config C key=value ...             train (see asr.config.TrainConfig)
    asr decode --model M --manifest T --out D      D/hyp.txt, one `id<TAB>text` per utterance
    asr lm --manifest M --out L                    word n-gram LM (KenLM) + lexicon from transcripts
    asr tune --model M --manifest dev --lm-dir L --out J   LM weight / word score grid on dev
    asr export --model M --out model.ts [--int8]   TorchScript, optionally quantised
    asr score --manifest T --hyp D/hyp.txt         %WER / %CER, per-utterance results in D
    asr report EXP --manifest T                    EXP/report.html with curves, scores, worst utterances
    asr compare EXP1 EXP2 ... --out D              runs side by side: table, gradient norms and reach, dev WER
    asr average --exp EXP --last 5 --out avg.pt    checkpoint averaging (train with keep_epochs=5)
    asr transcribe --model M a.wav b.flac          `path<TAB>text` (or --json)
    asr bench train --batch-sizes 32,64 k=v ...    training throughput: model-only vs full pipeline
    asr bench plan --config C --gpus 1,8,64 ...    PREDICTED hours per epoch / run from that throughput
    asr serve --model M [--port 8000]              OpenAI-compatible transcription server (asr.serve)
    asr bench serve --model M --manifest T         the server under N concurrent clients: latency, throughput
"""
from __future__ import annotations

import argparse

from ..transcripts import TRANSCRIPT_FORMATS
from .bench import cmd_bench, cmd_bench_decode, cmd_bench_plan, cmd_bench_serve, cmd_bench_stream
from .commands import (
    cmd_average,
    cmd_compare,
    cmd_decode,
    cmd_export,
    cmd_kaldi_export,
    cmd_kaldi_import,
    cmd_lm,
    cmd_nemo_export,
    cmd_prepare,
    cmd_report,
    cmd_serve,
    cmd_shard,
    cmd_stats,
    cmd_train,
    cmd_transcribe,
    cmd_tune,
    cmd_validate,
    cmd_vocab,
)
from .score import cmd_score


class CorpusNames:
    """The registered corpus names (asr.corpora), read when argparse first checks or lists them, so that
    building the parser (and `asr --help`) imports no corpus module."""

    def _names(self) -> list[str]:
        from ..corpora import corpora

        return list(corpora())

    def __contains__(self, name) -> bool:
        return name in self._names()

    def __iter__(self):
        return iter(self._names())


def add_decoding_args(p) -> None:
    p.add_argument("--decoding", help="decoding options tuned by `asr tune` (JSON)")
    p.add_argument("--method", choices=["greedy", "beam"])
    p.add_argument("--lm-dir", help="beam search with this dir's LM (lm.bin, else lm.arpa) and lexicon.txt "
                                    "(from `asr lm`)")
    p.add_argument("--beam-size", type=int)
    p.add_argument("--lm-weight", type=float)
    p.add_argument("--word-score", type=float)
    p.add_argument("--threads", type=int, help="beam-search threads (default: one per core)")
    p.add_argument("--chunk-seconds", type=float, help="cut longer inputs into overlapping chunks (default 30)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asr", description="Recurrent CTC speech recognition.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="write JSONL manifests for a corpus")
    p.add_argument("corpus_name", choices=CorpusNames(), metavar="CORPUS", help="a registered corpus: %(choices)s")
    p.add_argument("--out", required=True, help="directory for train/dev/test.jsonl (an4, fsdd) or all.jsonl")
    p.add_argument("--corpus", help="corpus dir (an4: default $AN4_DIR, ../shared/corpora/an4/an4, else download; "
                                    "fsdd: ../shared/corpora/fsdd, else download), a folder, a CSV, a Kaldi dir")
    p.add_argument("--max-utts", type=int, help="keep only the first N train utterances (N/4 dev and test)")
    p.add_argument("--config", help="training YAML; its `text` section says how to normalise transcripts")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("validate", help="check every entry of a manifest; name each problem; reject unusable ones")
    p.add_argument("manifest")
    p.add_argument("--config", help="training YAML (its text alphabet, features and model set the checks)")
    p.add_argument("--rejected", help="JSONL of rejected entries with reasons (default: <manifest>.rejected.jsonl)")
    p.add_argument("--max-seconds", type=float, help="reject longer utterances (default 60)")
    p.add_argument("--quick", action="store_true", help="headers and transcripts only; do not decode the audio")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("vocab", help="characters of a manifest's transcripts, counts, and any outside the vocabulary")
    p.add_argument("--manifest", required=True)
    p.add_argument("--config", help="training YAML whose `text` section sets the vocabulary (default: the "
                                    "normalisation prepare recorded beside the manifest)")
    p.set_defaults(func=cmd_vocab)

    p = sub.add_parser("kaldi-export", help="write a manifest as a Kaldi data dir (wav.scp, text, utt2spk, spk2utt) "
                                            "that Kaldi's validate_data_dir.sh accepts")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--audio", choices=("pipe", "copy"), default="pipe",
                   help="non-WAV audio (SPHERE, FLAC, ...) in wav.scp: the pipe Kaldi recipes use (sph2pipe, flac, "
                        "ffmpeg; default) or 16-bit WAV copies written into the dir")
    p.set_defaults(func=cmd_kaldi_export)

    p = sub.add_parser("kaldi-import", help="read a Kaldi data dir (wav.scp, text, utt2spk, segments) into a "
                                            "manifest, as written (`asr prepare kaldi` also normalises and checks)")
    p.add_argument("--dir", required=True, help="the Kaldi data dir")
    p.add_argument("--out", required=True, help="the manifest (.jsonl) to write")
    p.set_defaults(func=cmd_kaldi_import)

    p = sub.add_parser("nemo-export", help="write a manifest as a NeMo manifest (audio_filepath, duration, text)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_nemo_export)

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
    add_decoding_args(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("shard", help="a manifest's utterances as WebDataset tar shards (FLAC + JSON) and an index")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="folder or fsspec URL for shard-NNNNNN.tar and index.json")
    p.add_argument("--shard-mb", type=float, default=256, help="target size of a shard in MiB (default 256)")
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("lm", help="word n-gram LM (KenLM lmplz) and lexicon from a manifest's transcripts")
    p.add_argument("--manifest", help="transcripts to train on (not with --arpa)")
    p.add_argument("--text", help="a normalised text file (.gz too) whose lines join the LM text, streamed "
                   "(LibriSpeech's librispeech-lm-norm.txt.gz)")
    p.add_argument("--arpa", help="use this ARPA LM (.gz too: LibriSpeech's 3-gram.pruned.1e-7.arpa.gz) and the "
                   "lexicon of its words instead of training one")
    p.add_argument("--out", required=True, help="directory for lm.arpa (and lm.bin), lexicon.txt, words.txt")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--transcript-weight", type=int, default=1,
                   help="repeat the transcripts N times in the LM text (their weight against the extra text)")
    p.add_argument("--words", help="a word list or pronunciation dictionary (first field per line): words the "
                   "transcripts lack join the lexicon and the LM as one-word sentences")
    p.add_argument("--spell-words", help="a word list whose words join the LM text spelled out as letters "
                   "(J E N N I F E R), for speech that spells names")
    p.set_defaults(func=cmd_lm)

    p = sub.add_parser("tune", help="grid search of beam-search LM weight and word score on a dev manifest")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="JSON with the chosen options and the grid")
    p.add_argument("--device", default="cpu")
    add_decoding_args(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("export", help="ONNX, a sherpa-onnx model dir, or TorchScript (features + model in one "
                                      "file), optionally int8")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="the file (onnx, torchscript) or dir (sherpa-onnx) to write")
    p.add_argument("--format", choices=["onnx", "sherpa-onnx", "torchscript"],
                   help="default: onnx for an --out ending in .onnx, else torchscript")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (onnxruntime's for onnx, "
                   "PyTorch's of the recurrent and linear layers for torchscript)")
    p.set_defaults(func=cmd_export)

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
    p.add_argument("--reach-utts", type=int, default=20)
    p.set_defaults(func=cmd_compare)

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

    p = bench.add_parser("plan", help="PREDICTED hours per epoch and per run on N GPUs, from measured bench train rows")
    p.add_argument("--config", help="training YAML (model, batch_frames, epochs, speed_perturb)")
    p.add_argument("--gpus", default="1,8,64", help="comma-separated GPU counts (default 1,8,64)")
    p.add_argument("--train-hours", type=float, help="hours of training audio an epoch (LibriSpeech: 100.6, 960.9)")
    p.add_argument("--manifest", help="... or the training manifest, to sum them")
    p.add_argument("--throughput", help="asr bench train rows: a rows JSON that names its model, or a YAML listing "
                   "rows files with their models (default: recipes/librispeech/h200_throughput.yaml)")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--intra-gbs", type=float, default=300.0, help="all-reduce GB/s per GPU within a node (NVLink)")
    p.add_argument("--inter-gbs", type=float, default=50.0, help="... and between nodes (400 Gb/s per GPU)")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. batch_frames=40000 epochs=30")
    p.set_defaults(func=cmd_bench_plan)

    p = bench.add_parser("decode", help="real-time factor of transcription: checkpoint, ONNX fp32 / int8, sherpa-onnx, "
                                        "TorchScript, LM beam; at each thread count")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--limit", type=int, help="only the first N utterances")
    p.add_argument("--out", help="also write the rows as JSON here")
    add_decoding_args(p)
    p.add_argument("--thread-counts", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2],
                   help="comma-separated thread counts, each timed in turn (default 1,2)")
    p.set_defaults(func=cmd_bench_decode)

    p = bench.add_parser("stream", help="streaming: WER, word latency and RTF of a unidirectional model")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--chunk-ms", type=int, default=100, help="audio per feed() call")
    p.add_argument("--limit", type=int, help="only the first N utterances")
    p.add_argument("--out", help="also write the numbers as JSON here")
    p.set_defaults(func=cmd_bench_stream)

    p = bench.add_parser("serve", help="asr serve under N concurrent clients on loopback: latency percentiles, "
                                       "audio seconds per second, errors, memory; batched vs one at a time")
    p.add_argument("--model", required=True)
    p.add_argument("--manifest", required=True, help="the utterances the clients send (in turn, round robin)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0, help="how long each server is loaded, in all")
    p.add_argument("--rounds", type=int, default=4, help="turns the servers take, seconds / rounds each, so that "
                                                         "a host's drifting speed slows every row alike")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-window", type=float, default=0.05)
    p.add_argument("--model-threads", type=int, help="the server's --model-threads (default: its own default)")
    p.add_argument("--model-workers", type=int, help="the server's --model-workers for the batched run and the "
                                                     "unbatched one beside it (default: its own default)")
    p.add_argument("--device", default="cpu", help="the server's --device")
    p.add_argument("--no-keepalive", dest="keepalive", action="store_false",
                   help="a new connection for every request (default: each client keeps one open, as HTTP clients do)")
    p.add_argument("--limit", type=int, help="only the first N utterances")
    p.add_argument("--out", help="also write the rows as JSON here")
    p.set_defaults(func=cmd_bench_serve)

    p = sub.add_parser("transcribe", help="transcribe audio files")
    p.add_argument("--model", required=True)
    p.add_argument("--format", choices=["txt", "json", "srt", "vtt", "tsv", "text"], default="txt",
                   help="txt: path<TAB>text lines (a file's text alone with --out-dir); json: one object per file "
                        "with words, times, confidences; srt / vtt: subtitles; tsv: whisper's start<TAB>end<TAB>text "
                        "(milliseconds). `text` is txt")
    p.add_argument("--json", action="store_true", help="the same as --format json")
    p.add_argument("--out-dir", help="write <name>.<format> for each file here (and print path<TAB>file) instead of "
                                     "printing the transcripts")
    p.add_argument("--device", default="cpu")
    add_decoding_args(p)
    p.add_argument("audio", nargs="+")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("serve", help="an OpenAI-compatible transcription server (POST /v1/audio/transcriptions, "
                                     "a streaming WebSocket, a page at /, /health, /metrics)")
    p.add_argument("--model", required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-name", help="the id GET /v1/models lists (default: the model file's stem)")
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` (default: $ASR_API_KEY, else none)")
    p.add_argument("--max-batch", type=int, default=16, help="requests decoded together at most")
    p.add_argument("--batch-window", type=float, default=0.05,
                   help="seconds to wait for more requests after a batch's first (default 0.05)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="transcription requests in progress at once; more get 503 (default 64)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="larger uploads get 413 (default 25)")
    p.add_argument("--max-audio-seconds", type=float, default=600.0, help="longer audio gets 413 (default 600)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request before 504 (default 120)")
    p.add_argument("--model-threads", type=int,
                   help="torch threads for each model worker (default: the cores less one, shared by the workers, "
                        "at least one, leaving a core to the event loop and upload decoding)")
    p.add_argument("--model-workers", type=int,
                   help="batches computed at once, each in its own thread (default: 2 where there are two cores or "
                        "more, on a CPU or a GPU)")
    add_decoding_args(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from ..guards import run_command  # after parsing: `asr --help` needs no torch

    run_command(f"asr {args.command}", args.func, args)


if __name__ == "__main__":
    main()
