"""WebDataset shards: a manifest's utterances written as tar files of `<key>.flac` + `<key>.json` members
(webdataset's own TarWriter writes them, so its WebDataset reader reads them too), with an index.json
beside them, and the reading side: URL patterns, tar members grouped by key, FLAC bytes to samples.

    asr shard --manifest data/librispeech/train.jsonl --out data/librispeech/shards --shard-mb 256
    train_shards=data/librispeech/shards/index.json          # or s3://bucket/ls/shard-{000000..000127}.tar

Any fsspec URL reads (file://, s3://, gs://, http(s)://, memory://), so the nodes of a multi-node run
read their shards from object storage. index.json lists each shard's keys, durations and transcripts:
training plans every epoch's batches from it (asr.shard_stream) without opening a tar. Shards that
came without one are scanned once, reading their .json members.
"""
from __future__ import annotations

import io
import json
import posixpath
import re
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .audio import SAMPLE_RATE, AudioError, resample
from .data import Utterance

INDEX = "index.json"                 # beside the shards: what each holds
INDEX_FORMAT = "asr-shards/1"
SHARD_NAME = "shard-{:06d}.tar"
DEFAULT_SHARD_BYTES = 256 * 2 ** 20  # 256 MiB: big enough for object storage to stream, small enough to spread


@dataclass(frozen=True)
class Shard:
    """One tar: its URL and, in member order, each utterance's key, duration (s), transcript and id."""
    url: str
    keys: tuple[str, ...]
    durations: tuple[float, ...]
    texts: tuple[str, ...]
    ids: tuple[str, ...]

    def utterances(self) -> list[Utterance]:
        return [Utterance(i, f"{self.url}#{k}", d, t) for k, d, t, i in zip(self.keys, self.durations,
                                                                            self.texts, self.ids)]


def shard_key(uid: str, taken: set[str]) -> str:
    """A webdataset key for `uid`: no dots or slashes (the key is a member's name up to its first dot), unique."""
    key = re.sub(r"[^\w-]", "_", uid)
    base, n = key, 1
    while key in taken:
        key, n = f"{base}_{n}", n + 1
    taken.add(key)
    return key


def flac_bytes(u: Utterance, sample_rate: int = SAMPLE_RATE) -> bytes:
    """`u`'s audio as FLAC: a whole FLAC file's own bytes, anything else decoded and encoded (16-bit)."""
    if u.start is None and u.audio.lower().endswith(".flac"):
        return Path(u.audio).read_bytes()
    buf = io.BytesIO()
    sf.write(buf, u.samples(sample_rate).numpy(), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def write_shards(utts: Iterable[Utterance], out: str | Path, shard_bytes: int = DEFAULT_SHARD_BYTES,
                 sample_rate: int = SAMPLE_RATE, log=print) -> list[Shard]:
    """Write `utts` in order as tar shards of about `shard_bytes` each (out/shard-000000.tar, ...) and
    out/index.json; returns the shards. `out` is a folder or any fsspec URL."""
    import fsspec
    import webdataset as wds

    out = str(out).rstrip("/")
    fs, root = fsspec.core.url_to_fs(out)
    fs.makedirs(root, exist_ok=True)
    shards, taken, start = [], set(), time.time()
    writer, f, rows = None, None, []

    def close():
        if writer is not None:
            writer.close()
            f.close()
            keys, durations, texts, ids = zip(*rows)
            shards.append(Shard(SHARD_NAME.format(len(shards)), keys, durations, texts, ids))

    for u in utts:
        if writer is None or f.tell() >= shard_bytes:
            close()
            f = fs.open(posixpath.join(root, SHARD_NAME.format(len(shards))), "wb")
            writer, rows = wds.TarWriter(f), []
        key = shard_key(u.id, taken)
        meta = {"id": u.id, "text": u.text, "duration": u.duration, **({"speaker": u.speaker} if u.speaker else {})}
        writer.write({"__key__": key, "flac": flac_bytes(u, sample_rate), "json": meta})
        rows.append((key, u.duration, u.text, u.id))
    close()
    if not shards:
        raise ValueError("no utterances to shard")
    write_index(fs, posixpath.join(root, INDEX), shards, sample_rate)
    n = sum(len(s.keys) for s in shards)
    log(f"{n} utterances in {len(shards)} shards -> {out}/{SHARD_NAME.format(0)}... ({time.time() - start:.1f}s)")
    return shards


def write_index(fs, path: str, shards: list[Shard], sample_rate: int) -> None:
    entry = lambda s: {"url": s.url, "utterances": [list(r) for r in zip(s.keys, s.durations, s.texts, s.ids)]}
    with fs.open(path, "w") as f:
        json.dump({"format": INDEX_FORMAT, "sample_rate": sample_rate, "shards": [entry(s) for s in shards]}, f)


def read_index(url: str) -> list[Shard]:
    """The shards an index.json lists, their URLs taken from its folder where relative."""
    import fsspec

    with fsspec.open(url, "r") as f:
        index = json.load(f)
    if index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{url}: not a shard index ({INDEX_FORMAT}); write one with asr shard")
    folder = url.rsplit("/", 1)[0] if "/" in url else "."
    out = []
    for s in index["shards"]:
        rows = tuple(zip(*s["utterances"])) or ((), (), (), ())
        full = s["url"] if "://" in s["url"] or s["url"].startswith("/") else f"{folder}/{s['url']}"
        out.append(Shard(full, *(tuple(r) for r in rows)))
    return out


def expand_urls(patterns: str | Iterable[str]) -> list[str]:
    """Brace patterns (`shard-{000000..000127}.tar`, webdataset's notation) and globs, local or fsspec, in order."""
    import fsspec
    from braceexpand import braceexpand

    urls = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        for url in braceexpand(pattern):
            if any(c in url for c in "*?["):
                fs, _, paths = fsspec.get_fs_token_paths(url)
                found = sorted(fs.unstrip_protocol(p) if "://" in url else p for p in paths)
                if not found:
                    raise FileNotFoundError(f"{url}: matches no shard")
                urls += found
            else:
                urls.append(url)
    return urls


def open_shards(patterns: str | Iterable[str]) -> list[Shard]:
    """What `train_shards` names: index.json files, or tar URLs (each described by the index.json in its
    folder when that lists it, else scanned)."""
    shards, indexes = [], {}
    for url in expand_urls(patterns):
        if url.endswith(".json"):
            shards += read_index(url)
            continue
        folder, name = url.rsplit("/", 1) if "/" in url else (".", url)
        if folder not in indexes:
            indexes[folder] = {s.url.rsplit("/", 1)[-1]: s for s in _try_index(f"{folder}/{INDEX}")}
        found = indexes[folder].get(name)
        shards.append(Shard(url, *[getattr(found, k) for k in ("keys", "durations", "texts", "ids")])
                      if found else scan_shard(url))
    if not shards:
        raise ValueError(f"{patterns}: no shards")
    return shards


def _try_index(url: str) -> list[Shard]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return read_index(url) if fs.exists(path) else []


def scan_shard(url: str) -> Shard:
    """A shard's description from its own .json members (id, text, duration): one read of the tar."""
    rows = []
    for key, files in read_members(url):
        meta = json.loads(files["json"])
        rows.append((key, float(meta["duration"]), meta["text"], str(meta.get("id", key))))
    if not rows:
        raise ValueError(f"{url}: no <key>.flac + <key>.json members")
    return Shard(url, *(tuple(r) for r in zip(*rows)))


def read_members(url: str, wanted=None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per group of consecutive members sharing a key, streamed through fsspec;
    the bytes of keys not `wanted(key)` are skipped unread into memory (every key when `wanted` is None)."""
    import fsspec

    with fsspec.open(url, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
        key, files = None, {}
        for member in tar:
            if not member.isfile():
                continue
            stem, _, ext = posixpath.basename(member.name).partition(".")
            name = posixpath.join(posixpath.dirname(member.name), stem)
            if name != key:
                if key is not None:
                    yield key, files
                key, files = name, {}
            if wanted is None or wanted(name):
                files[ext] = tar.extractfile(member).read()
        if key is not None:
            yield key, files


def decode_flac(data: bytes, sample_rate: int = SAMPLE_RATE, where: str = "") -> torch.Tensor:
    """(S,) float32 mono samples at `sample_rate` from an audio file's bytes."""
    try:
        samples, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)  # (S, C)
    except Exception as e:
        raise AudioError(f"{where}: cannot decode ({e})") from e
    if samples.shape[0] == 0 or not np.isfinite(samples).all():
        raise AudioError(f"{where}: no samples, or non-finite ones")
    return resample(torch.from_numpy(samples.mean(axis=1)), sr, sample_rate).contiguous()
