"""Checkpoints that carry everything needed to use them, and the training state that resumes a run,
both written so that a kill never leaves half a file.

    save_checkpoint(path, model, extractor, vocab)   best.pt, epoch_k.pt: configs, vocabulary, stats, weights
    load_checkpoint(path) -> model, extractor, vocab, the checkpoint dict
    TrainingState                                    last.pt: the same plus optimizer, schedule, loss scaler,
                                                     every rank's RNG and the position in the epoch
    epoch_checkpoints(exp, last=5) / (best=5)        the epoch_<k>.pt files training kept (keep_epochs=N)
    average_checkpoints(paths, out)                  their mean weights as one model file (`asr average`)
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .config import selection_metric
from .distributed import Dist, gather_objects
from .features import FeatureConfig, FeatureExtractor
from .model import AcousticModel, ModelConfig
from .tokens import BPEVocabulary, Vocabulary, vocabulary_from_state


def save_checkpoint(path: str | Path, model: AcousticModel, extractor: FeatureExtractor, vocab: Vocabulary,
                    **extra) -> None:
    """Everything needed to transcribe: configs, vocabulary, normalisation stats and weights.

    Written to a temporary file then renamed, so a kill at any moment leaves the old or new file whole.
    """
    ckpt = {
        "model_config": asdict(model.cfg),
        "feature_config": asdict(extractor.cfg),
        "stats": {"mean": extractor.mean.cpu(), "std": extractor.std.cpu()},
        "vocab": vocab.state(),
        "model": {k: v.cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    _save_atomic(ckpt, path)


def _save_atomic(obj: dict, path: str | Path) -> None:
    """torch.save to a temporary file, then renamed: a kill at any moment leaves the old or the new file whole."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict of `path` (or of a shipped model's name, asr.models); a missing or unreadable file
    raises an error naming it."""
    from .models import model_file

    path = model_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint") from None
    except Exception as e:
        raise ValueError(f"{path}: not a readable checkpoint ({e})") from e


def load_checkpoint(path: str | Path, device="cpu") -> tuple[AcousticModel, FeatureExtractor,
                                                             Vocabulary | BPEVocabulary, dict]:
    """Rebuild model, feature extractor and vocabulary from a checkpoint file alone."""
    ckpt = read_checkpoint(path)
    model = AcousticModel(ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    extractor = FeatureExtractor(FeatureConfig(**ckpt["feature_config"]), ckpt["stats"]["mean"], ckpt["stats"]["std"])
    return model.to(device).eval(), extractor.to(device), vocabulary_from_state(ckpt["vocab"]), ckpt


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


@dataclass
class Progress:
    """Where a run stands: the next batch to train on, the updates done, the best dev score so far."""
    epoch: int = 1        # the epoch in progress (epochs count from 1)
    batch: int = 0        # the next of this rank's batches in it
    step: int = 0         # optimizer updates done
    epochs: int = 0       # the epochs planned (asr.step.EpochPlan; 0: not planned yet)
    best: dict = field(default_factory=lambda: {"wer": math.inf})  # {"epoch", "wer", "cer"} of the lowest dev WER

    def position(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "step": self.step, "epochs": self.epochs}


class TrainingState:
    """Everything a run needs to continue exactly where it stopped: the model, extractor and vocabulary
    (as in every checkpoint), the optimizer, learning-rate schedule, loss scaler, each rank's RNGs,
    the weights' moving average (with `ema_epochs`), the Progress and the training wall time. `save_last` writes
    it to last.pt, `restore` reads it back.
    """

    def __init__(self, exp: Path, config: dict, d: Dist, model: AcousticModel, extractor: FeatureExtractor,
                 vocab, optimizer, scheduler, scaler, generator: torch.Generator, average=None):
        self.exp, self.config, self.d = exp, config, d
        self.average = average       # asr.step.WeightAverage, or None: what best.pt and epoch_k.pt hold
        self.model, self.extractor, self.vocab = model, extractor, vocab
        self.optimizer, self.scheduler, self.scaler, self.generator = optimizer, scheduler, scaler, generator
        self.progress = Progress()
        self.started = time.time()   # minus the wall time of earlier processes, once restored
        self._pending_rng: dict | None = None

    @property
    def elapsed(self) -> float:
        """Training wall seconds, across every process that has resumed this run."""
        return time.time() - self.started

    @property
    def scored(self) -> AcousticModel:
        """The model dev scores and best.pt / epoch_k.pt hold: the moving average where the run keeps one."""
        return self.average.model if self.average is not None else self.model

    def save_model(self, name: str, **meta) -> None:
        """exp/`name` (best.pt, epoch_k.pt): what transcription needs, with the run's config. Rank 0 only."""
        save_checkpoint(self.exp / name, self.scored, self.extractor, self.vocab, train_config=self.config, **meta)

    def save_last(self, **meta) -> None:
        """exp/last.pt, everything needed to continue exactly. A collective call: every rank must make it."""
        rngs = gather_objects(self.d, rng_state(self.generator))
        if self.d.main:
            p = self.progress
            save_checkpoint(self.exp / "last.pt", self.model, self.extractor, self.vocab, train_config=self.config,
                            position=p.position(), best=p.best, optimizer=self.optimizer.state_dict(),
                            scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(), rng=rngs,
                            elapsed=self.elapsed, **meta, **self._average())

    def _average(self) -> dict:
        """last.pt's copy of the weights' moving average, if the run keeps one."""
        if self.average is None:
            return {}
        return {"average": {k: v.cpu() for k, v in self.average.model.state_dict().items()}}

    def restore(self) -> bool:
        """Load exp/last.pt into the live objects, if there is one; returns whether there was."""
        path = self.exp / "last.pt"
        if not path.exists():
            return False
        ckpt = read_checkpoint(path)
        self.model.load_state_dict(ckpt["model"])
        if self.average is not None:   # a run without one before starts its average from the weights
            self.average.model.load_state_dict(ckpt.get("average", ckpt["model"]))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"]:  # empty when saved without loss scaling (bf16, fp32)
            self.scaler.load_state_dict(ckpt["scaler"])
        self.progress = Progress(**ckpt["position"], best=ckpt["best"])
        self.started = time.time() - ckpt.get("elapsed", 0.0)  # absent from checkpoints written before it was saved
        rng = ckpt["rng"][self.d.rank] if self.d.rank < len(ckpt["rng"]) else None  # None: resumed on more ranks
        # The DataLoader draws its base seed from the global RNG when an epoch's iteration starts:
        # an epoch-end state dates from before that draw, a mid-epoch one from after it.
        if rng is not None and self.progress.batch == 0:
            set_rng_state(rng, self.generator)
        else:
            self._pending_rng = rng
        return True

    def epoch_started(self) -> None:
        """Call once the epoch's DataLoader iterator exists: a mid-epoch RNG state applies from here."""
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng, self.generator)
            self._pending_rng = None


def epoch_checkpoints(exp: str | Path, last: int = 0, best: int = 0) -> list[Path]:
    """The exp dir's epoch_<k>.pt files: the `last` N epochs, or the `best` N by the dev score that chose the
    run's best.pt (dev WER, or what its config.json's select_by names; train_log.jsonl)."""
    exp = Path(exp)
    kept = {int(p.stem.split("_")[1]): p for p in exp.glob("epoch_*.pt")}
    if not kept:
        raise FileNotFoundError(f"{exp}: no epoch_<k>.pt checkpoints (train with keep_epochs=N)")
    if last:
        epochs = sorted(kept)[-last:]
    else:
        run = json.loads((exp / "config.json").read_text()) if (exp / "config.json").exists() else {}
        key = "dev_" + selection_metric(run.get("select_by", "auto"), run.get("text", {}).get("word_unit", "word"))
        score = {r["epoch"]: r[key] for r in map(json.loads, (exp / "train_log.jsonl").open()) if key in r}
        epochs = sorted((e for e in kept if e in score), key=lambda e: (score[e], -e))[:best]
    n = last or best
    if len(epochs) < n:
        raise ValueError(f"{exp}: asked for {n} checkpoints, only {len(epochs)} kept ({sorted(kept)})")
    return [kept[e] for e in sorted(epochs)]


def average_checkpoints(paths: list[str | Path], out: str | Path) -> Path:
    """Write the element-wise mean of the checkpoints' model weights to `out`, with the first one's configs,
    vocabulary and statistics; all must share one model config. Integer buffers are taken from the last."""
    if not paths:
        raise ValueError("no checkpoints to average")
    first = read_checkpoint(paths[0])
    total = {k: v.double().clone() if v.is_floating_point() else v for k, v in first["model"].items()}
    for p in paths[1:]:
        ckpt = read_checkpoint(p)
        if ckpt["model_config"] != first["model_config"] or ckpt["vocab"] != first["vocab"]:
            raise ValueError(f"{p}: a different model or vocabulary than {paths[0]}; cannot average them")
        for k, v in ckpt["model"].items():
            total[k] = total[k] + v.double() if v.is_floating_point() else v
    model = {k: (v / len(paths)).to(first["model"][k].dtype) if v.is_floating_point() else v
             for k, v in total.items()}
    keep = ("model_config", "feature_config", "stats", "vocab", "train_config")
    averaged = {**{k: first[k] for k in keep if k in first}, "model": model,
                "averaged_from": [str(p) for p in paths]}
    _save_atomic(averaged, out)
    return Path(out)
