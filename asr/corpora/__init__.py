"""One module per corpus: `download_<name>()` fetches, `prepare_<name>()` writes manifests."""
from __future__ import annotations

from pathlib import Path


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


def utterance(uid: str, audio: Path, text: str, speaker: str = "", where: str | None = None):
    """An Utterance with its duration from `audio`'s header; an unreadable file is named (and `where`, e.g.
    the list line that gave it)."""
    from ..audio import AudioError, audio_duration
    from ..data import Utterance

    try:
        duration = audio_duration(audio)
    except AudioError as e:
        raise AudioError(f"{where}: {e}" if where else f"{audio}: unusable ({e})") from e
    return Utterance(uid, str(audio), round(duration, 3), text, speaker)


def write_splits(splits: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write each named list of utterances to `out_dir/<name>.jsonl`; returns the paths."""
    from ..data import write_manifest

    paths = {}
    for name, utts in splits.items():
        paths[name] = Path(out_dir) / f"{name}.jsonl"
        write_manifest(paths[name], utts)
    return paths
