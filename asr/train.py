"""Training: TrainConfig, compute_loss, train_one_epoch, evaluation on dev, checkpoints.

    python -m asr.train --config recipes/an4/conf/cpu.yaml exp_dir=data/an4/exp/cpu model.hidden=320
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .audio import change_speed
from .data import AudioDataset, Batch, FrameBudgetSampler, collate, read_manifest
from .distributed import Dist, all_sum, barrier, check_replicas_in_sync, gather_objects, init_distributed, shutdown
from .features import FeatureConfig, FeatureExtractor, SpecAugmentConfig, load_stats, spec_augment
from .model import AcousticModel, ModelConfig, count_parameters
from .score import score
from .text import Vocabulary


@dataclass(frozen=True)
class TrainConfig:
    exp_dir: str = "data/an4/exp/default"
    train_manifest: str = "data/an4/train.jsonl"
    dev_manifest: str = "data/an4/dev.jsonl"
    stats: str = "data/an4/exp/default/stats.json"  # written by the stats stage (asr stats)
    epochs: int = 30
    batch_frames: int = 16000         # padded feature frames (10 ms each) per batch, per process
    max_batch_size: int = 0           # also cap utterances per batch (0: no cap)
    sortagrad: int = 0                # the first N epochs go shortest batches first
    lr: float = 2e-3                  # peak learning rate
    warmup: float = 0.05              # fraction of all steps spent warming up linearly
    final_lr: float = 0.02            # cosine decay ends at this fraction of lr
    weight_decay: float = 0.01
    clip_norm: float = 5.0            # gradient clipping by global norm
    features: FeatureConfig = field(default_factory=FeatureConfig)
    spec_augment: bool = True
    speed_perturb: tuple[float, ...] = ()  # e.g. [0.9, 1.0, 1.1]: each batch plays at one of these speeds
    pack_sequences: bool = False      # exact but slower training; inference always packs (asr.model)
    augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda | cuda:N (under torchrun: each rank's LOCAL_RANK GPU)
    precision: str = "bf16"           # bf16 | fp16 | fp32: autocast on CUDA (fp16 with a loss scaler); CPU runs fp32
    num_workers: int = 0              # DataLoader processes reading audio
    threads: int = 0                  # torch CPU threads; 0 keeps torch's default
    save_every: int = 0               # also write last.pt every N steps (0: at epoch ends only)
    save_epochs: int = 1              # write last.pt every N epochs (and after the last one)
    resume: bool = False              # continue from exp_dir/last.pt, mid-epoch if it was saved there

    def __post_init__(self):
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be bf16, fp16 or fp32, not {self.precision!r}")
        if any(s <= 0 for s in self.speed_perturb):
            raise ValueError(f"speed_perturb factors must be positive, not {self.speed_perturb}")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_schedule(step: int, total: int, warmup: float, final: float) -> float:
    """Multiplier of the peak lr: linear warm-up, then cosine decay to `final`."""
    warm = max(1, int(total * warmup))
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))


def compute_loss(model: AcousticModel, extractor: FeatureExtractor, batch: Batch,
                 augment: SpecAugmentConfig | None = None, generator: torch.Generator | None = None,
                 pack: bool = True, speed: float = 1.0) -> torch.Tensor:
    """Mean over the batch of each utterance's CTC loss (summed over its frames)."""
    with torch.no_grad(), torch.autocast(batch.pcm.device.type, enabled=False):  # input side in fp32
        waves, lengths = change_speed(batch.waves, batch.lengths, speed)  # (N, S'), (N,)
        feats, frames = extractor(waves, lengths)                          # (N, T, F), (N,)
        if augment is not None:
            feats = spec_augment(feats, frames, augment, generator)
    log_probs, out_lengths = model(feats, frames, pack=pack)             # (N, T', V), (N,)
    loss = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1), batch.targets, out_lengths, batch.target_lengths,  # (T', N, V)
        blank=0, reduction="sum", zero_infinity=True)
    return loss / batch.pcm.shape[0]


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

    def draw_speed(self) -> float:
        speeds = self.cfg.speed_perturb
        if not speeds:
            return 1.0
        return speeds[int(torch.randint(len(speeds), (1,), generator=self.generator))]

    def __call__(self, batch: Batch) -> torch.Tensor:
        """Train on one batch already on the device; returns the (detached, device) loss."""
        cfg = self.cfg
        speed = self.draw_speed()
        with self.autocast():
            loss = compute_loss(self.model, self.extractor, batch, cfg.augment if cfg.spec_augment else None,
                                self.generator, pack=cfg.pack_sequences, speed=speed)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()


def train_one_epoch(step: Stepper, loader, after_step=lambda: None) -> dict:
    """One pass over `loader` (or an iterator over it), calling `after_step()` after each update;
    returns this process's summed loss, batches, audio seconds and wall seconds."""
    step.model.train()
    device = step.device
    total_loss, n_batches, audio_seconds, start = torch.zeros((), device=device), 0, 0.0, time.time()
    interactive = sys.stderr.isatty()
    bar = tqdm(loader, leave=False, disable=not interactive, unit="batch")
    for batch in bar:
        audio_seconds += batch.audio_seconds                             # from the manifest: no GPU sync
        loss = step(batch.to(device, non_blocking=True))
        total_loss += loss
        n_batches += 1
        after_step()
        if interactive and n_batches % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{step.scheduler.get_last_lr()[0]:.2e}")
    total = total_loss.item()                                           # the epoch's one sync
    return {"loss_sum": total, "batches": n_batches, "audio_seconds": audio_seconds, "seconds": time.time() - start}


def evaluate(transcriber, utts) -> dict:
    """Greedy WER/CER (percent) of the model on `utts`."""
    hyps = [r.text for r in transcriber.transcribe([u.audio for u in utts])]
    s = score([u.text for u in utts], hyps)
    return {"wer": s.wer.rate, "cer": s.cer.rate}


def save_checkpoint(path: str | Path, model: AcousticModel, extractor: FeatureExtractor, vocab: Vocabulary,
                    **extra) -> None:
    """Everything needed to transcribe: configs, vocabulary, normalisation stats and weights.

    Written to a temporary file then renamed, so a kill at any moment leaves the old or new file whole.
    """
    ckpt = {
        "model_config": asdict(model.cfg),
        "feature_config": asdict(extractor.cfg),
        "stats": {"mean": extractor.mean.cpu(), "std": extractor.std.cpu()},
        "vocab": list(vocab.chars),
        "model": {k: v.cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device="cpu") -> tuple[AcousticModel, FeatureExtractor, Vocabulary, dict]:
    """Rebuild model, feature extractor and vocabulary from a checkpoint file alone."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint") from None
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({e})") from e
    model = AcousticModel(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    extractor = FeatureExtractor(FeatureConfig(**ckpt["feature_config"]), ckpt["stats"]["mean"], ckpt["stats"]["std"])
    return model.to(device).eval(), extractor.to(device), Vocabulary(tuple(ckpt["vocab"])), ckpt


def rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "augment": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["augment"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_loader(cfg: TrainConfig, utts, vocab: Vocabulary, d: Dist, device: torch.device):
    """Frame-budget batches of this rank, read and padded by `cfg.num_workers` processes, pinned for the GPU."""
    sampler = FrameBudgetSampler([u.duration for u in utts], cfg.batch_frames, cfg.max_batch_size,
                                 sortagrad=cfg.sortagrad, seed=cfg.seed, num_replicas=d.world, rank=d.rank)
    loader = DataLoader(AudioDataset(utts, vocab), batch_sampler=sampler, collate_fn=collate,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0, prefetch_factor=4 if cfg.num_workers else None)
    return sampler, loader


def train(cfg: TrainConfig) -> dict:
    """Train per `cfg`; writes best.pt (lowest dev WER), last.pt and train_log.jsonl to cfg.exp_dir.

    Under torchrun each process trains a DistributedDataParallel replica on its share of every
    epoch's batches; only rank 0 evaluates on dev and writes files.
    """
    from .transcribe import Transcriber

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    d, device = init_distributed(pick_device(cfg.device))
    torch.manual_seed(cfg.seed)
    torch.set_flush_denormal(True)  # denormal floats slow CPU kernels (seen: LSTM training at a third of its speed)
    exp = Path(cfg.exp_dir)
    if d.main:
        exp.mkdir(parents=True, exist_ok=True)
        (exp / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    say = (lambda *a: print(*a, flush=True)) if d.main else (lambda *a: None)

    feat_cfg, mean, std = load_stats(cfg.stats)
    if feat_cfg != cfg.features:
        raise ValueError(f"{cfg.stats}: statistics are for {feat_cfg}, but the config asks for {cfg.features};"
                         " run the stats stage again")
    extractor = FeatureExtractor(feat_cfg, mean, std).to(device)
    vocab = Vocabulary()
    model = AcousticModel(replace(cfg.model, n_features=feat_cfg.dim, vocab_size=len(vocab))).to(device)
    replica = torch.nn.parallel.DistributedDataParallel(model) if d.enabled else model

    train_utts, dev_utts = read_manifest(cfg.train_manifest), read_manifest(cfg.dev_manifest)
    sampler, loader = build_loader(cfg, train_utts, vocab, d, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_schedule(s, total_steps, cfg.warmup, cfg.final_lr))
    generator = torch.Generator().manual_seed(cfg.seed + d.rank)  # augmentation: its own stream per rank
    step = Stepper(replica, extractor, optimizer, scheduler, cfg, device, generator)
    transcriber = Transcriber(model, extractor, vocab, device)

    say(f"training {count_parameters(model) / 1e6:.2f} M parameters on {device}"
        f"{f' x {d.world} processes' if d.enabled else ''}: {len(train_utts)} train / {len(dev_utts)} dev "
        f"utterances, {len(sampler)} batches per epoch{' per process' if d.enabled else ''}")
    best = {"wer": float("inf")}
    position = {"epoch": 1, "batch": 0, "step": 0}  # the next batch to train on, and updates done
    pending_rng = None
    if cfg.resume and (exp / "last.pt").exists():
        ckpt = torch.load(exp / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:  # empty when saved without loss scaling (bf16, fp32)
            step.scaler.load_state_dict(ckpt["scaler"])
        position, best = ckpt["position"], ckpt["best"]
        rng = ckpt["rng"][d.rank] if d.rank < len(ckpt["rng"]) else None  # None: resumed on more ranks
        # The DataLoader draws its base seed from the global RNG when an epoch's iteration starts:
        # an epoch-end state dates from before that draw, a mid-epoch one from after it.
        if rng is not None and position["batch"] == 0:
            set_rng_state(rng, generator)
        else:
            pending_rng = rng
        say(f"resuming from {exp / 'last.pt'} at step {position['step']} "
            f"(epoch {position['epoch']}, batch {position['batch']})")

    def save_last(**meta) -> None:
        """last.pt with everything needed to continue exactly: optimizer, schedule, scaler, every rank's RNG,
        data position. A collective call: every rank must make it."""
        rngs = gather_objects(d, rng_state(generator))
        if d.main:
            save_checkpoint(exp / "last.pt", model, extractor, vocab, train_config=asdict(cfg),
                            position=dict(position), best=best, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), scaler=step.scaler.state_dict(), rng=rngs, **meta)

    def after_step() -> None:
        position["batch"] += 1
        position["step"] += 1
        if cfg.save_every and position["step"] % cfg.save_every == 0:
            save_last()

    log = (exp / "train_log.jsonl").open("a") if d.main else None
    started = time.time()
    for epoch in range(position["epoch"], cfg.epochs + 1):
        sampler.set_epoch(epoch, start=position["batch"])
        batches = iter(loader)
        if pending_rng is not None:
            set_rng_state(pending_rng, generator)
            pending_rng = None
        stats = train_one_epoch(step, batches, after_step)
        loss_sum, n_batches, audio_seconds = all_sum(d, [stats["loss_sum"], stats["batches"], stats["audio_seconds"]],
                                                     device)
        position.update(epoch=epoch + 1, batch=0)
        record = {"epoch": epoch, "loss": loss_sum / max(n_batches, 1), "audio_seconds": audio_seconds,
                  "seconds": stats["seconds"], "lr": scheduler.get_last_lr()[0]}  # seconds: training alone
        if device.type == "cuda":
            record["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        if d.main:
            dev = evaluate(transcriber, dev_utts)
            record.update(dev_wer=dev["wer"], dev_cer=dev["cer"], elapsed=time.time() - started)  # elapsed: with dev
            log.write(json.dumps(record) + "\n")
            log.flush()
            say(f"epoch {epoch}/{cfg.epochs} loss {record['loss']:.3f} dev %WER {dev['wer']:.2f} "
                f"%CER {dev['cer']:.2f} ({stats['seconds']:.1f}s, {audio_seconds / stats['seconds']:.0f} audio-s/s)")
            if dev["wer"] < best["wer"]:
                best = {"epoch": epoch, **dev}
                save_checkpoint(exp / "best.pt", model, extractor, vocab, train_config=asdict(cfg), epoch=epoch,
                                dev_wer=dev["wer"], dev_cer=dev["cer"])
        if epoch % cfg.save_epochs == 0 or epoch == cfg.epochs:
            save_last(epoch=epoch)
    if d.enabled:
        check_replicas_in_sync(d, model)
        say(f"replicas in sync: {d.world} ranks hold identical parameters")
    if d.main:
        log.close()
        say(f"best dev %WER {best['wer']:.2f} at epoch {best['epoch']}: {exp / 'best.pt'}")
    barrier(d)
    shutdown(d)
    return best


def main(argv: list[str] | None = None) -> None:
    """`python -m asr.train ...` is `asr train ...`."""
    from .cli import main as cli_main

    cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
