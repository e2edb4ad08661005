"""Utterances, JSONL manifests, the audio Dataset, length-bucketed batches and collation."""
from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from .audio import SAMPLE_RATE, AudioError, load_audio
from .text import TextConfig, normalize_text
from .tokens import Vocabulary


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: str        # path to the audio file
    duration: float   # seconds
    text: str         # normalised transcript
    speaker: str = ""
    start: float | None = None   # a segment of a longer recording: its start and end (seconds) in `audio`
    end: float | None = None
    extra: dict | None = field(default=None, compare=False)   # a manifest's other keys, kept for writing back

    def samples(self, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """(S,) float32 samples at `sample_rate`: the file, or the segment of it."""
        return load_audio(self.audio, sample_rate, start=self.start, end=self.end)

    @property
    def input(self):
        """What `Transcriber.transcribe` takes for it: the path, or a segment's samples."""
        return self.audio if self.start is None else self.samples()


TEXT_JSON = "text.json"      # beside a prepared manifest: how its transcripts were normalised


def read_text_config(manifest: str | Path) -> TextConfig | None:
    """The TextConfig recorded beside `manifest` by prepare, or None (a manifest from elsewhere)."""
    path = Path(manifest).parent / TEXT_JSON
    return TextConfig(**json.loads(path.read_text())) if path.exists() else None


def with_alphabet(text: TextConfig, manifest: str | Path) -> TextConfig:
    """`text` with its alphabet, for charset data: the one prepare recorded beside `manifest` (text.json),
    else learned from the manifest's own transcripts (a training manifest's). Any other `text` as it is."""
    if text.charset != "data" or text.learned:
        return text
    prepared = read_text_config(manifest)
    if prepared is not None and prepared.learned and text.same_normalisation(prepared):
        return prepared
    return text.with_alphabet_of(u.text for u in read_manifest(manifest, text))


def write_text_config(out_dir: str | Path, text: TextConfig) -> Path:
    """Record beside the manifests of `out_dir` how their transcripts were normalised."""
    path = Path(out_dir) / TEXT_JSON
    path.write_text(json.dumps(asdict(text)) + "\n")
    return path


def write_manifest(path: str | Path, utts: Iterable[Utterance], form: str = "asr") -> int:
    """Write one JSON object per line (`form` "asr", or "nemo": audio_filepath, duration, text, offset);
    returns the number written. Written atomically."""
    if form not in MANIFEST_FORMS:
        raise ValueError(f"manifest form {form!r}: one of {', '.join(MANIFEST_FORMS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as f:
        for u in utts:
            f.write(json.dumps(_entry(u, form)) + "\n")
            n += 1
    tmp.replace(path)
    return n


MANIFEST_FORMS = ("asr", "nemo")
_OURS = ("id", "audio", "duration", "text", "speaker", "start", "end")
# NeMo's keys (nemo.collections.asr manifests): audio_filepath, duration, text, offset (seconds into the file)
_NEMO = {"audio_filepath": "audio", "offset": "start"}


def _entry(u: Utterance, form: str) -> dict:
    extra = dict(u.extra or {})
    if not os.path.isabs(u.audio) and "://" not in u.audio:   # a path from here: a manifest's are from its folder
        u = replace(u, audio=os.path.abspath(u.audio))
    if form == "nemo":
        entry = {"audio_filepath": u.audio, "duration": u.duration, "text": u.text}
        if u.start is not None:
            entry["offset"] = u.start
        entry.update({"id": u.id, **({"speaker": u.speaker} if u.speaker else {})})
    else:
        entry = {k: v for k, v in asdict(u).items() if v is not None and k != "extra"}
    return {**entry, **{k: v for k, v in extra.items() if k not in entry}}


def _utterance(entry: dict, folder: str, where: str, text: TextConfig | None = None) -> Utterance:
    """One manifest line, ours or NeMo's, its transcript normalised by `text` when given; relative audio paths
    are taken from the manifest's folder (NeMo's rule)."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: not a manifest entry (a JSON object)")
    fields = {_NEMO.get(k, k): v for k, v in entry.items()}
    missing = [k for k in ("audio", "duration", "text") if k not in fields]
    if missing:
        raise ValueError(f"{where}: not a manifest entry: no {' / '.join(missing)} (an entry has audio or NeMo's "
                         f"audio_filepath, duration and text; keys here: {', '.join(entry) or 'none'})")
    audio = str(fields["audio"])                    # string operations: pathlib costs seconds on 281 k lines
    if audio.startswith("~"):
        audio = os.path.expanduser(audio)
    if not os.path.isabs(audio) and "://" not in audio:
        audio = os.path.normpath(os.path.join(folder, audio))
    try:
        duration = float(fields["duration"])
        start = None if fields.get("start") is None else float(fields["start"])
        end = None if fields.get("end") is None else float(fields["end"])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: duration / offset must be numbers of seconds") from None
    if start is not None and end is None and "offset" in entry:
        end = start + duration                      # NeMo: `duration` seconds from `offset`
    uid = fields.get("id")
    if uid is None:                                 # NeMo has no id: the file's name, and its offset when one
        uid = Path(audio).stem + (f"-{round(start * 1000):08d}" if start else "")
    extra = {k: v for k, v in entry.items() if k not in _OURS and k not in _NEMO}
    transcript = str(fields["text"]) if text is None else normalize_text(str(fields["text"]), text)
    return Utterance(str(uid), audio, duration, transcript, str(fields.get("speaker") or ""), start, end,
                     extra or None)


def read_manifest(path: str | Path, text: TextConfig | None = None) -> list[Utterance]:
    """A JSONL manifest, this package's or NeMo's (audio_filepath, duration, text, offset; other keys kept
    and ignored). With `text`, transcripts are normalised by it (idempotent: a prepared manifest's already
    are), and a manifest prepared with another normalisation (its text.json) is refused: what that one
    dropped cannot come back."""
    path = Path(path)
    prepared = read_text_config(path) if text is not None else None
    if prepared is not None and not text.same_normalisation(prepared):
        raise ValueError(f"{path}: transcripts were prepared with {prepared}, but the config asks for "
                         f"{text}; run the prepare stage again with this config")
    utts, seen = [], set()
    folder = str(path.parent.resolve())
    if prepared is not None:     # prepared with this normalisation: already normalised (it is idempotent)
        text = None
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not a manifest entry ({e})") from e
            u = _utterance(entry, folder, f"{path}:{lineno}", text)
            if u.id in seen:                        # NeMo manifests may list a file twice: keep both, apart
                u = replace(u, id=f"{u.id}-{lineno}")
            seen.add(u.id)
            utts.append(u)
    return utts


class AudioDataset(Dataset):
    """Item i -> (samples (S,) float32 at `sample_rate`, target ids (L,) int64, the Utterance)."""

    def __init__(self, utts: list[Utterance], vocab: Vocabulary | None, sample_rate: int = SAMPLE_RATE):
        """`vocab` None: audio only (statistics), every target empty."""
        self.utts, self.vocab, self.sample_rate = utts, vocab, sample_rate

    def __len__(self) -> int:
        return len(self.utts)

    def __getitem__(self, i: int):
        """None (and a line on stderr naming it) for a file that cannot be decoded: the batch goes on without it."""
        u = self.utts[i]
        try:
            samples = u.samples(self.sample_rate)
        except AudioError as e:
            print(f"skipping {u.id}: {e}", file=sys.stderr, flush=True)
            return None
        targets = self.vocab.encode(u.text) if self.vocab is not None else []
        return samples, torch.tensor(targets, dtype=torch.long), u


PCM_SCALE = 32768  # int16 full scale: batches carry 16-bit PCM, half the bytes of float32


@dataclass
class Batch:
    pcm: torch.Tensor            # (N, S) zero-padded int16 samples (to workers' shared memory, pinned memory, GPU)
    lengths: torch.Tensor        # (N,) samples per utterance
    targets: torch.Tensor        # (N, L) zero-padded target ids
    target_lengths: torch.Tensor  # (N,)
    utts: list[Utterance]

    def _map(self, fn) -> Batch:
        return Batch(fn(self.pcm), fn(self.lengths), fn(self.targets), fn(self.target_lengths), self.utts)

    @property
    def waves(self) -> torch.Tensor:
        """(N, S) float32 samples in [-1, 1], on the batch's device."""
        return self.pcm.float() / PCM_SCALE

    @property
    def audio_seconds(self) -> float:
        """Unpadded audio in the batch, from the manifest (no device sync)."""
        return sum(u.duration for u in self.utts)

    def halves(self) -> list[Batch]:
        """The batch split in two by utterances (for retrying one that ran out of memory); [] for one utterance."""
        n = len(self.utts)
        if n < 2:
            return []
        return [Batch(self.pcm[a:b], self.lengths[a:b], self.targets[a:b], self.target_lengths[a:b], self.utts[a:b])
                for a, b in ((0, n // 2), (n // 2, n))]

    def to(self, device, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True)
        return self._map(torch.Tensor.pin_memory)


def pad_waves(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (S_i,) -> (N, max S_i) zero-padded, and (N,) lengths."""
    lengths = torch.tensor([w.shape[0] for w in waves], dtype=torch.long)
    if len(waves) == 1:                        # one input (a server's request): itself, not a copy
        return waves[0][None], lengths
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths


def collate(items) -> Batch | None:
    """Items of AudioDataset -> one Batch (None when none of them could be read)."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    waves, targets, utts = zip(*items)
    padded, lengths = pad_waves(list(waves))
    pcm = (padded * PCM_SCALE).round_().clamp_(-PCM_SCALE, PCM_SCALE - 1).to(torch.int16)  # exact for 16-bit sources
    target_lengths = torch.tensor([t.shape[0] for t in targets], dtype=torch.long)
    targets = torch.nn.utils.rnn.pad_sequence(list(targets), batch_first=True)
    return Batch(pcm, lengths, targets, target_lengths, list(utts))


def length_batches(durations: list[float], max_frames: int, frames_per_second: float,
                   max_batch_size: int = 0) -> list[list[int]]:
    """Group indices sorted by duration (seconds) into batches of at most `max_frames` padded feature frames
    (`frames_per_second` of them: FeatureConfig.frames_per_second).

    A batch's padded cost is its size times its longest utterance's frames; an utterance longer
    than the budget gets a batch of its own, so no batch is larger than the budget or than the
    longest utterance alone. `max_batch_size` (0: none) also caps the utterances per batch.
    """
    order = sorted(range(len(durations)), key=lambda i: durations[i])
    batches, current = [], []
    for i in order:
        frames = durations[i] * frames_per_second
        if current and ((len(current) + 1) * frames > max_frames or len(current) == max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class FrameBudgetSampler(Sampler[list[int]]):
    """Length-bucketed batches under a padded-frame budget, shuffled per epoch, split across ranks.

    Batches are fixed groups of similar-length utterances (see `length_batches`); each epoch
    shuffles their order with `seed + epoch` (SortaGrad: `sortagrad` epochs go shortest first).
    With `num_replicas` > 1 (DDP), rank r takes every num_replicas-th batch of the epoch's order,
    and the order is cut to a multiple of num_replicas so every rank takes the same number of steps.
    """

    def __init__(self, durations: list[float], max_frames: int, frames_per_second: float, max_batch_size: int = 0,
                 shuffle: bool = True, sortagrad: int = 0, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.batches = length_batches(durations, max_frames, frames_per_second, max_batch_size)
        if len(self.batches) < num_replicas:
            raise ValueError(f"{len(self.batches)} batches cannot feed {num_replicas} ranks; lower the frame budget")
        self.shuffle, self.sortagrad, self.seed = shuffle, sortagrad, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.start = 1, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use `epoch`'s order (epochs count from 1), beginning at this rank's `start`-th batch (to resume)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return len(self.batches) // self.num_replicas

    def epoch_order(self) -> list[int]:
        """Batch indices of the whole epoch, all ranks together."""
        order = list(range(len(self.batches)))
        if self.shuffle and self.epoch > self.sortagrad:
            random.Random(self.seed + self.epoch).shuffle(order)
        return order[:len(self) * self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        mine = self.epoch_order()[self.rank::self.num_replicas]
        for b in mine[self.start:]:
            yield self.batches[b]
