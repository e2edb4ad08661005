"""Export for deployment: TorchScript (features + acoustic model in one file), optionally int8.

    asr export --model data/an4/exp/cpu/best.pt --out model.ts [--int8]
    asr.load_model("model.ts").transcribe("a.wav")      # no asr model code needed to run the network

The file is a TorchScript archive carrying the vocabulary and configs (extra file `asr.json`),
so it loads alone. `--int8` applies dynamic quantisation to the recurrent and linear layers
(weights int8, activations quantised on the fly): about 4x smaller and faster on CPU. The
exported network runs one utterance at a time, unpacked (exact for a single input).
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .decode import DecodingOptions
from .features import FeatureConfig, FeatureExtractor
from .text import vocabulary_from_state

META = "asr.json"


def export_torchscript(checkpoint: str | Path, out: str | Path, int8: bool = False) -> Path:
    """Trace checkpoint's Recognizer (features + model) to TorchScript at `out`; returns `out`."""
    from .checkpoint import load_checkpoint
    from .transcribe import Recognizer

    model, extractor, vocab, ckpt = load_checkpoint(checkpoint)
    if int8:
        model = torch.ao.quantization.quantize_dynamic(model, {nn.GRU, nn.LSTM, nn.Linear}, dtype=torch.qint8)
    network = Recognizer(extractor, model, pack=False).eval()
    example = torch.randn(1, 2 * extractor.cfg.sample_rate) * 0.1           # (1, S): 2 s of noise
    with torch.no_grad():
        traced = torch.jit.trace(network, (example, torch.tensor([example.shape[1]])), check_trace=False)
    meta = {"vocab": vocab.state(), "feature_config": asdict(extractor.cfg), "model_config": ckpt["model_config"],
            "int8": int8, "source": str(checkpoint)}
    out = Path(out)
    torch.jit.save(traced, str(out), _extra_files={META: json.dumps(meta)})
    return out


def is_exported(path: str | Path) -> bool:
    """True for a TorchScript archive written by `export_torchscript`."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.endswith(f"/extra/{META}") for name in z.namelist())
    except (zipfile.BadZipFile, FileNotFoundError, IsADirectoryError):
        return False


def load_exported(path: str | Path, options: DecodingOptions = DecodingOptions()):
    """A Transcriber running the exported network on the CPU, one input per forward pass."""
    from .transcribe import Transcriber

    extra = {META: ""}
    network = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    meta = json.loads(extra[META])
    extractor = FeatureExtractor(FeatureConfig(**meta["feature_config"]))  # for its settings; the network holds the stats
    return Transcriber(network, extractor, vocabulary_from_state(meta["vocab"]), "cpu", options, network=network, batch=False)
