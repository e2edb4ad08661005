"""Your own data end to end: whatever form it comes in, split into train / dev / test, with a training
config scaled to its duration; `make recipe RECIPE=custom SOURCE=...` runs all eight stages on it.

    asr prepare custom --corpus my_recordings/ --out data/custom     # or list.csv, a Kaldi dir, a NeMo
                                                                     # manifest, lhotse cuts or a lhotse dir

The source's form is detected: a Kaldi data dir (wav.scp), a dir of lhotse manifests, a folder of
audio with same-named .txt transcripts (speaker: the first sub-folder, where files sit in
sub-folders), a CSV / TSV (path, text, optional speaker), a JSONL / JSON manifest (ours or NeMo's), a
lhotse CutSet. Dev and test are held out by speaker where at least five speakers are known (whole
speakers, as the AN4 and LibriSpeech recipes do), by utterance otherwise, 10 % of the audio each. The
config (`out/config.yaml`) is sized from the training audio's duration (CONFIG_STEPS).
"""
from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from ..data import Utterance, read_manifest
from .base import Corpus, register, write_splits

HELD_OUT = 0.1          # of the audio, each for dev and test
MIN_SPEAKERS = 5        # fewer known speakers: hold out utterances instead
# (hours of training audio up to, model and schedule): the AN4 recipe's config at an hour (0.92 M
# parameters, 60 epochs), more layers and width and fewer epochs as the data grows
CONFIG_STEPS = ((0.25, dict(hidden=128, layers=2, conv_channels=128), 80),
                (2.0, dict(hidden=160, layers=2, conv_channels=160), 60),
                (10.0, dict(hidden=256, layers=3, conv_channels=256), 40),
                (100.0, dict(hidden=512, layers=4, conv_channels=320), 25),
                (float("inf"), dict(hidden=768, layers=5, conv_channels=512), 15))


def source_kind(source: str | Path) -> str:
    """Which reader `source` needs: kaldi, lhotse, folder, csv or manifest."""
    from .lhotse_manifests import is_lhotse

    path = Path(source)
    if path.is_dir():
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


def read_source(source: str | Path, text) -> list[Utterance]:
    """Every utterance of `source`, transcripts normalised per `text`."""
    from ..text import normalize_text
    from .folder import read_csv, read_folder
    from .kaldi import import_kaldi
    from .lhotse_manifests import _splits, read_lhotse

    kind = source_kind(source)
    if kind == "folder":
        return read_folder(source, text)
    if kind == "csv":
        return read_csv(source, text)
    if kind == "manifest":
        return read_manifest(source, text)
    if kind == "kaldi":
        utts = import_kaldi(source)
    elif Path(source).is_dir():
        utts = [u for files in _splits(Path(source)).values() for u in read_lhotse(*files)]
    else:
        utts = read_lhotse(source)
    return [replace(u, text=normalize_text(u.text, text)) for u in utts]


def hold_out(utts: list[Utterance], fraction: float = HELD_OUT, seed: int = 0) -> dict[str, list[Utterance]]:
    """train / dev / test: whole speakers held out where MIN_SPEAKERS are known, else utterances; each of dev
    and test gets at least `fraction` of the audio (and one unit), chosen reproducibly by `seed`."""
    speakers = sorted({u.speaker for u in utts})
    by_speaker = all(u.speaker for u in utts) and len(speakers) >= MIN_SPEAKERS
    units = speakers if by_speaker else sorted(u.id for u in utts)
    if len(units) < 3:
        raise ValueError(f"{len(utts)} utterance(s): too few to hold out a dev and a test set")
    key = (lambda u: u.speaker) if by_speaker else (lambda u: u.id)
    seconds: dict[str, float] = {}
    for u in utts:
        seconds[key(u)] = seconds.get(key(u), 0.0) + u.duration
    random.Random(seed).shuffle(units)
    total, split, taken = sum(seconds.values()), {}, 0
    for name in ("test", "dev"):
        got = 0.0
        while taken < len(units) - 1 and (got < fraction * total or not any(v == name for v in split.values())):
            split[units[taken]] = name
            got += seconds[units[taken]]
            taken += 1
    out = {"train": [], "dev": [], "test": []}
    for u in utts:
        out[split.get(key(u), "train")].append(u)
    return out


def scaled_config(train_hours: float) -> str:
    """A training config (YAML, over asr.config.TrainConfig's defaults) sized for `train_hours` of audio."""
    upto, model, epochs = next(step for step in CONFIG_STEPS if train_hours <= step[0])
    lines = [f"# Written by `asr prepare custom` for {train_hours:.2f} h of training audio (the step up to "
             f"{upto:g} h of asr/corpora/custom.py's CONFIG_STEPS); edit it, or override with EXTRA=\"key=value\".",
             f"epochs: {epochs}", "batch_frames: 5000", "keep_epochs: 5", "model:"]
    lines += [f"  {k}: {v}" for k, v in model.items()]
    return "\n".join(lines) + "\n"


def prepare_custom(corpus: str | Path, out_dir: str | Path, text=None) -> dict[str, Path]:
    """train / dev / test.jsonl of any source this package reads, and out_dir/config.yaml sized to its audio."""
    from ..text import TextConfig

    text = text or TextConfig()
    splits = hold_out(read_source(corpus, text))
    paths = write_splits(splits, out_dir, text)
    hours = sum(u.duration for u in read_manifest(paths["train"])) / 3600
    (Path(out_dir) / "config.yaml").write_text(scaled_config(hours))
    speakers = {name: len({u.speaker for u in us}) for name, us in splits.items()}
    print(f"{corpus} ({source_kind(corpus)}): " + ", ".join(f"{name} {len(us)} utterances"
          + (f" of {speakers[name]} speakers" if all(u.speaker for u in us) else "") for name, us in splits.items())
          + f"; {hours:.2f} h to train on -> {Path(out_dir) / 'config.yaml'}")
    return {**paths, "config": Path(out_dir) / "config.yaml"}


register(Corpus("custom", prepare_custom, "your own data in any form above (detected), split into train / dev / "
                                          "test by speaker where known, with a config sized to its duration"))
