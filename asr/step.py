"""One optimisation step and one epoch of them: the loss, the learning-rate schedule, and the Stepper
(precision, clipping, non-finite and out-of-memory guards) that asr.train's loop and asr.bench call."""
from __future__ import annotations

import math
import statistics
import sys
import time
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from .augment import add_noise, change_speed
from .checkpoint import Progress
from .data import Batch
from .features import FeatureExtractor, SpecAugmentConfig, spec_augment
from .guards import NonFiniteError, out_of_memory
from .model import AcousticModel
from .native import batch_products

if TYPE_CHECKING:
    from .config import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over the model's parameters (lr, weight_decay from the TrainConfig); on a CPU its fused kernel, one
    pass over all parameters, 3x faster than the per-tensor loop torch picks there (the same update to float
    rounding); on a GPU torch's default."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                             fused=True if device.type == "cpu" else None)


def lr_schedule(step: int, total: int, warmup: float, final: float) -> float:
    """Multiplier of the peak lr: linear warm-up, then cosine decay to `final`."""
    warm = max(1, int(total * warmup))
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


class EpochPlan:
    """How many epochs a run trains, and so the learning-rate schedule over its steps (`multiplier`).

    Without a time budget: cfg.epochs. With `cfg.time_budget` seconds, after each epoch from the
    `cfg.budget_probe`-th on, the epochs still to come are as many as fit in what is left of the
    budget at the median time of the last `RECENT` epochs (dev pass included), never more than
    cfg.epochs and never fewer than are done: a slower machine trains fewer epochs rather than
    longer, and the cosine decay ends where the run does. The median follows a lasting slowdown
    within a few epochs but not one slow epoch (a neighbour's burst on a shared host), whose
    seconds still count against the budget: with the mean, one 100 s epoch among 9 s ones cut
    a 113-epoch plan to 68 and the schedule with it. The plan lives in `progress.epochs`, so a resumed run
    keeps it until it has timed epochs of its own.
    """

    RECENT = 5                                        # epochs whose median time plans the rest

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, progress=None):
        self.cfg, self.steps_per_epoch = cfg, steps_per_epoch
        self.seconds: list[float] = []                # this process's epoch times, dev pass included
        self.follow(progress or Progress())

    def follow(self, progress) -> None:
        """Plan in `progress` (a restored run's, say): with a time budget its epochs if it has planned, else
        cfg.epochs (so a run resumed with other epochs follows them, the cosine decay with it)."""
        self.progress = progress
        progress.epochs = (progress.epochs if self.cfg.time_budget else 0) or self.cfg.epochs

    @property
    def epochs(self) -> int:
        return self.progress.epochs

    def multiplier(self, step: int) -> float:
        """The peak lr's multiplier at `step` (LambdaLR), over the steps of the epochs planned now."""
        return lr_schedule(step, self.epochs * self.steps_per_epoch, self.cfg.warmup, self.cfg.final_lr)

    def epoch_done(self, seconds: float, elapsed: float) -> str | None:
        """After an epoch of `seconds` with `elapsed` seconds of the run spent: replan; a line to log if it changed.
        Under DDP pass rank 0's figures on every rank (the plan must agree)."""
        self.seconds.append(seconds)
        done, budget = self.progress.epoch - 1, self.cfg.time_budget
        if not budget or len(self.seconds) < self.cfg.budget_probe:
            return None
        per = statistics.median(self.seconds[-self.RECENT:])
        fit = done + int(max(0.0, budget - elapsed) // per)
        planned = max(done, min(self.cfg.epochs, fit), 1)
        if planned == self.epochs:
            return None
        self.progress.epochs = planned
        return (f"time budget {budget:.0f} s: {elapsed:.0f} s spent, {per:.1f} s an epoch -> {planned} epochs"
                f"{' (the cap, epochs)' if planned == self.cfg.epochs else ''}")


class FeatureCache:
    """Each training utterance's features at each speed, kept from the first time a batch computes them, so that
    later epochs skip resampling and the spectra (a seventh of a CPU training step for conf/cpu.yaml's model).

    The same numbers as computing them again: a batch holds the same utterances every epoch (FrameBudgetSampler's
    fixed groups), so the kept rows are the ones the same kernels would give (training from shards, whose batches
    regroup each epoch, keeps the first batch's rows: equal to float rounding). Bounded: once `limit_bytes` are
    held, further utterances are computed each time. Only noise-free features can be kept (`noise_snr` draws
    new noise each time, so Stepper keeps none then).
    """

    def __init__(self, limit_bytes: int):
        self.limit_bytes, self.bytes, self.hits = limit_bytes, 0, 0      # hits: batches served from the cache
        self.kept: dict = {}                                           # (Utterance, speed) -> (T_i, F) features

    def get(self, utts, speed: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(N, T, F) zero-padded features and (N,) frame counts of `utts` at `speed`, if all are kept; else None."""
        rows = [self.kept.get((u, speed)) for u in utts]
        if any(r is None for r in rows):
            return None
        self.hits += 1
        frames = torch.tensor([r.shape[0] for r in rows])
        return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True), frames

    def put(self, utts, speed: float, feats: torch.Tensor, frames: torch.Tensor) -> None:
        """Keep each utterance's rows of a batch's (N, T, F) features (while the limit allows)."""
        for u, x, n in zip(utts, feats, frames.tolist()):
            row = x[:n]
            if (u, speed) in self.kept or self.bytes + row.nbytes > self.limit_bytes:
                continue
            self.kept[u, speed] = row.clone()
            self.bytes += row.nbytes


def compute_loss(model: AcousticModel, extractor: FeatureExtractor, batch: Batch,
                 augment: SpecAugmentConfig | None = None, generator: torch.Generator | None = None,
                 pack: bool = True, speed: float = 1.0, noise_snr: tuple[float, ...] = (),
                 cache: FeatureCache | None = None) -> torch.Tensor:
    """Mean over the batch of each utterance's CTC loss (summed over its frames). `speed`, `noise_snr`
    and `augment` perturb the input (training only); `cache` keeps the features for later epochs."""
    with torch.no_grad(), torch.autocast(batch.pcm.device.type, enabled=False):  # input side in fp32
        kept = cache.get(batch.utts, speed) if cache is not None else None
        if kept is not None:
            feats, frames = kept                                           # (N, T, F), (N,)
        else:
            waves, lengths = change_speed(batch.waves, batch.lengths, speed)  # (N, S'), (N,)
            if noise_snr:
                waves = add_noise(waves, lengths, noise_snr, generator)
            feats, frames = extractor(waves, lengths)                      # (N, T, F), (N,)
            if cache is not None:
                cache.put(batch.utts, speed, feats, frames)
        if augment is not None:
            feats = spec_augment(feats, frames, augment, generator)
    log_probs, out_lengths = model(feats, frames, pack=pack)             # (N, T', V), (N,)
    loss = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1), batch.targets, out_lengths, batch.target_lengths,  # (T', N, V)
        blank=0, reduction="sum", zero_infinity=True)
    return loss / batch.pcm.shape[0]


def norm_summary(norms: list[float], clip_norm: float) -> dict:
    """Gradient norms (before clipping) summarised: steps, median, min, max, and the share above `clip_norm`
    (0 when there is no clipping)."""
    norms = sorted(norms)
    return {"steps": len(norms), "median": norms[len(norms) // 2], "min": norms[0], "max": norms[-1],
            "clipped": sum(n > clip_norm for n in norms) / len(norms) if clip_norm else 0.0}


class Stepper:
    """One optimisation step at the configured precision: autocast, loss scaling (fp16), clipping, schedule.

    Holds no Python loop over utterances and never waits for the GPU: the loss stays a device tensor.
    """

    def __init__(self, model, extractor: FeatureExtractor, optimizer, scheduler, cfg: TrainConfig,
                 device: torch.device, generator: torch.Generator):
        self.model, self.extractor, self.optimizer, self.scheduler = model, extractor, optimizer, scheduler
        self.cfg, self.device, self.generator = cfg, device, generator
        amp = device.type == "cuda" and cfg.precision != "fp32"
        dtype = torch.float16 if cfg.precision == "fp16" else torch.bfloat16
        self.autocast = lambda: torch.autocast(device.type, dtype=dtype, enabled=amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp and cfg.precision == "fp16")
        self.last: dict = {}         # the last step's loss and gradient norm (before clipping), as floats
        self.norms: list[float] = []  # this epoch's finite gradient norms (before clipping), one per applied step
        self.skipped = 0             # steps with a non-finite loss or gradient, not applied
        self.oom_split = 0           # batches that ran out of memory and were trained as two halves
        self.oom_skipped = 0         # ... and those skipped because a half ran out too
        self.bad_in_a_row = 0
        # features kept between epochs on a CPU (a GPU computes them in a sliver of its step; its memory is the model's)
        self.cache = (FeatureCache(cfg.feature_cache_mb << 20)
                      if cfg.feature_cache_mb and not cfg.noise_snr and device.type == "cpu" else None)

    def draw_speed(self) -> float:
        speeds = self.cfg.speed_perturb
        if not speeds:
            return 1.0
        return speeds[int(torch.randint(len(speeds), (1,), generator=self.generator))]

    def __call__(self, batch: Batch) -> torch.Tensor:
        """Train on one batch already on the device; returns the (detached, device) loss.

        A batch that runs out of memory is retried as two halves (gradients summed, one update);
        if a half does too, the batch is skipped. Both are logged on stderr and counted. (Not under
        DDP: the other replicas would wait for gradients this one no longer sends in step.)
        """
        try:
            return self._update([batch])
        except (RuntimeError, MemoryError) as e:   # torch.OutOfMemoryError is a RuntimeError
            if not out_of_memory(e) or isinstance(self.model, torch.nn.parallel.DistributedDataParallel):
                raise
            first = type(e).__name__  # not the exception: its traceback would keep the activations alive
        self._free()
        halves = batch.halves()
        if halves:
            try:
                loss = self._update(halves)
                self.oom_split += 1
                print(f"out of memory on a batch of {len(batch.utts)} ({first}): "
                      f"trained it as two halves", file=sys.stderr, flush=True)
                return loss
            except (RuntimeError, MemoryError) as e:
                if not out_of_memory(e):
                    raise
                self._free()
        self.oom_skipped += 1
        self.scheduler.step()
        print(f"out of memory on a batch of {len(batch.utts)} utterances (longest "
              f"{max(u.duration for u in batch.utts):.1f} s), even halved: skipped; lower batch_frames",
              file=sys.stderr, flush=True)
        return torch.zeros((), device=self.device)

    def _free(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _update(self, parts: list[Batch]) -> torch.Tensor:
        """One optimizer step on the summed gradients of `parts` (each weighted by its share of utterances)."""
        cfg = self.cfg
        speed = self.draw_speed()
        total = sum(len(p.utts) for p in parts)
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=self.device)
        for part in parts:
            with batch_products():                  # forward and backward: oneDNN's products where faster (asr.native)
                with self.autocast():
                    part_loss = compute_loss(self.model, self.extractor, part,
                                             cfg.augment if cfg.spec_augment else None, self.generator,
                                             pack=cfg.pack_sequences, speed=speed, noise_snr=cfg.noise_snr,
                                             cache=self.cache)
                    part_loss = part_loss * (len(part.utts) / total)
                self.scaler.scale(part_loss).backward()
            loss = loss + part_loss.detach()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm or math.inf)  # 0: measure only
        # One host sync per step: the price of never applying a NaN update (fp16's GradScaler pays it anyway).
        loss_value, norm_value = torch.stack([loss.detach().float(), norm.float()]).tolist()
        self.last = {"loss": loss_value, "grad_norm": norm_value}
        finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        if finite or self.scaler.is_enabled():
            self.scaler.step(self.optimizer)        # with loss scaling: skips non-finite steps itself
            self.scaler.update()
        self.scheduler.step()
        if finite:
            self.bad_in_a_row = 0
            self.norms.append(norm_value)
            return loss.detach()
        self.skipped += 1
        self.bad_in_a_row += 1
        if not self.scaler.is_enabled() and self.bad_in_a_row >= cfg.max_bad_steps:
            raise NonFiniteError(
                f"{self.bad_in_a_row} steps in a row had a non-finite loss or gradient "
                f"({self.skipped} skipped in all): "
                f"training cannot go on. Lower lr (now {cfg.lr:g}) or clip_norm, check the data with asr validate, "
                f"or try precision=fp32; the last good weights are in last.pt")
        return torch.zeros((), device=loss.device)


class WeightAverage:
    """An exponential moving average of a model's weights as it trains (`ema_epochs`): dev scores the average
    and best.pt / epoch_k.pt hold it, while the optimizer goes on with the live weights; last.pt holds both.

    Each update moves the average by 1 - decay toward the live weights, decay = 1 - 1 / (`epochs` x
    `steps_per_epoch`) (so about the last `epochs` epochs count), but at most (1 + n) / (10 + n) after n updates,
    so the random start fades within the first steps (TensorFlow's ExponentialMovingAverage does the same).
    Every floating-point tensor of the state dict is averaged, the others copied.
    """

    def __init__(self, model: AcousticModel, epochs: float, steps_per_epoch: int):
        self.decay = 1 - 1 / max(1.0, epochs * steps_per_epoch)
        with torch.random.fork_rng(devices=[]):   # its initial weights, overwritten, must not move the run's RNG
            self.model = AcousticModel(model.cfg).to(next(model.parameters()).device)
        self.model.load_state_dict(model.state_dict())
        self.model.requires_grad_(False)
        live, mine = model.state_dict(keep_vars=True), self.model.state_dict(keep_vars=True)
        self.averaged = [(mine[k], v) for k, v in live.items() if v.is_floating_point()]
        self.copied = [(mine[k], v) for k, v in live.items() if not v.is_floating_point()]

    @torch.no_grad()
    def update(self, updates: int) -> None:
        """Move the average toward the live weights after the run's `updates`-th update."""
        decay = min(self.decay, (1 + updates) / (10 + updates))
        if self.averaged:
            torch._foreach_lerp_([a for a, _ in self.averaged], [v.detach() for _, v in self.averaged], 1 - decay)
        for a, v in self.copied:
            a.copy_(v)


def train_one_epoch(step: Stepper, loader, after_step=lambda loss: None) -> dict:
    """One pass over `loader` (or an iterator over it), calling `after_step(loss)` after each update;
    returns this process's summed loss, batches, audio seconds and wall seconds."""
    step.model.train()
    device = step.device
    total_loss, n_batches, audio_seconds, start = torch.zeros((), device=device), 0, 0.0, time.time()
    skipped = step.skipped
    interactive = sys.stderr.isatty()
    bar = tqdm(loader, leave=False, disable=not interactive, unit="batch")
    for batch in bar:
        if batch is None:   # none of its files could be read (each named on stderr)
            after_step(None)
            continue
        audio_seconds += batch.audio_seconds                             # from the manifest: no GPU sync
        loss = step(batch.to(device, non_blocking=True))
        total_loss += loss
        n_batches += 1
        after_step(loss)
        if interactive and step.last:
            bar.set_postfix(loss=f"{step.last['loss']:.3f}", lr=f"{step.scheduler.get_last_lr()[0]:.2e}",
                            audio_s_per_s=f"{audio_seconds / (time.time() - start):.0f}", refresh=False)
    total = total_loss.item()                                           # the epoch's one sync
    return {"loss_sum": total, "batches": n_batches, "audio_seconds": audio_seconds, "seconds": time.time() - start,
            "skipped": step.skipped - skipped}
