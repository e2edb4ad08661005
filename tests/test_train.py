import json
from dataclasses import replace

import pytest
import torch

import asr
from asr.train import TrainConfig, load_checkpoint, lr_schedule


def test_lr_schedule_warms_up_then_decays():
    values = [lr_schedule(s, 100, 0.1, 0.05) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[-1] == pytest.approx(0.05, abs=0.01)


def test_tiny_model_overfits_five_utterances(overfit_model, five_utts):
    path, best = overfit_model
    assert best["wer"] == 0.0
    model = asr.load_model(path)
    assert [r.text for r in model.transcribe([u.audio for u in five_utts])] == [u.text for u in five_utts]


def test_checkpoint_carries_everything(overfit_model):
    path, _ = overfit_model
    model, extractor, vocab, ckpt = load_checkpoint(path)
    assert ckpt["model_config"]["hidden"] == 96 and ckpt["feature_config"]["kind"] == "logmel"
    assert len(vocab) == model.cfg.vocab_size == 29
    assert extractor.mean.shape == (80,) and not torch.all(extractor.mean == 0)
    assert TrainConfig(**{k: v for k, v in ckpt["train_config"].items() if not isinstance(v, dict)})
    log = [json.loads(l) for l in (path.parent / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] / 10
    assert (path.parent / "last.pt").exists()


def test_not_a_checkpoint_is_named(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.pt: not a readable checkpoint"):
        asr.load_model(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        asr.load_model(tmp_path / "missing.pt")


def test_stats_for_other_features_are_refused(overfit_model, tmp_path):
    from asr.features import FeatureConfig
    from asr.train import train
    path, _ = overfit_model
    exp = path.parent
    cfg = TrainConfig(exp_dir=str(tmp_path), train_manifest=str(exp / "five.jsonl"),
                      dev_manifest=str(exp / "five.jsonl"), stats=str(exp / "stats.json"), epochs=1)
    with pytest.raises(ValueError, match="run the stats stage again"):
        train(replace(cfg, features=FeatureConfig(kind="mfcc")))
