"""Checkpoints that carry everything needed to use them, written so that a kill never leaves half a file."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch

from .features import FeatureConfig, FeatureExtractor
from .model import AcousticModel, ModelConfig
from .text import BPEVocabulary, Vocabulary, vocabulary_from_state


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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, device="cpu") -> tuple[AcousticModel, FeatureExtractor,
                                                             Vocabulary | BPEVocabulary, dict]:
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
