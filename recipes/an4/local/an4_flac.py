"""Carry AN4 where 93 MB of SPHERE does not fit (e.g. a GPU box with a 64 MiB upload): FLAC both ways.

    python recipes/an4/local/an4_flac.py pack   ../shared/corpora/an4/an4 .gpu/an4    # .sph -> .flac (~45%)
    python recipes/an4/local/an4_flac.py unpack .gpu/an4 /tmp/an4/an4                 # .flac -> .sph, same layout
    python recipes/an4/local/an4_flac.py manifest data/an4/test.jsonl .gpu/serve       # one manifest's audio

pack and unpack keep the publisher's layout (etc/ and wav/), so `asr prepare an4 --corpus` reads the
result as it reads the original; `manifest` writes a manifest's files as FLAC beside a copy of it whose
paths are relative (read_manifest resolves them against its folder). The samples are lossless:
unpack(pack(x)) has x's 16-bit PCM exactly.
"""
from __future__ import annotations

import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf


def _convert(job: tuple[Path, Path, str]) -> None:
    src, dst, fmt = job
    data, sr = sf.read(str(src), dtype="int16")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dst), data, sr, format=fmt, subtype="PCM_16")


def convert(src: Path, dst: Path, to: str) -> int:
    """Copy `src`'s etc/ and convert its wav/ tree into `dst`; returns the number of audio files."""
    suffix_in, suffix_out, fmt = (".sph", ".flac", "FLAC") if to == "flac" else (".flac", ".sph", "NIST")
    shutil.copytree(src / "etc", dst / "etc", dirs_exist_ok=True)
    jobs = [(f, dst / f.relative_to(src).with_suffix(suffix_out), fmt) for f in sorted((src / "wav").rglob("*" + suffix_in))]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_convert, jobs, chunksize=32))
    return len(jobs)


def convert_manifest(manifest: Path, dst: Path) -> int:
    """`manifest`'s audio as FLAC in `dst`/audio, and `dst`/<manifest name> pointing at them; returns the count."""
    import json

    entries = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    jobs = [(Path(e["audio"]), dst / "audio" / f"{e['id']}.flac", "FLAC") for e in entries]
    with ProcessPoolExecutor() as pool:
        list(pool.map(_convert, jobs, chunksize=16))
    lines = [json.dumps({**e, "audio": f"audio/{e['id']}.flac"}) for e in entries]
    (dst / manifest.name).write_text("\n".join(lines) + "\n")
    return len(jobs)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("pack", "unpack", "manifest"):
        sys.exit(__doc__)
    if sys.argv[1] == "manifest":
        n = convert_manifest(Path(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(print(f"manifest: {n} files -> {sys.argv[3]}"))
    n = convert(Path(sys.argv[2]), Path(sys.argv[3]), "flac" if sys.argv[1] == "pack" else "sph")
    print(f"{sys.argv[1]}: {n} files -> {sys.argv[3]}")
