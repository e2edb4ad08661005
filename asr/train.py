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

from .data import AudioDataset, Batch, BucketBatchSampler, collate, read_manifest
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
    max_batch_seconds: float = 160.0  # padded audio per batch
    lr: float = 2e-3                  # peak learning rate
    warmup: float = 0.05              # fraction of all steps spent warming up linearly
    final_lr: float = 0.02            # cosine decay ends at this fraction of lr
    weight_decay: float = 0.01
    clip_norm: float = 5.0            # gradient clipping by global norm
    features: FeatureConfig = field(default_factory=FeatureConfig)
    spec_augment: bool = True
    pack_sequences: bool = False      # exact but slower training; inference always packs (asr.model)
    augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    amp: bool = True                  # bf16 autocast (CUDA only)
    num_workers: int = 0              # DataLoader processes reading audio
    threads: int = 0                  # torch CPU threads; 0 keeps torch's default
    save_every: int = 0               # also write last.pt every N steps (0: at epoch ends only)
    resume: bool = False              # continue from exp_dir/last.pt, mid-epoch if it was saved there


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
                 pack: bool = True) -> torch.Tensor:
    """Mean over the batch of each utterance's CTC loss (summed over its frames)."""
    with torch.no_grad():
        feats, frames = extractor(batch.waves, batch.lengths)            # (N, T, F), (N,)
        if augment is not None:
            feats = spec_augment(feats, frames, augment, generator)
    log_probs, out_lengths = model(feats, frames, pack=pack)             # (N, T', V), (N,)
    loss = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1), batch.targets, out_lengths, batch.target_lengths,  # (T', N, V)
        blank=0, reduction="sum", zero_infinity=True)
    return loss / batch.waves.shape[0]


def train_one_epoch(model, extractor, loader, optimizer, scheduler, cfg: TrainConfig, device, generator,
                    after_step=lambda: None) -> dict:
    """One pass over `loader` (or an iterator over it), calling `after_step()` after each update;
    returns mean loss, audio seconds and wall seconds."""
    model.train()
    total_loss, n_batches, audio_seconds, start = 0.0, 0, 0.0, time.time()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")
    bar = tqdm(loader, leave=False, disable=not sys.stderr.isatty(), unit="batch")
    for batch in bar:
        batch = batch.to(device, non_blocking=True)
        with autocast:
            loss = compute_loss(model, extractor, batch, cfg.augment if cfg.spec_augment else None, generator,
                                pack=cfg.pack_sequences)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        optimizer.step()
        scheduler.step()
        total_loss += loss.item()
        n_batches += 1
        after_step()
        audio_seconds += batch.lengths.sum().item() / extractor.cfg.sample_rate
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
    seconds = time.time() - start
    return {"loss": total_loss / max(n_batches, 1), "audio_seconds": audio_seconds, "seconds": seconds}


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


def train(cfg: TrainConfig) -> dict:
    """Train per `cfg`; writes best.pt (lowest dev WER), last.pt and train_log.jsonl to cfg.exp_dir."""
    from .transcribe import Transcriber

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    torch.set_flush_denormal(True)  # denormal floats slow CPU kernels (seen: LSTM training at a third of its speed)
    device = pick_device(cfg.device)
    exp = Path(cfg.exp_dir)
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "config.json").write_text(json.dumps(asdict(cfg), indent=1))

    feat_cfg, mean, std = load_stats(cfg.stats)
    if feat_cfg != cfg.features:
        raise ValueError(f"{cfg.stats}: statistics are for {feat_cfg}, but the config asks for {cfg.features};"
                         " run the stats stage again")
    extractor = FeatureExtractor(feat_cfg, mean, std).to(device)
    vocab = Vocabulary()
    model_cfg = replace(cfg.model, n_features=feat_cfg.dim, vocab_size=len(vocab))
    model = AcousticModel(model_cfg).to(device)

    train_utts, dev_utts = read_manifest(cfg.train_manifest), read_manifest(cfg.dev_manifest)
    sampler = BucketBatchSampler([u.duration for u in train_utts], cfg.max_batch_seconds, seed=cfg.seed)
    loader = DataLoader(AudioDataset(train_utts, vocab), batch_sampler=sampler, collate_fn=collate,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_schedule(s, total_steps, cfg.warmup, cfg.final_lr))
    transcriber = Transcriber(model, extractor, vocab, device)
    generator = torch.Generator().manual_seed(cfg.seed)

    print(f"training {count_parameters(model) / 1e6:.2f} M parameters on {device}: "
          f"{len(train_utts)} train / {len(dev_utts)} dev utterances, {len(sampler)} batches per epoch", flush=True)
    best = {"wer": float("inf")}
    position = {"epoch": 1, "batch": 0, "step": 0}  # the next batch to train on, and updates done
    pending_rng = None
    if cfg.resume and (exp / "last.pt").exists():
        ckpt = torch.load(exp / "last.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        position, best = ckpt["position"], ckpt["best"]
        # The DataLoader draws its base seed from the global RNG when an epoch's iteration starts:
        # an epoch-end state dates from before that draw, a mid-epoch one from after it.
        if position["batch"] == 0:
            set_rng_state(ckpt["rng"], generator)
        else:
            pending_rng = ckpt["rng"]
        print(f"resuming from {exp / 'last.pt'} at step {position['step']} "
              f"(epoch {position['epoch']}, batch {position['batch']})", flush=True)

    def save_last(**meta) -> None:
        """last.pt with everything needed to continue exactly: optimizer, schedule, RNG, data position."""
        save_checkpoint(exp / "last.pt", model, extractor, vocab, train_config=asdict(cfg), position=dict(position),
                        best=best, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        rng=rng_state(generator), **meta)

    def after_step() -> None:
        position["batch"] += 1
        position["step"] += 1
        if cfg.save_every and position["step"] % cfg.save_every == 0:
            save_last()

    log = (exp / "train_log.jsonl").open("a")
    for epoch in range(position["epoch"], cfg.epochs + 1):
        sampler.set_epoch(epoch, start=position["batch"])
        batches = iter(loader)
        if pending_rng is not None:
            set_rng_state(pending_rng, generator)
            pending_rng = None
        stats = train_one_epoch(model, extractor, batches, optimizer, scheduler, cfg, device, generator, after_step)
        position.update(epoch=epoch + 1, batch=0)
        dev = evaluate(transcriber, dev_utts)
        record = {"epoch": epoch, **stats, "dev_wer": dev["wer"], "dev_cer": dev["cer"],
                  "lr": scheduler.get_last_lr()[0]}
        log.write(json.dumps(record) + "\n")
        log.flush()
        print(f"epoch {epoch}/{cfg.epochs} loss {stats['loss']:.3f} dev %WER {dev['wer']:.2f} %CER {dev['cer']:.2f} "
              f"({stats['seconds']:.1f}s, {stats['audio_seconds'] / stats['seconds']:.0f} audio-s/s)", flush=True)
        meta = dict(epoch=epoch, dev_wer=dev["wer"], dev_cer=dev["cer"])
        if dev["wer"] < best["wer"]:
            best = {"epoch": epoch, **dev}
            save_checkpoint(exp / "best.pt", model, extractor, vocab, train_config=asdict(cfg), **meta)
        save_last(**meta)
    log.close()
    print(f"best dev %WER {best['wer']:.2f} at epoch {best['epoch']}: {exp / 'best.pt'}", flush=True)
    return best


def main(argv: list[str] | None = None) -> None:
    """`python -m asr.train ...` is `asr train ...`."""
    from .cli import main as cli_main

    cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
