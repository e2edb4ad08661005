"""Utterances, JSONL manifests, the audio Dataset, length-bucketed batches and collation."""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch.utils.data import Dataset, Sampler

from .audio import load_audio
from .text import Vocabulary


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: str        # path to the audio file
    duration: float   # seconds
    text: str         # normalised transcript
    speaker: str = ""


def write_manifest(path: str | Path, utts: Iterable[Utterance]) -> int:
    """Write one JSON object per line; returns the number written. Written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w") as f:
        for u in utts:
            f.write(json.dumps(asdict(u)) + "\n")
            n += 1
    tmp.replace(path)
    return n


def read_manifest(path: str | Path) -> list[Utterance]:
    utts = []
    with Path(path).open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                utts.append(Utterance(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as e:
                raise ValueError(f"{path}:{lineno}: not a manifest entry ({e})") from e
    return utts


class AudioDataset(Dataset):
    """Item i -> (samples (S,) float32 at 16 kHz, target ids (L,) int64, the Utterance)."""

    def __init__(self, utts: list[Utterance], vocab: Vocabulary):
        self.utts = utts
        self.vocab = vocab

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int):
        u = self.utts[i]
        return load_audio(u.audio), torch.tensor(self.vocab.encode(u.text), dtype=torch.long), u


@dataclass
class Batch:
    waves: torch.Tensor          # (N, S) zero-padded samples
    lengths: torch.Tensor        # (N,) samples per utterance
    targets: torch.Tensor        # (N, L) zero-padded target ids
    target_lengths: torch.Tensor  # (N,)
    utts: list[Utterance]

    def _map(self, fn) -> "Batch":
        return Batch(fn(self.waves), fn(self.lengths), fn(self.targets), fn(self.target_lengths), self.utts)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":  # called by DataLoader(pin_memory=True)
        return self._map(torch.Tensor.pin_memory)


def pad_waves(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (S_i,) -> (N, max S_i) zero-padded, and (N,) lengths."""
    lengths = torch.tensor([w.shape[0] for w in waves], dtype=torch.long)
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths


def collate(items) -> Batch:
    waves, targets, utts = zip(*items)
    padded, lengths = pad_waves(list(waves))
    target_lengths = torch.tensor([t.shape[0] for t in targets], dtype=torch.long)
    targets = torch.nn.utils.rnn.pad_sequence(list(targets), batch_first=True)
    return Batch(padded, lengths, targets, target_lengths, list(utts))


def length_batches(durations: list[float], max_batch_seconds: float, max_batch_size: int = 10_000) -> list[list[int]]:
    """Group indices sorted by duration into batches whose padded size stays under the budget.

    A batch's padded cost is its size times its longest duration; an utterance longer than the
    budget gets a batch of its own.
    """
    order = sorted(range(len(durations)), key=lambda i: durations[i])
    batches, current = [], []
    for i in order:
        if current and ((len(current) + 1) * durations[i] > max_batch_seconds or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar-length utterances, in a new seeded order each epoch (sorted if shuffle=False)."""

    def __init__(self, durations: list[float], max_batch_seconds: float, shuffle: bool = True, seed: int = 0):
        self.batches = length_batches(durations, max_batch_seconds)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use `epoch`'s order, beginning at its `start`-th batch (to resume mid-epoch)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(len(self.batches)))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        for b in order[self.start:]:
            yield self.batches[b]
