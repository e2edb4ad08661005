"""The experiment config: `TrainConfig` is the schema (with the feature, model, text and SpecAugment
sections nested in it, each defined beside the code it configures), a recipe's YAML lists what
differs, and `key=value` overrides change single fields.

    cfg = load_config(TrainConfig, "recipes/an4/conf/cpu.yaml", ["model.hidden=320", "epochs=10"])

Nested dataclass fields are addressed with dots (`model.hidden=320`). Values are parsed as YAML
scalars and checked against the field's type; unknown keys are errors.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .features import FeatureConfig, SpecAugmentConfig
from .model import ModelConfig
from .text import TextConfig

T = TypeVar("T")


def selection_metric(select_by: str, word_unit: str) -> str:
    """The dev score that picks a run's best epoch: `select_by` (wer | cer), where `auto` is WER, or CER where
    characters are the words (TextConfig.word_unit "char")."""
    if select_by != "auto":
        return select_by
    return "cer" if word_unit == "char" else "wer"


@dataclass(frozen=True)
class TrainConfig:
    exp_dir: str = "data/an4/exp/default"
    train_manifest: str = "data/an4/train.jsonl"
    # WebDataset shards to train on instead (asr shard writes them): their index.json, a brace / glob pattern
    # (shard-{000000..000127}.tar) or a list, local or any fsspec URL (s3://, gs://, http://); each rank reads its own
    train_shards: str | tuple[str, ...] = ""
    shuffle_buffer: int = 2000        # with train_shards: utterances held to shuffle the stream
    batch_pool: int = 500             # ... and taken from it at a time to group by length into batch_frames batches
    dev_manifest: str = "data/an4/dev.jsonl"
    stats: str = "data/an4/exp/default/stats.json"  # written by the stats stage (asr stats)
    epochs: int = 30                  # with time_budget: the most epochs
    time_budget: float = 0            # training seconds (dev passes included): as many epochs as fit; 0: none
    budget_probe: int = 2             # epochs timed before the budget first sets the number of epochs
    batch_frames: int = 16000         # padded feature frames (features.hop_length each) per batch, per process
    max_batch_size: int = 0           # also cap utterances per batch (0: no cap)
    sortagrad: int = 0                # the first N epochs go shortest batches first
    lr: float = 2e-3                  # peak learning rate
    warmup: float = 0.05              # fraction of all steps spent warming up linearly
    final_lr: float = 0.02            # cosine decay ends at this fraction of lr
    weight_decay: float = 0.01
    clip_norm: float = 5.0            # clipping by global norm; 0: none (the norm is still measured and logged)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    spec_augment: bool = True
    speed_perturb: tuple[float, ...] = ()  # e.g. [0.9, 1.0, 1.1]: each batch plays at one of these speeds
    noise_snr: tuple[float, ...] = ()  # e.g. [10, 30]: white noise at an SNR (dB) drawn per utterance in this range
    feature_cache_mb: int = 2048      # CPU training: each utterance's features at each speed kept from its first
                                      # computation for the epochs after, up to this many MiB (0: none; not with
                                      # noise_snr, whose noise is new each time)
    pack_sequences: bool = False      # exact training (inference always packs, asr.model): free through asr.rnn on
                                      # CPU, slower through torch.nn (GPU, or a module asr.rnn does not run)
    augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    text: TextConfig = field(default_factory=TextConfig)  # transcript normalisation (prepare and score use it too)
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
    select_by: str = "auto"           # what chooses best.pt: wer | cer | auto (cer where characters are the words)
    ema_epochs: float = 0.0           # dev scores, and best.pt / epoch_k.pt hold, a moving average of the weights
                                      # over about this many epochs' updates (asr.step.WeightAverage; 0: the
                                      # weights as trained)
    resume: bool = False              # continue from exp_dir/last.pt, mid-epoch if it was saved there
    init_from: str = ""               # start from this checkpoint's weights (asr.finetune), not from zero
    init_config: str = "check"        # ... check: the config's model and features must be the checkpoint's;
    #                                   checkpoint: take them from it (dropout stays the config's)
    freeze: tuple[str, ...] = ()      # parts whose weights stay put: front_end, rnn, rnn.<k>, lookahead, output
    freeze_epochs: int = 0            # ... for the first N epochs (0: the whole run)
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
        if self.feature_cache_mb < 0:
            raise ValueError(f"feature_cache_mb must be >= 0 (0: no cache), not {self.feature_cache_mb}")
        if self.time_budget < 0 or self.budget_probe < 1:
            raise ValueError(f"time_budget must be >= 0 and budget_probe >= 1, not {self.time_budget}, "
                             f"{self.budget_probe}")
        if self.clip_norm < 0:
            raise ValueError(f"clip_norm must be >= 0 (0: no clipping), not {self.clip_norm}")
        if self.shuffle_buffer < 1 or self.batch_pool < 1:
            raise ValueError(f"shuffle_buffer and batch_pool must be >= 1, not {self.shuffle_buffer}, "
                             f"{self.batch_pool}")
        if self.tokens not in ("chars", "bpe"):
            raise ValueError(f"tokens must be 'chars' or 'bpe', not {self.tokens!r}")
        if self.select_by not in ("auto", "wer", "cer"):
            raise ValueError(f"select_by must be auto, wer or cer, not {self.select_by!r}")
        if self.ema_epochs < 0:
            raise ValueError(f"ema_epochs must be >= 0 (0: no moving average), not {self.ema_epochs}")


class ConfigError(ValueError):
    pass


def _check(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _check(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: {value!r} is not a {tp}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        elem = typing.get_args(tp)[0]
        return tuple(_check(v, elem, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _looks_numeric(value):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if tp in (int, float, str, bool):
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict, type-checking every value."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - fields
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in sorted(unknown))}"
                          f" (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a mapping, got {value!r}")
            kwargs[name] = from_dict(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check(value, tp, prefix + name)
    return cls(**kwargs)


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: list[str]) -> dict:
    """['model.hidden=320', 'lr=1e-3'] -> {'model': {'hidden': 320}, 'lr': 0.001}."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as e:
            reason = str(e).splitlines()[0]
            raise ConfigError(f"override {item!r}: the value is not YAML ({reason})") from None
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} was given a value, not keys, by an earlier override")
        node[leaf] = value
    return out


def _looks_numeric(raw: str) -> bool:
    try:
        float(raw)
        return True
    except ValueError:
        return False


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Defaults of `cls`, then the YAML file at `path`, then `overrides`."""
    data: dict = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not YAML ({' '.join(str(e).split())})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys")
        data = loaded
    data = merge(data, parse_overrides(list(overrides)))
    return from_dict(cls, data)



def text_config(config: str | Path | None = None, manifest: str | Path | None = None,
                overrides: list[str] = ()) -> TextConfig:
    """How transcripts are normalised: the `text` section of the training YAML `config` (and `overrides`), with
    the alphabet prepare learned for it where it recorded one beside `manifest`; else the one it recorded
    (text.json); else the default."""
    from .data import read_text_config

    recorded = read_text_config(manifest) if manifest else None
    if config or overrides:
        text = load_config(TrainConfig, config, overrides).text
        return recorded if recorded is not None and text.same_normalisation(recorded) else text
    return recorded or TextConfig()


def section_yaml(name: str, options, skip: tuple[str, ...] = ()) -> list[str]:
    """The lines of a YAML section `name:` listing the fields of the dataclass `options` that differ from its
    defaults (a recipe's YAML lists only what differs), `skip` left out; none when nothing differs. Values are
    written as JSON (which YAML reads), so text of any script stays itself."""
    import json

    default = type(options)()
    lines = [f"  {f.name}: {json.dumps(getattr(options, f.name), ensure_ascii=False)}"
             for f in dataclasses.fields(options)
             if f.name not in skip and getattr(options, f.name) != getattr(default, f.name)]
    return [f"{name}:", *lines] if lines else []
