"""One module per corpus: `download_<name>()` fetches, `prepare_<name>()` writes manifests."""
from __future__ import annotations

import sys
from pathlib import Path


TEXT_JSON = "text.json"      # beside the manifests: how their transcripts were normalised
REJECTED = "rejected.jsonl"  # beside the manifests: the entries prepare left out, with reasons


def read_text_config(manifest: str | Path):
    """The TextConfig recorded beside `manifest` by prepare, or None (a manifest from elsewhere)."""
    import json

    from ..text import TextConfig

    path = Path(manifest).parent / TEXT_JSON
    return TextConfig(**json.loads(path.read_text())) if path.exists() else None


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
    import json
    from dataclasses import asdict

    from ..data import write_manifest
    from ..text import TextConfig
    from ..validate import Checker, screen, write_rejected

    text = text or TextConfig()
    checker = checker or Checker(text.alphabet)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / TEXT_JSON).write_text(json.dumps(asdict(text)) + "\n")
    (out / REJECTED).write_text("")
    paths = {}
    for name, utts in splits.items():
        usable, findings = screen(utts, checker, progress=sys.stderr.isatty(), desc=f"checking {name}")
        write_rejected(out / REJECTED, findings, split=name, mode="a")
        paths[name] = out / f"{name}.jsonl"
        write_manifest(paths[name], usable)
    return paths
