"""Your own data end to end: whatever form it comes in, split into train / dev / test, with a training
config scaled to its duration; `make recipe RECIPE=custom SOURCE=...` runs all eight stages on it.

    asr prepare custom --corpus my_recordings/ --out data/custom     # or list.csv, a Kaldi dir, a NeMo
                                                                     # manifest, lhotse cuts or a lhotse dir

The source's form is detected: a Common Voice locale folder (clips/ and its TSVs), a Kaldi data dir
(wav.scp), a dir of lhotse manifests, a folder of
audio with same-named .txt transcripts (speaker: the first sub-folder, where files sit in
sub-folders), a CSV / TSV (path, text, optional speaker), a JSONL / JSON manifest (ours or NeMo's), a
lhotse CutSet. Dev and test are held out by speaker where at least five speakers are known (whole
speakers, as the AN4 and LibriSpeech recipes do), by utterance otherwise, 10 % of the audio each. The
config (`out/config.yaml`) is sized from the training audio's duration (CONFIG_STEPS). Without a `text`
config, the transcripts say which: English's for English letters, else the characters of the data, in any
script (asr.text.detect_text_config; a Common Voice folder, its locale's).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..data import Utterance, read_manifest
from .base import Corpus, hold_out, normalised, register, write_splits

# (hours of training audio up to, model and schedule): the AN4 recipe's config at an hour (0.92 M
# parameters, 60 epochs), more layers and width and fewer epochs as the data grows
CONFIG_STEPS = ((0.25, dict(hidden=128, layers=2, conv_channels=128), 80),
                (2.0, dict(hidden=160, layers=2, conv_channels=160), 60),
                (10.0, dict(hidden=256, layers=3, conv_channels=256), 40),
                (100.0, dict(hidden=512, layers=4, conv_channels=320), 25),
                (float("inf"), dict(hidden=768, layers=5, conv_channels=512), 15))


def source_kind(source: str | Path) -> str:
    """Which reader `source` needs: commonvoice, kaldi, lhotse, folder, csv or manifest."""
    from .commonvoice import is_commonvoice
    from .lhotse_manifests import is_lhotse

    path = Path(source)
    if path.is_dir():
        if is_commonvoice(path):
            return "commonvoice"
        if (path / "wav.scp").exists():
            return "kaldi"
        if any(p.name.endswith((".jsonl.gz", ".jsonl")) and any(k in p.name for k in ("_cuts_", "_supervisions_"))
               for p in path.iterdir()):
            return "lhotse"
        return "folder"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix.lower() in (".csv", ".tsv", ".tab"):
        return "csv"
    if is_lhotse(path):
        return "lhotse"
    if path.suffix.lower() in (".json", ".jsonl"):
        return "manifest"
    raise ValueError(f"{path}: not a form this recipe reads (an audio folder, a CSV / TSV, a Kaldi dir, a JSONL or "
                     f"NeMo manifest, lhotse manifests)")


def read_source(source: str | Path, text=None) -> list[Utterance]:
    """Every utterance of `source` (not a Common Voice folder: asr.corpora.commonvoice splits those), transcripts
    normalised per `text` (None: as written)."""
    from ..text import normalize_text
    from .folder import read_csv, read_folder
    from .kaldi import import_kaldi
    from .lhotse_manifests import _splits, read_lhotse

    kind = source_kind(source)
    if kind == "folder":
        utts = read_folder(source, None)
    elif kind == "csv":
        utts = read_csv(source, None)
    elif kind == "manifest":
        utts = read_manifest(source)
    elif kind == "kaldi":
        utts = import_kaldi(source)
    elif kind == "lhotse":
        utts = ([u for files in _splits(Path(source)).values() for u in read_lhotse(*files)] if Path(source).is_dir()
                else read_lhotse(source))
    else:
        raise ValueError(f"{source}: a {kind} source is read by its own corpus module")
    return utts if text is None else [replace(u, text=normalize_text(u.text, text)) for u in utts]


def scaled_config(train_hours: float, text=None) -> str:
    """A training config (YAML, over asr.config.TrainConfig's defaults) sized for `train_hours` of audio, with
    the `text` section the transcripts were prepared with (what differs from TextConfig's defaults)."""
    from ..config import section_yaml
    from ..text import TextConfig

    upto, model, epochs = next(step for step in CONFIG_STEPS if train_hours <= step[0])
    lines = [f"# Written by `asr prepare custom` for {train_hours:.2f} h of training audio (the step up to "
             f"{upto:g} h of asr/corpora/custom.py's CONFIG_STEPS); edit it, or override with EXTRA=\"key=value\".",
             f"epochs: {epochs}", "batch_frames: 5000", "keep_epochs: 5", "model:"]
    lines += [f"  {k}: {v}" for k, v in model.items()]
    lines += section_yaml("text", text or TextConfig(), skip=("learned",))   # how the transcripts were normalised
    return "\n".join(lines) + "\n"


def read_splits(corpus: str | Path, text=None):
    """(train / dev / test of `corpus`, the TextConfig they were normalised with): a Common Voice folder's own
    split (asr.corpora.commonvoice) and its locale's text config, or any other source held out here and, without
    a `text`, the config its transcripts ask for (asr.text.detect_text_config)."""
    from .commonvoice import locale_of, locale_text, read_commonvoice

    if source_kind(corpus) == "commonvoice":
        text = text or locale_text(locale_of(corpus))
        return read_commonvoice(corpus, text), text
    splits, text = normalised({"all": read_source(corpus)}, text)
    return hold_out(splits["all"]), text


def prepare_custom(corpus: str | Path, out_dir: str | Path, text=None) -> dict[str, Path]:
    """train / dev / test.jsonl of any source this package reads, and out_dir/config.yaml sized to its audio,
    with the text section its transcripts were normalised with."""
    splits, text = read_splits(corpus, text)
    paths = write_splits(splits, out_dir, text)
    hours = sum(u.duration for u in read_manifest(paths["train"])) / 3600
    (Path(out_dir) / "config.yaml").write_text(scaled_config(hours, text), encoding="utf-8")
    speakers = {name: len({u.speaker for u in us}) for name, us in splits.items()}
    print(f"{corpus} ({source_kind(corpus)}): " + ", ".join(f"{name} {len(us)} utterances"
          + (f" of {speakers[name]} speakers" if all(u.speaker for u in us) else "") for name, us in splits.items())
          + f"; {hours:.2f} h to train on -> {Path(out_dir) / 'config.yaml'}")
    return {**paths, "config": Path(out_dir) / "config.yaml"}


register(Corpus("custom", prepare_custom, "your own data in any form above (detected), split into train / dev / "
                                          "test by speaker where known, with a config sized to its duration"))
