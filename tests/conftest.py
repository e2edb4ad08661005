"""Shared fixtures: real AN4 / FSDD audio from ../shared/corpora and one tiny trained model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from asr.corpora.an4 import read_split
from asr.data import write_manifest

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"


def _corpus(path: Path) -> Path:
    if not path.is_dir():
        pytest.fail(f"{path}: real speech corpus missing (the suite reads ../shared/corpora beside the project)")
    return path


@pytest.fixture(scope="session")
def an4_dir() -> Path:
    return _corpus(Path(os.environ.get("AN4_DIR", CORPORA / "an4" / "an4")))


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    return _corpus(CORPORA / "fsdd" / "recordings")


@pytest.fixture(scope="session")
def an4_model() -> Path:
    """A 2x160 BiGRU trained by the AN4 recipe (test WER 12.94), see tests/fixtures/README.md."""
    return ROOT / "tests" / "fixtures" / "an4_cpu_2x160.pt"


@pytest.fixture(scope="session")
def an4_test_utts(an4_dir):
    """The 130 AN4 test utterances (real speech, 0.7-6.2 s)."""
    return read_split(an4_dir, "test")


@pytest.fixture(scope="session")
def five_utts(an4_dir):
    """Five short AN4 train utterances with distinct transcripts, for overfitting."""
    chosen, seen = [], set()
    for u in read_split(an4_dir, "train"):
        if 1.0 <= u.duration <= 2.5 and u.text not in seen and len(u.text.split()) >= 2:
            chosen.append(u)
            seen.add(u.text)
        if len(chosen) == 5:
            return chosen
    raise AssertionError("AN4 train has fewer than five short distinct utterances")


@pytest.fixture(scope="session")
def overfit_model(tmp_path_factory, five_utts):
    """A tiny BiGRU trained (for real) on five AN4 utterances until it gets them right: (best.pt, best dev)."""
    from asr.cli import main as asr_main
    from asr.model import ModelConfig
    from asr.train import TrainConfig, train

    exp = tmp_path_factory.mktemp("overfit")
    manifest = exp / "five.jsonl"
    write_manifest(manifest, five_utts)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(exp / "stats.json")])
    cfg = TrainConfig(
        exp_dir=str(exp), train_manifest=str(manifest), dev_manifest=str(manifest), stats=str(exp / "stats.json"),
        epochs=160, lr=4e-3, batch_frames=500, warmup=0.05, final_lr=0.1, spec_augment=False, threads=2,
        pack_sequences=True,  # exact: with batches this uneven, unpacked training would not match inference
        model=ModelConfig(conv_channels=96, hidden=96, layers=2, dropout=0.0))
    best = train(cfg)
    return exp / "best.pt", best
