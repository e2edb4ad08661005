"""Export for deployment: TorchScript (features + acoustic model in one file), optionally int8.

    asr export --model data/an4/exp/cpu/best.pt --out model.ts [--int8]
    asr.load_model("model.ts").transcribe("a.wav")      # no asr model code needed to run the network

The file is a TorchScript archive carrying the vocabulary and configs (extra file `asr.json`),
so it loads alone (asr.backends.torchscript reads it). `--int8` applies dynamic quantisation to
the recurrent and linear layers (weights int8, activations quantised on the fly): about 4x
smaller and faster on CPU. The exported network runs one utterance at a time, unpacked (exact
for a single input).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from .backends.checkpoint import Recognizer
from .backends.torchscript import META
from .checkpoint import load_checkpoint


def export_torchscript(checkpoint: str | Path, out: str | Path, int8: bool = False) -> Path:
    """Trace checkpoint's Recognizer (features + model) to TorchScript at `out`; returns `out`."""
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
