"""What every corpus module shares: the registry entry (`Corpus`, `register`) and the helpers that
fetch archives, make utterances and write checked manifests."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import PROJECT_ROOT

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


def write_splits(splits: dict, out_dir: str | Path, text=None, checker=None) -> dict[str, Path]:
    """Write each named list of utterances to `out_dir/<name>.jsonl`; returns the manifests' paths.

    Every utterance is checked first (`asr.validate`, audio decoded): unusable ones go to
    `out_dir/rejected.jsonl` with their reasons instead. `out_dir/text.json` records the TextConfig
    the transcripts were normalised with (training checks it against its own).
    """
    from ..data import write_manifest, write_text_config
    from ..text import TextConfig
    from ..validate import Checker, screen, write_rejected

    text = text or TextConfig()
    checker = checker or Checker(text.alphabet)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_config(out, text)
    (out / REJECTED).write_text("")
    paths = {}
    for name, utts in splits.items():
        usable, findings = screen(utts, checker, progress=sys.stderr.isatty(), desc=f"checking {name}")
        write_rejected(out / REJECTED, findings, split=name, mode="a")
        paths[name] = out / f"{name}.jsonl"
        write_manifest(paths[name], usable)
    return paths
