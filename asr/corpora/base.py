"""What every corpus module shares: the registry entry (`Corpus`, `register`) and the helpers that
fetch archives, make utterances, hold out dev and test by speaker, normalise transcripts and write checked
manifests."""
from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import PROJECT_ROOT

if TYPE_CHECKING:
    from ..data import Utterance

HELD_OUT = 0.1          # of the audio, each for dev and test, where a corpus has no split of its own
MIN_SPEAKERS = 5        # fewer known speakers: hold out utterances instead
REJECTED = "rejected.jsonl"  # beside the manifests: the entries prepare left out, with reasons
SHARED_CORPORA = PROJECT_ROOT.parent / "shared" / "corpora"  # corpora kept beside the project


@dataclass(frozen=True)
class Corpus:
    """A corpus `asr prepare <name>` knows: how to find its folder and how to write its manifests.

    `prepare(corpus_dir, out_dir, text=TextConfig, **options)` returns the manifests it wrote; it
    never downloads. The folder is --corpus when given, else $`env`, else `shared` under
    ../shared/corpora beside the project, else what `download(download_dir)` fetches.
    """
    name: str
    prepare: Callable[..., dict[str, Path]]
    summary: str
    env: str | None = None
    shared: str | None = None
    download: Callable[[Path], Path] | None = None
    options: tuple[str, ...] = ()       # prepare's keyword options beyond `text` (e.g. max_utts)

    def locate(self, download_dir: str | Path) -> Path:
        """The corpus folder when none is given: $env, else the shared copy, else a download."""
        if self.env and os.environ.get(self.env):
            return Path(os.environ[self.env])
        if self.shared and (SHARED_CORPORA / self.shared).is_dir():
            return SHARED_CORPORA / self.shared
        if self.download is not None:
            return self.download(Path(download_dir))
        raise ValueError(f"{self.name}: say where the corpus is (--corpus DIR)")


REGISTRY: dict[str, Corpus] = {}


def register(corpus: Corpus) -> Corpus:
    """Add `corpus` to the registry `asr prepare` reads (each corpus module registers its own)."""
    if corpus.name in REGISTRY:
        raise ValueError(f"corpus {corpus.name!r} is registered twice")
    REGISTRY[corpus.name] = corpus
    return corpus


def fetch(url: str, archive: Path) -> None:
    """Download `url` to `archive` (through a .part file, so an interrupted download is never taken
    for a whole one); does nothing when `archive` exists."""
    import shutil
    import urllib.request

    if archive.exists():
        return
    partial = archive.with_suffix(".part")
    print(f"downloading {url} -> {archive}")
    with urllib.request.urlopen(url) as response, partial.open("wb") as f:
        shutil.copyfileobj(response, f)
    partial.replace(archive)


def utterance(uid: str, audio: Path, text: str, speaker: str = ""):
    """An Utterance with its duration from `audio`'s header; 0 when the file is missing or unreadable
    (`write_splits` then rejects it, saying why)."""
    from ..audio import AudioError, audio_duration
    from ..data import Utterance

    try:
        duration = audio_duration(audio) if Path(audio).is_file() else 0.0
    except AudioError:
        duration = 0.0
    return Utterance(uid, str(audio), round(duration, 3), text, speaker)


def hold_out(utts: list[Utterance], fraction: float = HELD_OUT, seed: int = 0) -> dict[str, list[Utterance]]:
    """train / dev / test: whole speakers held out where MIN_SPEAKERS are known, else utterances; each of dev
    and test gets at least `fraction` of the audio (and one unit), chosen reproducibly by `seed`, from the
    speakers that hold no more than `fraction` themselves where two or more do (less, when they hold less)."""
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
    # a speaker holding more than a held-out share stays in training, where at least two others can be held out
    # (Common Voice: two speakers may read most of a locale's clips)
    pool = [k for k in units if seconds[k] <= fraction * total] if by_speaker else units
    pool = pool if len(pool) >= 2 else units
    limit = len(pool) - (pool is units)            # something is left to train on
    for name in ("test", "dev"):
        got, reserve = 0.0, int(name == "test")        # a unit is left for dev, however small the others are
        while taken < limit - reserve and (got < fraction * total or not any(v == name for v in split.values())):
            split[pool[taken]] = name
            got += seconds[pool[taken]]
            taken += 1
    out = {"train": [], "dev": [], "test": []}
    for u in utts:
        out[split.get(key(u), "train")].append(u)
    return out


def normalised(splits: dict, text=None) -> tuple[dict, object]:
    """(`splits` with their transcripts normalised, the TextConfig used): `text`, or, for transcripts nobody
    said how to normalise, the one they ask for (asr.text.detect_text_config: English's for English letters,
    else the alphabet of the data, in any script)."""
    from dataclasses import replace

    from ..text import detect_text_config, normalize_text

    text = text or detect_text_config(u.text for utts in splits.values() for u in utts)
    return {name: [replace(u, text=normalize_text(u.text, text)) for u in utts] for name, utts in splits.items()}, text


def write_splits(splits: dict, out_dir: str | Path, text=None, checker=None) -> dict[str, Path]:
    """Write each named list of utterances to `out_dir/<name>.jsonl`; returns the manifests' paths.

    Every utterance is checked first (`asr.validate`, audio decoded): unusable ones go to
    `out_dir/rejected.jsonl` with their reasons instead. With `text.charset: data` the alphabet is learned
    here from the train splits' transcripts (every split's, where there is none), and the other
    splits' characters it lacks are kept (scored as errors) while a training utterance holding one is
    rejected, named. `out_dir/text.json` records the TextConfig the transcripts were normalised with, the
    learned alphabet included (training checks it against its own and takes the alphabet from it).
    """
    from dataclasses import replace

    from ..data import write_manifest, write_text_config
    from ..text import TextConfig, normalize_text
    from ..validate import Checker, screen, write_rejected

    text = text or TextConfig()
    if text.charset == "data" and not text.learned:
        learn_from = [u for name, utts in splits.items() if _trains(name) for u in utts] or [
            u for utts in splits.values() for u in utts]
        text = text.with_alphabet_of(u.text for u in learn_from)
        splits = {name: [replace(u, text=normalize_text(u.text, text)) for u in utts] for name, utts in splits.items()}
    checker = checker or Checker(text.alphabet, learned=text.charset == "data")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_config(out, text)
    (out / REJECTED).write_text("")
    paths = {}
    for name, utts in splits.items():
        usable, findings = screen(utts, replace(checker, targets=_trains(name) or name == "all"),
                                  progress=sys.stderr.isatty(), desc=f"checking {name}")
        write_rejected(out / REJECTED, findings, split=name, mode="a")
        paths[name] = out / f"{name}.jsonl"
        write_manifest(paths[name], usable)
    return paths


def _trains(split: str) -> bool:
    """Whether a split is trained on (train, LibriSpeech's train-clean-100, ...), not only scored against."""
    return split.startswith("train")
