"""ONNX fp32 against int8 against the checkpoint, per recurrent cell: random 2x160 bidirectional models
(conv 160, the recipe's size; speed only, the weights mean nothing) on the fbank front end, the network
alone (`_forward`) on N AN4 test utterances one at a time, 1 thread, best of 3, all rows in one run.

    .venv/bin/python recipes/an4/local/onnx_cells.py ../shared/corpora/an4/an4 [N]
"""
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

import asr
from asr.checkpoint import save_checkpoint
from asr.corpora.an4 import read_split
from asr.export import export_onnx
from asr.features import FeatureConfig, FeatureExtractor
from asr.model import AcousticModel, ModelConfig
from asr.tokens import Vocabulary


def seconds(model, waves, repeats: int = 3) -> float:
    """Best wall time of `repeats` passes over `waves`, one forward each."""
    model._forward(waves[:3])                                   # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for w in waves:
            model._forward([w])
        best = min(best, time.perf_counter() - start)
    return best


def main(an4_dir: str, n: int = 60) -> None:
    warnings.filterwarnings("ignore")                           # the tracer's, while exporting
    torch.set_num_threads(1)
    waves = [u.samples() for u in read_split(an4_dir, "test")[:n]]
    tmp = Path(tempfile.mkdtemp())
    print(f"{len(waves)} utterances, {sum(w.shape[0] for w in waves) / 16000:.0f} s, 1 thread, one at a time")
    for cell in ("gru", "lstm", "rnn"):
        torch.manual_seed(0)
        model = AcousticModel(ModelConfig(cell=cell, hidden=160, conv_channels=160, layers=2, dropout=0.0)).eval()
        save_checkpoint(tmp / f"{cell}.pt", model, FeatureExtractor(FeatureConfig(kind="fbank")), Vocabulary())
        fp32, int8 = (export_onnx(tmp / f"{cell}.pt", tmp / f"{cell}_{q}.onnx", int8=q == "int8")
                      for q in ("fp32", "int8"))
        t = {name: seconds(asr.load_model(path), waves)
             for name, path in (("checkpoint", tmp / f"{cell}.pt"), ("fp32", fp32), ("int8", int8))}
        print(f"{cell}: checkpoint {t['checkpoint']:.2f} s, ONNX fp32 {t['fp32']:.2f} s "
              f"({fp32.stat().st_size / 1e6:.1f} MB), int8 {t['int8']:.2f} s ({int8.stat().st_size / 1e6:.1f} MB): "
              f"int8 {t['fp32'] / t['int8']:.2f}x fp32, fp32 {t['checkpoint'] / t['fp32']:.2f}x checkpoint")


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
