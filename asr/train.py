"""Training: TrainConfig, the epoch loop (steps in asr.step), evaluation on dev, checkpoints, logs.

    python -m asr.train --config recipes/an4/conf/cpu.yaml exp_dir=data/an4/exp/cpu model.hidden=320
"""
from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .checkpoint import rng_state, save_checkpoint, set_rng_state
from .data import AudioDataset, FrameBudgetSampler, collate, read_manifest
from .distributed import Dist, all_sum, barrier, check_replicas_in_sync, gather_objects, init_distributed, shutdown
from .features import FeatureConfig, FeatureExtractor, SpecAugmentConfig, load_stats
from .guards import Interrupted, NonFiniteError, stop_on_signals
from .model import AcousticModel, ModelConfig, count_parameters
from .score import score
from .step import Stepper, lr_schedule, norm_summary, train_one_epoch
from .text import BPEVocabulary, TextConfig, Vocabulary, normalize_text, train_bpe


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
    clip_norm: float = 5.0            # gradient clipping by global norm; 0: none (the norm is still measured and logged)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    spec_augment: bool = True
    speed_perturb: tuple[float, ...] = ()  # e.g. [0.9, 1.0, 1.1]: each batch plays at one of these speeds
    noise_snr: tuple[float, ...] = ()  # e.g. [10, 30]: white noise at an SNR (dB) drawn per utterance in this range
    pack_sequences: bool = False      # exact but slower training; inference always packs (asr.model)
    augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextConfig = field(default_factory=TextConfig)  # how transcripts are normalised (prepare and score use it too)
    tokens: str = "chars"             # chars | bpe: sentencepiece pieces trained on the train transcripts
    bpe_vocab_size: int = 200         # pieces (with tokens=bpe), written to exp_dir/bpe.model and into checkpoints
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda | cuda:N (under torchrun: each rank's LOCAL_RANK GPU)
    precision: str = "bf16"           # bf16 | fp16 | fp32: autocast on CUDA (fp16 with a loss scaler); CPU runs fp32
    num_workers: int = 0              # DataLoader processes reading audio
    threads: int = 0                  # torch CPU threads; 0 keeps torch's default
    save_every: int = 0               # also write last.pt every N steps (0: at epoch ends only)
    save_epochs: int = 1              # write last.pt every N epochs (and after the last one)
    keep_epochs: int = 0              # also keep the last N epochs' weights as epoch_<k>.pt (for asr average)
    resume: bool = False              # continue from exp_dir/last.pt, mid-epoch if it was saved there
    max_bad_steps: int = 20           # stop after this many steps in a row with a non-finite loss or gradient
    log_every: int = 0                # also print `step N loss L` every N steps (0: per epoch only)
    tensorboard: bool = True          # scalars (loss, lr, grad norm, dev WER/CER, throughput) in exp_dir/tensorboard

    def __post_init__(self):
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"precision must be bf16, fp16 or fp32, not {self.precision!r}")
        if any(s <= 0 for s in self.speed_perturb):
            raise ValueError(f"speed_perturb factors must be positive, not {self.speed_perturb}")
        if self.noise_snr and (len(self.noise_snr) != 2 or self.noise_snr[0] > self.noise_snr[1]):
            raise ValueError(f"noise_snr must be [min, max] dB, not {self.noise_snr}")
        if self.clip_norm < 0:
            raise ValueError(f"clip_norm must be >= 0 (0: no clipping), not {self.clip_norm}")
        if self.tokens not in ("chars", "bpe"):
            raise ValueError(f"tokens must be 'chars' or 'bpe', not {self.tokens!r}")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def evaluate(transcriber, utts) -> dict:
    """Greedy WER/CER (percent) of the model on `utts`."""
    hyps = [r.text for r in transcriber.transcribe([u.input for u in utts])]
    s = score([u.text for u in utts], hyps)
    return {"wer": s.wer.rate, "cer": s.cer.rate}


def read_targets(cfg: TrainConfig, manifest: str) -> list:
    """`manifest`'s utterances with transcripts normalised per cfg.text (a no-op on manifests prepared with it).

    A manifest prepared with another normalisation (its text.json) is refused: what it dropped cannot come back.
    """
    from .corpora import read_text_config

    prepared = read_text_config(manifest)
    if prepared is not None and prepared != cfg.text:
        raise ValueError(f"{manifest}: transcripts were prepared with {prepared}, but the config asks for "
                         f"{cfg.text}; run the prepare stage again with this config")
    return [replace(u, text=normalize_text(u.text, cfg.text)) for u in read_manifest(manifest)]


def build_vocabulary(cfg: TrainConfig, train_utts, d: Dist) -> Vocabulary | BPEVocabulary:
    """Characters of cfg.text's alphabet, or BPE pieces trained on the train transcripts (exp_dir/bpe.model,
    kept when resuming)."""
    if cfg.tokens == "chars":
        return Vocabulary(cfg.text.alphabet)
    path = Path(cfg.exp_dir) / "bpe.model"
    if d.main and not (cfg.resume and path.exists()):
        train_bpe([u.text for u in train_utts], cfg.bpe_vocab_size, path)
    barrier(d)
    return BPEVocabulary.load(path)


def reject_unusable(cfg: TrainConfig, utts, name: str, d: Dist, say) -> list:
    """`utts` without those training cannot use (asr.validate's quick check: files, headers, transcripts,
    CTC lengths), which go to exp_dir/rejected.jsonl with their reasons; up front, not mid-epoch."""
    from .validate import Checker, screen, write_rejected

    usable, findings = screen(utts, Checker.for_config(cfg), full=False)
    if len(usable) < len(utts):
        if d.main:
            write_rejected(Path(cfg.exp_dir) / "rejected.jsonl", findings, split=name, mode="a")
        say(f"{name}: rejected {len(utts) - len(usable)} of {len(utts)} utterances "
            f"(reasons in {Path(cfg.exp_dir) / 'rejected.jsonl'})")
    if not usable:
        raise ValueError(f"{name}: no usable utterances left (reasons in {Path(cfg.exp_dir) / 'rejected.jsonl'})")
    return usable


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
    if d.main:
        (exp / "rejected.jsonl").unlink(missing_ok=True)
    train_utts = reject_unusable(cfg, read_targets(cfg, cfg.train_manifest), cfg.train_manifest, d, say)
    dev_utts = reject_unusable(cfg, read_targets(cfg, cfg.dev_manifest), cfg.dev_manifest, d, say)
    vocab = build_vocabulary(cfg, train_utts, d)
    model = AcousticModel(replace(cfg.model, n_features=feat_cfg.dim, vocab_size=len(vocab))).to(device)
    replica = torch.nn.parallel.DistributedDataParallel(model) if d.enabled else model

    sampler, loader = build_loader(cfg, train_utts, vocab, d, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_schedule(s, total_steps, cfg.warmup, cfg.final_lr))
    generator = torch.Generator().manual_seed(cfg.seed + d.rank)  # augmentation: its own stream per rank
    step = Stepper(replica, extractor, optimizer, scheduler, cfg, device, generator)
    transcriber = Transcriber(model, extractor, vocab, device)

    say(f"training {count_parameters(model) / 1e6:.2f} M parameters on {device}, {len(vocab)} {cfg.tokens} tokens"
        f"{f' x {d.world} processes' if d.enabled else ''}: {len(train_utts)} train / {len(dev_utts)} dev "
        f"utterances, {len(sampler)} batches per epoch{' per process' if d.enabled else ''}")
    best = {"wer": float("inf")}
    position = {"epoch": 1, "batch": 0, "step": 0}  # the next batch to train on, and updates done
    pending_rng = None
    resumed_elapsed = 0.0  # training wall time before this process: `elapsed` in train_log.jsonl continues it
    if cfg.resume and (exp / "last.pt").exists():
        ckpt = torch.load(exp / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:  # empty when saved without loss scaling (bf16, fp32)
            step.scaler.load_state_dict(ckpt["scaler"])
        position, best = ckpt["position"], ckpt["best"]
        resumed_elapsed = ckpt.get("elapsed", 0.0)  # absent from checkpoints written before it was saved
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
                            scheduler=scheduler.state_dict(), scaler=step.scaler.state_dict(), rng=rngs,
                            elapsed=time.time() - started, **meta)

    def after_step(loss: torch.Tensor | None) -> None:
        position["batch"] += 1
        position["step"] += 1
        if loss is not None and board is not None:
            for name, value in (*step.last.items(), ("lr", scheduler.get_last_lr()[0])):
                board.add_scalar(f"train/{name}", value, position["step"])
        if cfg.log_every and position["step"] % cfg.log_every == 0 and loss is not None:
            say(f"step {position['step']} loss {step.last['loss']:.3f} grad norm {step.last['grad_norm']:.2f} "
                f"(epoch {position['epoch']}, batch {position['batch']})")
        if cfg.save_every and position["step"] % cfg.save_every == 0:
            save_last()
        if stop:
            save_last()
            raise Interrupted(stop[0])

    log = (exp / "train_log.jsonl").open("a") if d.main else None
    board = tensorboard(exp) if d.main and cfg.tensorboard else None
    started = time.time() - resumed_elapsed
    stop: list[int] = []  # the signal that asked us to stop, once one has
    try:
        with stop_on_signals(stop):
            for epoch in range(position["epoch"], cfg.epochs + 1):
                sampler.set_epoch(epoch, start=position["batch"])
                batches = iter(loader)
                if pending_rng is not None:
                    set_rng_state(pending_rng, generator)
                    pending_rng = None
                stats = train_one_epoch(step, batches, after_step)
                position.update(epoch=epoch + 1, batch=0)
                record = epoch_record(d, device, epoch, stats, scheduler, step)
                if d.main:
                    dev = evaluate(transcriber, dev_utts)
                    record.update(dev_wer=dev["wer"], dev_cer=dev["cer"], elapsed=time.time() - started)  # with dev
                    if board is not None:
                        epoch_scalars(board, record, position["step"])
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    say(f"epoch {epoch}/{cfg.epochs} loss {record['loss']:.3f} dev %WER {dev['wer']:.2f} "
                        f"%CER {dev['cer']:.2f} ({stats['seconds']:.1f}s, "
                        f"{record['audio_seconds'] / stats['seconds']:.0f} audio-s/s)"
                        + (f", {step.skipped} non-finite steps skipped so far" if step.skipped else ""))
                    if dev["wer"] < best["wer"]:
                        best = {"epoch": epoch, **dev}
                        save_checkpoint(exp / "best.pt", model, extractor, vocab, train_config=asdict(cfg),
                                        epoch=epoch, dev_wer=dev["wer"], dev_cer=dev["cer"])
                if d.main and cfg.keep_epochs:
                    save_checkpoint(exp / f"epoch_{epoch}.pt", model, extractor, vocab, train_config=asdict(cfg),
                                    epoch=epoch)
                    (exp / f"epoch_{epoch - cfg.keep_epochs}.pt").unlink(missing_ok=True)
                if epoch % cfg.save_epochs == 0 or epoch == cfg.epochs:
                    save_last(epoch=epoch)
    except Interrupted as e:
        say(f"{signal.Signals(e.signal).name}: stopped at step {position['step']} (epoch {position['epoch']}, "
            f"batch {position['batch']}); saved {exp / 'last.pt'}: continue with resume=true")
        raise SystemExit(128 + e.signal) from None
    except NonFiniteError:
        save_last()
        raise
    finally:
        if log is not None:
            log.close()
        if board is not None:
            board.close()
    if d.enabled:
        check_replicas_in_sync(d, model)
        say(f"replicas in sync: {d.world} ranks hold identical parameters")
    if d.main:
        say(f"best dev %WER {best['wer']:.2f} at epoch {best['epoch']}: {exp / 'best.pt'}")
    barrier(d)
    shutdown(d)
    return best


def tensorboard(exp: Path):
    """A SummaryWriter on exp_dir/tensorboard (`tensorboard --logdir data/an4/exp`)."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(exp / "tensorboard"))


def epoch_scalars(board, record: dict, step: int) -> None:
    for tag, key in (("dev/wer", "dev_wer"), ("dev/cer", "dev_cer"), ("train/epoch_loss", "loss"),
                     ("train/skipped_steps", "skipped_steps"), ("train/oom_batches", "oom_split")):
        board.add_scalar(tag, record[key], step)
    board.add_scalar("train/audio_seconds_per_second", record["audio_seconds"] / max(record["seconds"], 1e-9), step)
    board.flush()


def epoch_record(d: Dist, device: torch.device, epoch: int, stats: dict, scheduler, step: Stepper) -> dict:
    """The epoch's line of train_log.jsonl, summed over processes; `seconds` is training alone (no dev pass)."""
    loss_sum, n_batches, audio_seconds = all_sum(d, [stats["loss_sum"], stats["batches"], stats["audio_seconds"]],
                                                 device)
    record = {"epoch": epoch, "loss": loss_sum / max(n_batches - d.world * stats["skipped"], 1),  # applied steps
              "audio_seconds": audio_seconds, "seconds": stats["seconds"], "lr": scheduler.get_last_lr()[0],
              "skipped_steps": step.skipped, "oom_split": step.oom_split, "oom_skipped": step.oom_skipped,
              "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                         else f"cpu x {torch.get_num_threads()} threads")}
    if step.norms:  # this process's steps (under DDP the gradients are the same on every rank)
        record["grad_norm"] = norm_summary(step.norms, step.cfg.clip_norm)
        step.norms = []
    if device.type == "cuda":
        record["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return record


def main(argv: list[str] | None = None) -> None:
    """`python -m asr.train ...` is `asr train ...`."""
    from .cli import main as cli_main

    cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
