"""Training from WebDataset shards as a stream: each DDP rank reads its own shards, through a shuffle
buffer, into frame-budget batches built inside the stream, and resumes mid-epoch in the same order.

An epoch's batches are a pure function of the shard index (keys and durations), the epoch, the seed
and the world size (`plan_epoch`), computed before any audio is read:

    shards        shuffled per epoch (seed + epoch), dealt round-robin: rank r reads order[r::world]
    shuffle       a buffer of `shuffle_buffer` utterances over the rank's stream (webdataset's shuffle)
    batches       every `batch_pool` utterances out of the buffer are grouped by length under the frame
                  budget (asr.data.length_batches) and the groups shuffled
    equal steps   the ranks with fewer batches split their largest ones in two until every rank has as
                  many as the most: DDP steps together and each utterance is seen exactly once an epoch

So resuming at batch b (Progress.batch) re-plans and skips: shards holding nothing from batch b on are
never opened, and the bytes of utterances already trained on are passed over undecoded. The reader
holds at most about shuffle_buffer + batch_pool utterances' FLAC bytes.
"""
from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch.utils.data import IterableDataset

from .audio import SAMPLE_RATE, AudioError
from .data import Utterance, collate, length_batches
from .shards import Shard, decode_flac, read_members
from .tokens import Vocabulary

Item = tuple[int, int]   # (shard, member) in the index


def rank_shards(n_shards: int, epoch: int, seed: int, world: int, rank: int, shuffle: bool = True) -> list[int]:
    """The shards rank `rank` reads in `epoch`, in reading order."""
    if n_shards < world:
        raise ValueError(f"{n_shards} shards cannot feed {world} ranks: write more, smaller shards (--shard-mb)")
    order = list(range(n_shards))
    if shuffle:
        random.Random(seed + epoch).shuffle(order)
    return order[rank::world]


def shuffled(items: list[Item], buffer: int, rng: random.Random) -> list[Item]:
    """`items` as they leave a shuffle buffer of `buffer` (each arrival swaps out a random held item)."""
    held, out = [], []
    for item in items:
        held.append(item)
        if len(held) >= buffer:
            j = rng.randrange(len(held))
            held[j], held[-1] = held[-1], held[j]
            out.append(held.pop())
    rng.shuffle(held)
    return out + held


def rank_batches(shards: list[Shard], mine: list[int], epoch: int, cfg: ShardBatching, rank: int,
                 shuffle: bool) -> list[list[Item]]:
    """One rank's batches of an epoch, before the ranks are equalised."""
    rng = random.Random(f"{cfg.seed}/{epoch}/{rank}")
    items = [(s, i) for s in mine for i in range(len(shards[s].keys))]
    if shuffle:
        items = shuffled(items, cfg.shuffle_buffer, rng)
    batches = []
    for a in range(0, len(items), cfg.batch_pool):
        pool = items[a:a + cfg.batch_pool]
        groups = length_batches([shards[s].durations[i] for s, i in pool], cfg.batch_frames, cfg.frames_per_second,
                                cfg.max_batch_size)
        if shuffle:
            rng.shuffle(groups)
        batches += [[pool[j] for j in g] for g in groups]
    return batches


def equalise(per_rank: list[list[list[Item]]]) -> None:
    """Split the largest batches of the ranks that have fewer, in place, until all have as many."""
    target = max(map(len, per_rank))
    for rank, batches in enumerate(per_rank):
        while len(batches) < target:
            b = max(range(len(batches)), key=lambda k: len(batches[k]))
            if len(batches[b]) < 2:
                raise ValueError(f"rank {rank} has too few utterances for {target} steps: write more shards")
            half = len(batches[b]) // 2
            batches[b:b + 1] = [batches[b][:half], batches[b][half:]]


@dataclass(frozen=True)
class ShardBatching:
    """What shapes the batches read from shards: the TrainConfig's fields of the same names
    (`ShardBatching.of(TrainConfig)`, where their defaults live)."""
    batch_frames: int
    frames_per_second: float
    max_batch_size: int
    shuffle_buffer: int
    batch_pool: int
    sortagrad: int = 0
    seed: int = 0

    @classmethod
    def of(cls, cfg) -> ShardBatching:
        return cls(cfg.batch_frames, cfg.features.frames_per_second, cfg.max_batch_size, cfg.shuffle_buffer,
                   cfg.batch_pool, cfg.sortagrad, cfg.seed)


def plan_epoch(shards: list[Shard], epoch: int, cfg: ShardBatching, world: int = 1) -> list[list[list[Item]]]:
    """Every rank's batches of `epoch` (epochs count from 1), equal in number: [rank][batch] -> items."""
    shuffle = epoch > cfg.sortagrad        # SortaGrad epochs: shards in order, no buffer, pools by length
    per_rank = [rank_batches(shards, rank_shards(len(shards), epoch, cfg.seed, world, r, shuffle), epoch, cfg, r,
                             shuffle) for r in range(world)]
    equalise(per_rank)
    return per_rank


class ShardStream(IterableDataset):
    """This rank's batches (asr.data.Batch) of an epoch read from shards; `set_epoch` as FrameBudgetSampler's.

    Run it in the main process or one DataLoader worker (batch_size=None); `threads` decode FLAC in parallel.
    """

    def __init__(self, shards: list[Shard], vocab: Vocabulary, cfg: ShardBatching, sample_rate: int = SAMPLE_RATE,
                 num_replicas: int = 1, rank: int = 0, threads: int = 1):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.shards, self.vocab, self.cfg, self.sample_rate = shards, vocab, cfg, sample_rate
        self.num_replicas, self.rank, self.threads = num_replicas, rank, threads
        self.set_epoch(1)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Plan `epoch`, beginning at this rank's `start`-th batch (to resume)."""
        self.epoch, self.start = epoch, start
        self.batches = plan_epoch(self.shards, epoch, self.cfg, self.num_replicas)[self.rank]

    def __len__(self) -> int:
        return len(self.batches)

    def utterance(self, item: Item) -> Utterance:
        s, i = item
        shard = self.shards[s]
        return Utterance(shard.ids[i], f"{shard.url}#{shard.keys[i]}", shard.durations[i], shard.texts[i])

    def batch_ids(self) -> list[list[str]]:
        """The ids of this rank's batches from `start` on, as __iter__ will yield them (no audio read)."""
        return [[self.shards[s].ids[i] for s, i in b] for b in self.batches[self.start:]]

    def __iter__(self) -> Iterator:
        todo = self.batches[self.start:]
        needed: dict[int, set[int]] = {}                    # shard -> its members still to train on
        for s, i in (item for b in todo for item in b):
            needed.setdefault(s, set()).add(i)
        order = rank_shards(len(self.shards), self.epoch, self.cfg.seed, self.num_replicas, self.rank,
                            self.epoch > self.cfg.sortagrad)
        members = self._members([s for s in order if s in needed], needed)
        held: dict[Item, bytes] = {}
        with ThreadPoolExecutor(max(1, self.threads)) as pool:
            for batch in todo:
                while any(item not in held for item in batch):
                    item, data = next(members, (None, None))
                    if item is None:
                        raise ValueError(f"epoch {self.epoch}: the shards ended before batch {batch} was read: "
                                         f"do they match their index?")
                    held[item] = data
                yield self._collate(pool, [(item, held.pop(item)) for item in batch])

    def _members(self, shard_ids: list[int], needed: dict[int, set[int]]) -> Iterator[tuple[Item, bytes]]:
        """(item, FLAC bytes) of the needed utterances of these shards, in reading order."""
        for s in shard_ids:
            shard = self.shards[s]
            position = {k: i for i, k in enumerate(shard.keys)}
            wanted = {shard.keys[i] for i in needed[s]}
            for key, files in read_members(shard.url, wanted=wanted.__contains__):
                if key not in position:
                    raise ValueError(f"{shard.url}: member {key} is not in the shard's index")
                if key in wanted:
                    if "flac" not in files:
                        raise ValueError(f"{shard.url}: {key} has no .flac member")
                    yield (s, position[key]), files["flac"]

    def _collate(self, pool: ThreadPoolExecutor, items: list[tuple[Item, bytes]]):
        def load(entry):
            item, data = entry
            u = self.utterance(item)
            try:
                wave = decode_flac(data, self.sample_rate, u.audio)
            except AudioError as e:
                print(f"skipping {u.id}: {e}", file=sys.stderr, flush=True)
                return None
            return wave, torch.tensor(self.vocab.encode(u.text), dtype=torch.long), u

        return collate(list(pool.map(load, items)))
