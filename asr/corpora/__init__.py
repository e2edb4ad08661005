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
