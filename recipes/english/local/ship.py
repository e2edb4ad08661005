"""Ship the English base model with the package: the recipe's best.pt with its weights in float16 (half the
bytes; loading casts them back to the model's float32), everything else as the checkpoint has it (model,
feature and training config, normalisation statistics, vocabulary, epoch, dev scores).

    .venv/bin/python recipes/english/local/ship.py [data/english/exp/cpu/best.pt] [asr/models/english_base.pt]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
LIMIT = 8 * 1000 ** 2          # bytes: the bound for a model that ships inside the package


def ship(src: Path, dst: Path) -> int:
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    ckpt["model"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, dst)
    size = dst.stat().st_size
    if size > LIMIT:
        dst.unlink()
        raise SystemExit(f"{dst}: {size} bytes, over the {LIMIT} a shipped model may take")
    return size


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "data" / "english" / "exp" / "cpu" / "best.pt"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "asr" / "models" / "english_base.pt"
    print(f"{src} -> {dst} ({ship(src, dst) / 1e6:.2f} MB, float16 weights)")
