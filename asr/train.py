"""Training: the epoch loop (one step and one epoch in asr.step), evaluation on dev, checkpoints, logs.

    asr train --config recipes/an4/conf/cpu.yaml exp_dir=data/an4/exp/cpu model.hidden=320
    python -m asr.train ...  (the same)        torchrun --nproc_per_node=8 -m asr train ...  (DDP)

The config schema is asr.config.TrainConfig; the state a resumed run restores is asr.checkpoint.TrainingState.
"""
from __future__ import annotations

import gc
import json
import math
import signal
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .backends.checkpoint import CheckpointBackend
from .checkpoint import TrainingState
from .config import TrainConfig, selection_metric
from .data import AudioDataset, FrameBudgetSampler, collate, read_manifest, with_alphabet
from .distributed import Dist, all_sum, barrier, check_replicas_in_sync, init_distributed, pick_device, shutdown
from .features import FeatureExtractor, load_stats
from .finetune import Freezer, checkpoint_stats, initialise, start_config
from .guards import Interrupted, NonFiniteError, stop_on_signals
from .model import AcousticModel, count_parameters
from .native import keep_freed_memory
from .score import score
from .step import EpochPlan, Stepper, WeightAverage, lr_schedule, make_optimizer, norm_summary, train_one_epoch
from .text import normalize_text
from .tokens import BPEVocabulary, Vocabulary, train_bpe
from .transcribe import Transcriber
from .validate import Checker, screen, write_rejected

__all__ = ["TrainConfig", "train", "evaluate", "lr_schedule", "Stepper"]


def evaluate(transcriber, utts, unit: str = "word") -> dict:
    """Greedy WER/CER (percent) of the model on `utts` (`unit` "char": characters are the words)."""
    hyps = [r.text for r in transcriber.transcribe([u.input for u in utts])]
    s = score([u.text for u in utts], hyps, unit)
    return {"wer": s.wer.rate, "cer": s.cer.rate}


def selected_by(cfg: TrainConfig) -> str:
    """What best.pt is chosen by (asr.config.selection_metric)."""
    return selection_metric(cfg.select_by, cfg.text.word_unit)


def read_targets(cfg: TrainConfig, manifest: str) -> list:
    """`manifest`'s utterances with transcripts normalised per cfg.text (a no-op on manifests prepared with it).

    A manifest prepared with another normalisation (its text.json) is refused: what it dropped cannot come back.
    """
    return read_manifest(manifest, cfg.text)


def build_vocabulary(cfg: TrainConfig, train_utts, d: Dist) -> Vocabulary | BPEVocabulary:
    """Characters of cfg.text's alphabet, or BPE pieces trained on the train transcripts (exp_dir/bpe.model,
    kept when resuming)."""
    if cfg.tokens == "chars":
        return Vocabulary(cfg.text.alphabet, cfg.text.word_unit)
    path = Path(cfg.exp_dir) / "bpe.model"
    if d.main and not (cfg.resume and path.exists()):
        train_bpe([u.text for u in train_utts], cfg.bpe_vocab_size, path)
    barrier(d)
    return BPEVocabulary.load(path)


def with_learned_alphabet(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its text alphabet for charset data: the one prepare recorded beside the train manifest (its
    text.json), else learned from the training transcripts (the shards' index for train_shards). Any other
    charset: `cfg` as it is. Every DDP rank reads the same data, so learns the same alphabet."""
    text = cfg.text
    if text.charset != "data" or text.learned:
        return cfg
    if cfg.train_shards:
        from .shards import open_shards

        texts = [normalize_text(t, text) for s in open_shards(cfg.train_shards) for t in s.texts]
        return replace(cfg, text=text.with_alphabet_of(texts))
    return replace(cfg, text=with_alphabet(text, cfg.train_manifest))


def build_extractor(cfg: TrainConfig, say) -> FeatureExtractor:
    """The features and their normalisation: the stats stage's (cfg.stats, for cfg.features), or, starting
    from a checkpoint, the checkpoint's own (its weights were trained on them)."""
    if cfg.init_from:
        feat_cfg, mean, std = checkpoint_stats(cfg.init_from)
        say(f"features and their normalisation statistics: {cfg.init_from}'s ({feat_cfg.kind}, {feat_cfg.dim} bins)")
        return FeatureExtractor(feat_cfg, mean, std)
    feat_cfg, mean, std = load_stats(cfg.stats)
    if feat_cfg != cfg.features:
        raise ValueError(f"{cfg.stats}: statistics are for {feat_cfg}, but the config asks for {cfg.features};"
                         " run the stats stage again")
    return FeatureExtractor(feat_cfg, mean, std)


def reject_unusable(cfg: TrainConfig, utts, name: str, d: Dist, say, targets: bool = True) -> list:
    """`utts` without those training cannot use (asr.validate's quick check: files, headers, transcripts,
    CTC lengths), which go to exp_dir/rejected.jsonl with their reasons; up front, not mid-epoch. `targets`:
    False for dev, whose transcripts are only scored against (characters the model lacks are kept)."""
    usable, findings = screen(utts, Checker.for_config(cfg, targets), full=False)
    record_rejected(cfg, name, len(utts), len(usable), findings, d, say)
    return usable


def record_rejected(cfg: TrainConfig, name: str, total: int, usable: int, findings, d: Dist, say) -> None:
    """Say how many of `name`'s `total` utterances were rejected and append the reasons to exp_dir/rejected.jsonl;
    none left is an error."""
    rejected = Path(cfg.exp_dir) / "rejected.jsonl"
    if usable < total:
        if d.main:
            write_rejected(rejected, findings, split=name, mode="a")
        say(f"{name}: rejected {total - usable} of {total} utterances (reasons in {rejected})")
    if not usable:
        raise ValueError(f"{name}: no usable utterances left (reasons in {rejected})")


def read_train_shards(cfg: TrainConfig, d: Dist, say) -> list:
    """cfg.train_shards' shards, transcripts normalised per cfg.text, without the utterances training cannot use
    (transcript and CTC-length checks from the index: the audio stays in the shards until its batch comes)."""
    from .shards import open_shards

    shards, kept, findings = open_shards(cfg.train_shards), [], []
    checker = Checker.for_config(cfg)
    for s in shards:
        s = replace(s, texts=tuple(normalize_text(t, cfg.text) for t in s.texts))
        found = {u.id: checker.check_duration(u, u.duration) + checker.check_text(u) for u in s.utterances()}
        findings += [f for fs in found.values() for f in fs]
        keep = [i for i, uid in enumerate(s.ids) if not any(f.fatal for f in found[uid])]
        kept.append(replace(s, **{k: tuple(getattr(s, k)[i] for i in keep)
                                  for k in ("keys", "durations", "texts", "ids")}))
    record_rejected(cfg, "train_shards", sum(len(s.ids) for s in shards), sum(len(s.ids) for s in kept), findings,
                    d, say)
    return kept


def build_loader(cfg: TrainConfig, utts, vocab: Vocabulary, d: Dist, device: torch.device, shards=None):
    """Frame-budget batches of this rank, read and padded by `cfg.num_workers` processes, pinned for the GPU.
    From `shards`: one worker process streams this rank's shards, decoding with `cfg.num_workers` threads."""
    if shards is not None:
        from .shard_stream import ShardBatching, ShardStream

        stream = ShardStream(shards, vocab, ShardBatching.of(cfg), cfg.features.sample_rate, d.world, d.rank,
                             threads=max(1, cfg.num_workers))
        workers = min(1, cfg.num_workers)  # not persistent: each epoch's worker gets the stream as set_epoch left it
        return stream, DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                                  prefetch_factor=4 if workers else None)
    sampler = FrameBudgetSampler([u.duration for u in utts], cfg.batch_frames, cfg.features.frames_per_second,
                                 cfg.max_batch_size, sortagrad=cfg.sortagrad, seed=cfg.seed, num_replicas=d.world,
                                 rank=d.rank)
    loader = DataLoader(AudioDataset(utts, vocab, cfg.features.sample_rate), batch_sampler=sampler, collate_fn=collate,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        persistent_workers=cfg.num_workers > 0, prefetch_factor=4 if cfg.num_workers else None)
    return sampler, loader


def train(cfg: TrainConfig) -> dict:
    """Train per `cfg`; writes best.pt (lowest dev WER, or what cfg.select_by names), last.pt and train_log.jsonl
    to cfg.exp_dir.

    Under torchrun each process trains a DistributedDataParallel replica on its share of every
    epoch's batches; only rank 0 evaluates on dev and writes files.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    keep_freed_memory()                     # each batch's tensors reuse the last one's pages (asr.native)
    d, device = init_distributed(pick_device(cfg.device))
    torch.manual_seed(cfg.seed)
    torch.set_flush_denormal(True)  # denormal floats slow CPU kernels (seen: LSTM training at a third of its speed)
    exp = Path(cfg.exp_dir)
    cfg = start_config(with_learned_alphabet(cfg))   # config.json and the checkpoints record both
    if d.main:
        exp.mkdir(parents=True, exist_ok=True)
        (exp / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    say = (lambda *a: print(*a, flush=True)) if d.main else (lambda *a: None)

    extractor = build_extractor(cfg, say).to(device)
    feat_cfg = extractor.cfg
    if d.main:
        (exp / "rejected.jsonl").unlink(missing_ok=True)
    shards = read_train_shards(cfg, d, say) if cfg.train_shards else None
    train_utts = ([u for s in shards for u in s.utterances()] if shards is not None else
                  reject_unusable(cfg, read_targets(cfg, cfg.train_manifest), cfg.train_manifest, d, say))
    dev_utts = reject_unusable(cfg, read_targets(cfg, cfg.dev_manifest), cfg.dev_manifest, d, say, targets=False)
    vocab = build_vocabulary(cfg, train_utts, d)
    model = AcousticModel(replace(cfg.model, n_features=feat_cfg.dim, vocab_size=len(vocab))).to(device)
    if cfg.init_from:
        say(initialise(model, vocab, cfg.init_from))
    freezer = Freezer(model, cfg, d.enabled)                   # before DDP, which syncs what takes gradients
    replica = torch.nn.parallel.DistributedDataParallel(model) if d.enabled else model

    sampler, loader = build_loader(cfg, train_utts, vocab, d, device, shards)
    optimizer = make_optimizer(model, cfg, device)
    plan = EpochPlan(cfg, len(sampler))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, plan.multiplier)
    generator = torch.Generator().manual_seed(cfg.seed + d.rank)  # augmentation: its own stream per rank
    step = Stepper(replica, extractor, optimizer, scheduler, cfg, device, generator)
    average = WeightAverage(model, cfg.ema_epochs, len(sampler)) if cfg.ema_epochs else None
    state = TrainingState(exp, asdict(cfg), d, model, extractor, vocab, optimizer, scheduler, step.scaler, generator,
                          average)
    transcriber = Transcriber(CheckpointBackend(state.scored, extractor, vocab, device))

    say(start_line(cfg, model, vocab, device, d, len(train_utts), len(dev_utts), len(sampler), average))
    progress = state.progress
    if cfg.resume and state.restore():
        progress = state.progress
        say(f"resuming from {exp / 'last.pt'} at step {progress.step} "
            f"(epoch {progress.epoch}, batch {progress.batch})")
    plan.follow(progress)
    log = open_log(exp / "train_log.jsonl", progress.epoch) if d.main else None
    board = tensorboard(exp) if d.main and cfg.tensorboard else None
    after_step = AfterStep(cfg, state, step, board, say)
    try:
        with stop_on_signals(after_step.stop):
            while progress.epoch <= plan.epochs:
                epoch, started = progress.epoch, state.elapsed
                freezer.set_epoch(epoch)
                sampler.set_epoch(epoch, start=progress.batch)
                batches = iter(loader)
                state.epoch_started()
                stats = train_one_epoch(step, batches, after_step)
                progress.epoch, progress.batch = epoch + 1, 0
                record = epoch_record(d, device, epoch, stats, scheduler, step)
                if d.main:
                    end_of_epoch(cfg, state, transcriber, dev_utts, record, stats, step, board, log, say, plan)
                seconds, elapsed = all_sum(d, [(state.elapsed - started) * d.main, state.elapsed * d.main], device)
                if (line := plan.epoch_done(seconds, elapsed)) is not None:
                    say(line)
                if epoch % cfg.save_epochs == 0 or epoch == plan.epochs:
                    state.save_last(epoch=epoch)
    except Interrupted as e:
        say(f"{signal.Signals(e.signal).name}: stopped at step {progress.step} (epoch {progress.epoch}, "
            f"batch {progress.batch}); saved {exp / 'last.pt'}: continue with resume=true")
        raise SystemExit(128 + e.signal) from None
    except NonFiniteError:
        state.save_last()
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
        key = selected_by(cfg)
        say(f"best dev %{key.upper()} {progress.best[key]:.2f} at epoch {progress.best['epoch']}: {exp / 'best.pt'}")
    # DDP's reducer and the loader's iterator go before the process group they use: left to the interpreter's
    # exit, gloo could abort a rank after a finished run ("terminate called without an active exception")
    replica = step = after_step = batches = loader = None
    gc.collect()
    barrier(d)
    shutdown(d)
    return progress.best


def start_line(cfg: TrainConfig, model, vocab, device, d: Dist, n_train: int, n_dev: int, batches: int,
               average: WeightAverage | None) -> str:
    """What a run says as it starts: the model, the data, the batches, and what dev scores."""
    line = (f"training {count_parameters(model) / 1e6:.2f} M parameters on {device}, {len(vocab)} {cfg.tokens} tokens"
            f"{f' x {d.world} processes' if d.enabled else ''}: {n_train} train / {n_dev} dev utterances, {batches} "
            f"batches per epoch{' per process' if d.enabled else ''}")
    if average is not None:
        line += (f"\ndev scores a moving average of the weights over ~{cfg.ema_epochs:g} epochs (decay "
                 f"{average.decay:.5f} an update)")
    return line


class AfterStep:
    """What follows every update: the progress counted, the weights' moving average, TensorBoard scalars and log
    lines, last.pt every `save_every` steps, and a save-and-stop once a signal has asked for it (`stop`)."""

    def __init__(self, cfg: TrainConfig, state: TrainingState, step: Stepper, board, say):
        self.cfg, self.state, self.step, self.board, self.say = cfg, state, step, board, say
        self.stop: list[int] = []  # the signal that asked us to stop, once one has (asr.guards fills it)

    def __call__(self, loss: torch.Tensor | None) -> None:
        p, cfg = self.state.progress, self.cfg
        p.batch += 1
        p.step += 1
        if loss is not None and self.state.average is not None:
            self.state.average.update(p.step)
        if loss is not None and self.board is not None:
            for name, value in (*self.step.last.items(), ("lr", self.step.scheduler.get_last_lr()[0])):
                self.board.add_scalar(f"train/{name}", value, p.step)
        if cfg.log_every and p.step % cfg.log_every == 0 and loss is not None:
            self.say(f"step {p.step} loss {self.step.last['loss']:.3f} grad norm {self.step.last['grad_norm']:.2f} "
                     f"(epoch {p.epoch}, batch {p.batch})")
        if cfg.save_every and p.step % cfg.save_every == 0:
            self.state.save_last()
        if self.stop:
            self.state.save_last()
            raise Interrupted(self.stop[0])


def end_of_epoch(cfg: TrainConfig, state: TrainingState, transcriber: Transcriber, dev_utts, record: dict,
                 stats: dict, step: Stepper, board, log, say, plan: EpochPlan) -> None:
    """Rank 0 after each epoch: dev WER / CER, the epoch's log line and scalars, best.pt and epoch_k.pt."""
    epoch, progress = record["epoch"], state.progress
    dev = evaluate(transcriber, dev_utts, cfg.text.word_unit)
    record.update(dev_wer=dev["wer"], dev_cer=dev["cer"], elapsed=state.elapsed,   # elapsed includes dev
                  epochs=plan.epochs)
    if board is not None:
        epoch_scalars(board, record, progress.step)
    log.write(json.dumps(record) + "\n")
    log.flush()
    say(f"epoch {epoch}/{plan.epochs} loss {record['loss']:.3f} dev %WER {dev['wer']:.2f} "
        f"%CER {dev['cer']:.2f} ({stats['seconds']:.1f}s, "
        f"{record['audio_seconds'] / stats['seconds']:.0f} audio-s/s)"
        + (f", {step.skipped} non-finite steps skipped so far" if step.skipped else ""))
    key = selected_by(cfg)
    if dev[key] < progress.best.get(key, math.inf):
        progress.best = {"epoch": epoch, **dev}
        state.save_model("best.pt", epoch=epoch, dev_wer=dev["wer"], dev_cer=dev["cer"])
    if cfg.keep_epochs:
        state.save_model(f"epoch_{epoch}.pt", epoch=epoch)
        (state.exp / f"epoch_{epoch - cfg.keep_epochs}.pt").unlink(missing_ok=True)


def open_log(path: Path, first_epoch: int):
    """train_log.jsonl to append to, holding only the epochs before `first_epoch` (the one this run trains next):
    a run started again from zero, or resumed from a last.pt older than the log (killed between the two
    writes), logs each epoch once."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line).get("epoch", 0) < first_epoch]
        if len(kept) != len(lines):
            tmp = path.with_suffix(".tmp")
            tmp.write_text("".join(kept))
            tmp.replace(path)
    return path.open("a")


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



if __name__ == "__main__":    # `python -m asr.train ...` is `asr train ...`: the command line's one parser
    import runpy
    import sys

    sys.argv.insert(1, "train")
    runpy.run_module("asr", run_name="__main__", alter_sys=True)
