"""Shared fixtures: real AN4 / FSDD audio from ../shared/corpora and one tiny trained model."""
from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):   # tests run in parallel processes (make test): one thread each,
    os.environ.setdefault("OMP_NUM_THREADS", "1")   # read by torch at import, inherited by subprocesses

import pytest

from asr.corpora.an4 import read_split
from asr.data import write_manifest

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["ci_skips"]   # under CI=true a skip fails the run (tests/ci_skips.py)
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
def an4_fbank_model() -> Path:
    """The same recipe on `features: {kind: fbank}` (sherpa-onnx's front end), see tests/fixtures/README.md."""
    return ROOT / "tests" / "fixtures" / "an4_fbank_2x160.pt"


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


def shared_dir(tmp_path_factory) -> Path:
    """A temporary dir of this test run that every parallel worker (pytest-xdist) sees."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def overfit_model(tmp_path_factory, five_utts):
    """A tiny BiGRU trained (for real) on five AN4 utterances until it gets them right: (best.pt, best dev).
    Trained once per test run: the first worker to need it trains it, the others wait and read it."""
    import json

    from filelock import FileLock

    from asr.cli import main as asr_main
    from asr.model import ModelConfig
    from asr.train import TrainConfig, train

    exp = shared_dir(tmp_path_factory) / "overfit"
    with FileLock(str(exp) + ".lock"):
        if (exp / "best.json").exists():
            return exp / "best.pt", json.loads((exp / "best.json").read_text())
        exp.mkdir()
        manifest = exp / "five.jsonl"
        write_manifest(manifest, five_utts)
        asr_main(["stats", "--manifest", str(manifest), "--out", str(exp / "stats.json")])
        cfg = TrainConfig(
            exp_dir=str(exp), train_manifest=str(manifest), dev_manifest=str(manifest), stats=str(exp / "stats.json"),
            epochs=160, lr=4e-3, batch_frames=500, warmup=0.05, final_lr=0.1, spec_augment=False, threads=1,
            pack_sequences=True,  # exact: with batches this uneven, unpacked training would not match inference
            tensorboard=False, model=ModelConfig(conv_channels=96, hidden=96, layers=2, dropout=0.0))
        best = train(cfg)
        (exp / "best.json").write_text(json.dumps(best))
        return exp / "best.pt", best


@pytest.fixture(scope="session")
def stream_model(tmp_path_factory, five_utts) -> Path:
    """A unidirectional GRU with 2 frames of lookahead trained (for real, 300 epochs) on the five AN4 utterances
    until it transcribes them: a streaming model whose output on them means something. Trained once per run."""
    from filelock import FileLock

    from asr.cli import main as asr_main
    from asr.model import ModelConfig
    from asr.train import TrainConfig, train

    exp = shared_dir(tmp_path_factory) / "stream_model"
    with FileLock(str(exp) + ".lock"):
        if not (exp / "best.pt").exists():
            exp.mkdir()
            manifest, stats = exp / "five.jsonl", exp / "stats.json"
            write_manifest(manifest, five_utts)
            asr_main(["stats", "--manifest", str(manifest), "--out", str(stats)])
            train(TrainConfig(exp_dir=str(exp), train_manifest=str(manifest), dev_manifest=str(manifest),
                              stats=str(stats), epochs=300, lr=4e-3, batch_frames=300, final_lr=0.1,
                              spec_augment=False, threads=1, tensorboard=False,   # unpacked is exact unidirectionally
                              model=ModelConfig(conv_channels=96, hidden=128, layers=2, dropout=0.0,
                                                bidirectional=False, lookahead=2)))
        return exp / "best.pt"


@pytest.fixture(scope="session")
def vctk_six(tmp_path_factory):
    """Six short VCTK p239 sentences (real speech, 1.5-3 s), a manifest of them and its statistics."""
    from asr.cli import main as asr_main
    from asr.corpora.vctk import locate_vctk, read_vctk

    utts = [u for u in read_vctk(locate_vctk(tmp_path_factory.mktemp("dl"))) if 1.5 <= u.duration <= 3.0][:6]
    assert len(utts) == 6
    d = tmp_path_factory.mktemp("vctk")
    write_manifest(d / "six.jsonl", utts)
    asr_main(["stats", "--manifest", str(d / "six.jsonl"), "--out", str(d / "stats.json")])
    return d, utts


@pytest.fixture(scope="session")
def fa_model() -> Path:
    """recipes/commonvoice's Persian model (2x160 BiGRU on fbank, test CER 47.8), see tests/fixtures/README.md."""
    return ROOT / "tests" / "fixtures" / "fa_cv_2x160.pt"


@pytest.fixture(scope="session")
def persian_dir() -> Path:
    """Common Voice Persian as published: clips/*.mp3 and the release's TSVs (no train/dev/test split)."""
    return _corpus(CORPORA / "commonvoice_fa" / "fa")


@pytest.fixture(scope="session")
def persian_prepared(tmp_path_factory, persian_dir) -> Path:
    """`asr prepare commonvoice` of the Persian clips (speaker-disjoint train / dev / test, the alphabet learned
    from the training sentences), made once per test run for every worker."""
    from filelock import FileLock

    from asr.cli import main as asr_main

    out = shared_dir(tmp_path_factory) / "commonvoice_fa"
    with FileLock(str(out) + ".lock"):
        if not (out / "test.jsonl").exists():
            asr_main(["prepare", "commonvoice", "--corpus", str(persian_dir), "--out", str(out)])
    return out


@pytest.fixture(scope="session")
def persian_model(tmp_path_factory, persian_prepared):
    """A small BiGRU trained (for real, 80 epochs, about a minute) on ten short Persian training clips, on Kaldi
    fbank features (sherpa-onnx's front end): (exp dir, its ten utterances). Trained once per test run."""
    import json

    from filelock import FileLock

    from asr.cli import main as asr_main
    from asr.data import read_manifest

    exp = shared_dir(tmp_path_factory) / "persian"
    with FileLock(str(exp) + ".lock"):
        manifest = exp / "ten.jsonl"
        if not (exp / "done.json").exists():
            exp.mkdir(exist_ok=True)
            chosen, seen = [], set()
            for u in sorted(read_manifest(persian_prepared / "train.jsonl"), key=lambda u: (u.duration, u.id)):
                if 1.5 <= u.duration <= 3.0 and len(u.text) >= 6 and u.text not in seen:
                    chosen.append(u)
                    seen.add(u.text)
            write_manifest(manifest, chosen[:10])
            (exp / "text.json").write_text((persian_prepared / "text.json").read_text())   # prepare's alphabet
            (exp / "conf.yaml").write_text(FA_SMALL, encoding="utf-8")
            common = ["--config", str(exp / "conf.yaml")]
            asr_main(["stats", *common, "--manifest", str(manifest), "--out", str(exp / "stats.json")])
            asr_main(["train", *common, f"exp_dir={exp}", f"train_manifest={manifest}", f"dev_manifest={manifest}",
                      f"stats={exp / 'stats.json'}"])
            (exp / "done.json").write_text(json.dumps({"trained": True}))
        return exp, read_manifest(manifest)


FA_SMALL = """# tests/conftest.py's Persian model: ten clips learned by heart, as far as 80 epochs go
epochs: 80
batch_frames: 600
lr: 0.005
final_lr: 0.1
spec_augment: false
pack_sequences: true
tensorboard: false
threads: 1
features: {kind: fbank}
text: {charset: data, case: lower, language: fa}
model: {conv_channels: 96, hidden: 128, layers: 2, dropout: 0.0}
"""


@pytest.fixture
def products_engine():
    """Sets the float32 products' engine for one test (asr.native.onednn_products: True for oneDNN); after it this
    process's own choices are made again, the steps' kernel's too (asr.native.own_products)."""
    from asr import native
    yield native.onednn_products
    native._products.clear()
    native.own_products()
