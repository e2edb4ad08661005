"""Checkpoint averaging: the mean of several checkpoints' weights, one model file (a standard CTC gain).

    asr average --exp data/an4/exp/cpu --last 5 --out data/an4/exp/cpu/avg5.pt
    asr average --exp data/an4/exp/cpu --best 5 --out ...      # the 5 epochs with the lowest dev WER
    asr average a.pt b.pt c.pt --out avg.pt

Training keeps per-epoch checkpoints with `keep_epochs=N` (exp_dir/epoch_<k>.pt, the last N).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch


def epoch_checkpoints(exp: str | Path, last: int = 0, best: int = 0) -> list[Path]:
    """The exp dir's epoch_<k>.pt files: the `last` N epochs, or the `best` N by dev WER (train_log.jsonl)."""
    exp = Path(exp)
    kept = {int(p.stem.split("_")[1]): p for p in exp.glob("epoch_*.pt")}
    if not kept:
        raise FileNotFoundError(f"{exp}: no epoch_<k>.pt checkpoints (train with keep_epochs=N)")
    if last:
        epochs = sorted(kept)[-last:]
    else:
        wer = {r["epoch"]: r["dev_wer"] for r in map(json.loads, (exp / "train_log.jsonl").open()) if "dev_wer" in r}
        epochs = sorted((e for e in kept if e in wer), key=lambda e: (wer[e], -e))[:best]
    n = last or best
    if len(epochs) < n:
        raise ValueError(f"{exp}: asked for {n} checkpoints, only {len(epochs)} kept ({sorted(kept)})")
    return [kept[e] for e in sorted(epochs)]


def average_checkpoints(paths: list[str | Path], out: str | Path) -> Path:
    """Write the element-wise mean of the checkpoints' model weights to `out`, with the first one's configs,
    vocabulary and statistics; all must share one model config. Integer buffers are taken from the last."""
    if not paths:
        raise ValueError("no checkpoints to average")
    first = torch.load(paths[0], map_location="cpu", weights_only=True)
    total = {k: v.double().clone() if v.is_floating_point() else v for k, v in first["model"].items()}
    for p in paths[1:]:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        if ckpt["model_config"] != first["model_config"] or ckpt["vocab"] != first["vocab"]:
            raise ValueError(f"{p}: a different model or vocabulary than {paths[0]}; cannot average them")
        for k, v in ckpt["model"].items():
            total[k] = total[k] + v.double() if v.is_floating_point() else v
    model = {k: (v / len(paths)).to(first["model"][k].dtype) if v.is_floating_point() else v
             for k, v in total.items()}
    keep = ("model_config", "feature_config", "stats", "vocab", "train_config")
    averaged = {**{k: first[k] for k in keep if k in first}, "model": model,
                "averaged_from": [str(p) for p in paths]}
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(averaged, tmp)
    tmp.replace(out)
    return out
