"""Data commands: corpora into manifests, their checks, and the files built from them before training.

    asr prepare an4 --out data/an4                 manifests (train/dev/test.jsonl), rejected.jsonl
    asr validate data/an4/train.jsonl              every entry checked, problems named, exit 1 if any is unusable
    asr vocab --manifest M                         the transcripts' characters, and any outside the vocabulary
    asr kaldi-export / kaldi-import / nemo-export  manifests to and from Kaldi data dirs and NeMo manifests
    asr stats --config C --manifest M --out S      normalisation statistics for C's features
    asr shard --manifest M --out D                 WebDataset tar shards + D/index.json (train_shards=D/index.json)
    asr lm --manifest M --out L                    word n-gram LM (KenLM) + lexicon from transcripts
"""
from __future__ import annotations

import sys
from pathlib import Path

from .args import add_config_args, default_of, given, text_config, train_config


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


def add_parsers(sub) -> None:
    p = sub.add_parser("prepare", help="write JSONL manifests for a corpus")
    p.add_argument("corpus_name", choices=CorpusNames(), metavar="CORPUS", help="a registered corpus: %(choices)s")
    p.add_argument("--out", required=True, help="directory for train/dev/test.jsonl (an4, fsdd) or all.jsonl")
    p.add_argument("--corpus", help="corpus dir (an4: default $AN4_DIR, ../shared/corpora/an4/an4, else download; "
                                    "fsdd: ../shared/corpora/fsdd, else download), a folder, a CSV, a Kaldi dir")
    p.add_argument("--max-utts", type=int, help="keep only the first N train utterances (N/4 dev and test)")
    add_config_args(p, "training YAML; its `text` section says how to normalise transcripts (default: the "
                       "corpus's own: English's, or for custom and commonvoice what the data and its locale ask)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("validate", help="check every entry of a manifest; name each problem; reject unusable ones")
    p.add_argument("manifest")
    p.add_argument("--config", help="training YAML (its text alphabet, features and model set the checks)")
    p.add_argument("--rejected", help="JSONL of rejected entries with reasons (default: <manifest>.rejected.jsonl)")
    p.add_argument("--max-seconds", type=float, help="reject longer utterances (default: asr.validate.MAX_SECONDS)")
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
    p.add_argument("--audio", choices=("pipe", "copy"),
                   help="non-WAV audio (SPHERE, FLAC, ...) in wav.scp: the pipe Kaldi recipes use (sph2pipe, flac, "
                        "ffmpeg; the default) or 16-bit WAV copies written into the dir")
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
    add_config_args(p, "training YAML; its `features` section picks the features")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("shard", help="a manifest's utterances as WebDataset tar shards (FLAC + JSON) and an index")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="folder or fsspec URL for shard-NNNNNN.tar and index.json")
    p.add_argument("--shard-mb", type=float,
                   help="target size of a shard in MiB (default: asr.shards.DEFAULT_SHARD_BYTES)")
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("lm", help="word n-gram LM (KenLM lmplz) and lexicon from a manifest's transcripts")
    p.add_argument("--manifest", help="transcripts to train on (not with --arpa)")
    p.add_argument("--text", help="a normalised text file (.gz too) whose lines join the LM text, streamed "
                   "(LibriSpeech's librispeech-lm-norm.txt.gz)")
    p.add_argument("--arpa", help="use this ARPA LM (.gz too: LibriSpeech's 3-gram.pruned.1e-7.arpa.gz) and the "
                   "lexicon of its words instead of training one")
    p.add_argument("--out", required=True, help="directory for lm.arpa (and lm.bin), lexicon.txt, words.txt")
    p.add_argument("--order", type=int, help="n-gram order (default: asr.lm.build_lm's)")
    p.add_argument("--transcript-weight", type=int,
                   help="repeat the transcripts N times in the LM text (their weight against the extra text)")
    p.add_argument("--words", help="a word list or pronunciation dictionary (first field per line): words the "
                   "transcripts lack join the lexicon and the LM as one-word sentences")
    p.add_argument("--spell-words", help="a word list whose words join the LM text spelled out as letters "
                   "(J E N N I F E R), for speech that spells names")
    p.set_defaults(func=cmd_lm)


def cmd_prepare(args) -> None:
    from ..corpora import get_corpus

    corpus = get_corpus(args.corpus_name)
    options = {**given(args, "max_utts"), **({"text": text_config(args)} if args.config or args.overrides else {})}
    unsupported = set(options) - set(corpus.options) - {"text"}
    if unsupported:
        sys.exit(f"asr prepare {corpus.name}: --{'/--'.join(sorted(unsupported)).replace('_', '-')} is not an option "
                 f"of this corpus")
    folder = Path(args.corpus) if args.corpus else corpus.locate(args.out)
    paths = corpus.prepare(folder, args.out, **options)
    for name, path in paths.items():
        print(f"{name}: {sum(1 for _ in path.open())} utterances -> {path}" if path.suffix == ".jsonl"
              else f"{name} -> {path}")
    rejected = Path(args.out) / "rejected.jsonl"
    n = sum(1 for _ in rejected.open()) if rejected.exists() else 0
    print(f"rejected: {n} utterance(s){f' -> {rejected} (with reasons; asr validate explains)' if n else ''}")


def cmd_validate(args) -> None:
    from ..validate import validate_manifest

    out = Path(args.rejected or Path(args.manifest).with_suffix(".rejected.jsonl"))
    report = validate_manifest(args.manifest, args.config, out, full=not args.quick, progress=sys.stderr.isatty(),
                               **given(args, "max_seconds"))
    for f in report.findings:
        print(f"{'REJECT' if f.fatal else 'note  '} {f.id}: {f.reason} ({f.audio})")
    print(report.summary + (f"; rejected entries -> {out}" if report.rejected else ""))
    if report.rejected:
        sys.exit(1)


def cmd_vocab(args) -> None:
    from ..data import read_manifest, with_alphabet
    from ..tokens import Vocabulary, vocabulary_report

    utts = read_manifest(args.manifest)
    alphabet = with_alphabet(text_config(args, args.manifest), args.manifest).alphabet
    report = vocabulary_report([u.text for u in utts], Vocabulary(alphabet))
    print(f"{len(utts)} utterances, {sum(report['counts'].values())} characters, {len(report['counts'])} distinct")
    for c, n in report["counts"].items():
        flag = "\toutside the vocabulary" if c in report["outside"] else ""
        print(f"{c!r}\t{n}{flag}")
    for i in report["bad_utterances"]:
        print(f"outside the vocabulary: {utts[i].id}\t{utts[i].text}")
    if report["bad_utterances"]:
        sys.exit(f"asr vocab: {len(report['bad_utterances'])} utterance(s) with characters outside the vocabulary")


def cmd_kaldi_export(args) -> None:
    from ..corpora.kaldi import export_kaldi
    from ..data import read_manifest

    utts = read_manifest(args.manifest)
    paths = export_kaldi(utts, args.out, **given(args, "audio"))
    print(f"{len(utts)} utterances -> {', '.join(str(p) for p in paths.values())}")


def cmd_kaldi_import(args) -> None:
    from ..corpora.kaldi import import_kaldi
    from ..data import write_manifest

    n = write_manifest(args.out, import_kaldi(args.dir))
    print(f"{n} utterances of {args.dir} -> {args.out}")


def cmd_nemo_export(args) -> None:
    from ..corpora.nemo import export_nemo
    from ..data import read_manifest

    utts = read_manifest(args.manifest)
    print(f"{len(utts)} utterances -> {export_nemo(utts, args.out)}")


def cmd_stats(args) -> None:
    from ..data import read_manifest
    from ..features import manifest_stats, save_stats

    cfg = train_config(args)
    utts = read_manifest(args.manifest)
    mean, std, frames = manifest_stats(utts, cfg.features, progress=sys.stderr.isatty())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_stats(args.out, cfg.features, mean, std, frames)
    print(f"{cfg.features.kind} statistics over {frames} frames of {len(utts)} utterances -> {args.out}")


def cmd_shard(args) -> None:
    from ..data import read_manifest
    from ..shards import write_shards

    utts = read_manifest(args.manifest)
    print(f"{len(utts)} utterances ({sum(u.duration for u in utts) / 3600:.1f} h) of {args.manifest}")
    write_shards(utts, args.out, **({"shard_bytes": int(args.shard_mb * 2 ** 20)} if args.shard_mb else {}))


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
    options = given(args, "order", "transcript_weight")
    unit = text_config(args, args.manifest).word_unit        # as prepare recorded it beside the manifest
    paths = build_lm([u.text for u in utts], args.out, words=words, spelled=spelled, extra_text=args.text,
                     word_unit=unit, **options)
    size = sum(1 for _ in paths["lexicon"].open())
    order, weight = (options.get(k, default_of(build_lm, k)) for k in ("order", "transcript_weight"))
    extra = (f" (x{weight})" if weight > 1 else "") + (f" + {len(words)} listed words" if words else "") + (
        f" + {len(spelled)} spelled words" if spelled else "") + (f" + the lines of {args.text}" if args.text else "")
    print(f"{order}-gram LM on {len(utts)} transcripts{extra} -> {paths['lm']}; "
          f"lexicon of {size} words -> {paths['lexicon']}")
