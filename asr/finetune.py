"""Starting from a trained model instead of from zero: `init_from: PATH` in TrainConfig (`INIT=PATH` for a
recipe), and control over what moves.

    asr train --config C init_from=english-base.pt lr=1e-3 freeze=[front_end] freeze_epochs=2

- Weights only: a fresh optimizer and schedule (`resume=true` is for continuing the same run).
- The model's shape and the features are the checkpoint's. With `init_config: check` (the default) a config
  that says otherwise is refused, naming each field that differs; with `init_config: checkpoint` (what a
  recipe's INIT= passes) they are taken from the checkpoint and the config's model section contributes only
  what does not change a weight's shape (dropout). The normalisation statistics are the checkpoint's: its
  weights were trained on features normalised by them.
- The vocabulary is the run's own (another alphabet, another language, characters -> BPE): the output rows of
  tokens both vocabularies hold are kept, the others start as a new model's; the run says how many of each.
- `freeze`: named parts (PARTS) keep their weights bit for bit, for the whole run or, with `freeze_epochs: N`,
  for the first N epochs.
"""
from __future__ import annotations

import re
from dataclasses import fields, replace

import torch

from .checkpoint import read_checkpoint
from .features import FeatureConfig
from .model import AcousticModel, ModelConfig

INIT_CONFIGS = ("check", "checkpoint")
# ModelConfig fields a fine-tuning run may change: they shape no weight (n_features and vocab_size follow the
# features and the vocabulary)
COMPATIBLE = ("dropout",)
PARTS = "front_end, rnn, rnn.<k> (recurrent layer k, from 0), lookahead, output"


def start_config(cfg):
    """A TrainConfig with init_from, its model and features the checkpoint's (see the module doc); any other
    `cfg` as it is. A config that disagrees with the checkpoint under `init_config: check` raises ValueError
    naming every field."""
    if not cfg.init_from:
        return cfg
    if cfg.init_config not in INIT_CONFIGS:
        raise ValueError(f"init_config must be one of {', '.join(INIT_CONFIGS)}, not {cfg.init_config!r}")
    ckpt = read_checkpoint(cfg.init_from)
    model, features = ModelConfig(**ckpt["model_config"]), FeatureConfig(**ckpt["feature_config"])
    if cfg.init_config == "check":
        differs = [f"model.{f.name}: the config says {getattr(cfg.model, f.name)!r}, the checkpoint "
                   f"{getattr(model, f.name)!r}" for f in fields(ModelConfig)
                   if f.name not in (*COMPATIBLE, "n_features", "vocab_size")
                   and getattr(cfg.model, f.name) != getattr(model, f.name)]
        differs += [f"features.{f.name}: the config says {getattr(cfg.features, f.name)!r}, the checkpoint "
                    f"{getattr(features, f.name)!r}" for f in fields(FeatureConfig)
                    if getattr(cfg.features, f.name) != getattr(features, f.name)]
        if differs:
            raise ValueError(f"init_from={cfg.init_from}: the config does not match the checkpoint: "
                             f"{'; '.join(differs)} (set those, or init_config=checkpoint to take the checkpoint's)")
    return replace(cfg, model=replace(model, **{k: getattr(cfg.model, k) for k in COMPATIBLE}), features=features)


def checkpoint_stats(path) -> tuple[FeatureConfig, torch.Tensor, torch.Tensor]:
    """The feature config and normalisation statistics a checkpoint's weights were trained with."""
    ckpt = read_checkpoint(path)
    return FeatureConfig(**ckpt["feature_config"]), ckpt["stats"]["mean"], ckpt["stats"]["std"]


def initialise(model: AcousticModel, vocab, path) -> str:
    """Load the checkpoint at `path` into `model` (built for `vocab`, the run's vocabulary): every weight but the
    output layer's as it is; of the output layer, the rows of the tokens both vocabularies hold (the blank among
    them), the others left as initialised. Returns a line saying what was kept."""
    from .tokens import vocabulary_from_state

    ckpt = read_checkpoint(path)
    old = vocabulary_from_state(ckpt["vocab"]).tokens
    weights = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}   # fp16 fixtures too
    rows = {t: i for i, t in enumerate(old)}
    new_w, new_b = model.output.weight.detach().clone(), model.output.bias.detach().clone()   # (V, H), (V,)
    if weights["output.weight"].shape[1] != new_w.shape[1]:
        raise ValueError(f"{path}: its output layer takes {weights['output.weight'].shape[1]} inputs, this model's "
                         f"{new_w.shape[1]}")
    kept = [(i, rows[t]) for i, t in enumerate(vocab.tokens) if t in rows]
    for i, j in kept:
        new_w[i], new_b[i] = weights["output.weight"][j], weights["output.bias"][j]
    weights["output.weight"], weights["output.bias"] = new_w, new_b
    model.load_state_dict(weights)
    return (f"initialised from {path}: every weight but the output layer's, and {len(kept)} of its {len(vocab.tokens)} "
            f"rows (the tokens both vocabularies hold); {len(vocab.tokens) - len(kept)} new rows, "
            f"{len(old) - len(kept)} of the checkpoint's tokens left behind")


def part_parameters(model: AcousticModel, part: str) -> list[torch.nn.Parameter]:
    """The parameters of a named part of the model (PARTS); ValueError naming the parts for another name."""
    layer = re.fullmatch(r"rnn\.(\d+)", part)
    if layer and int(layer.group(1)) >= model.cfg.layers:
        raise ValueError(f"freeze: {part}: the model has {model.cfg.layers} recurrent layers (rnn.0 .. "
                         f"rnn.{model.cfg.layers - 1})")
    prefixes = {"front_end": ("conv1.", "conv1f.", "conv2."), "rnn": ("rnn.",), "lookahead": ("lookahead.",),
                "output": ("output.",)}
    if layer:
        pattern = re.compile(rf"rnn\.(weight|bias)_(ih|hh)_l{layer.group(1)}(_reverse)?$")
        return [p for name, p in model.named_parameters() if pattern.match(name)]
    if part not in prefixes:
        raise ValueError(f"freeze: unknown part {part!r} (the parts: {PARTS})")
    return [p for name, p in model.named_parameters() if name.startswith(prefixes[part])]


class Freezer:
    """Keeps cfg.freeze's parts from moving: for the whole run, or the first cfg.freeze_epochs epochs."""

    def __init__(self, model: AcousticModel, cfg, distributed: bool = False):
        self.params = [p for part in cfg.freeze for p in part_parameters(model, part)]
        self.epochs = cfg.freeze_epochs
        if self.params and self.epochs and distributed:
            raise ValueError("freeze_epochs needs one process: DistributedDataParallel fixes at its start which "
                             "weights it synchronises (freeze for the whole run instead)")
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        """Before `epoch` (from 1): the frozen parts take no gradient while they are frozen."""
        frozen = not self.epochs or epoch <= self.epochs
        for p in self.params:
            p.requires_grad_(not frozen)
