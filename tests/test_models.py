"""Models shipped with the package, by name (asr.models): the English base model loads from its name alone,
carries its own configuration, and transcribes English speakers it never heard."""
import pytest

import asr
from asr.checkpoint import read_checkpoint
from asr.models import MODELS, model_file
from asr.score import score


def test_every_named_model_ships_under_8_mb_with_its_config():
    for name in MODELS:
        path = model_file(name)
        assert path.exists() and path.stat().st_size <= 8 * 1000 ** 2, path
        ckpt = read_checkpoint(name)
        assert {"model_config", "feature_config", "stats", "vocab", "model", "dev_wer", "dev_cer"} <= set(ckpt)
    assert model_file("data/x.pt").name == "x.pt"                       # anything else is a path
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        read_checkpoint("no-such-model.pt")


def test_english_base_transcribes_held_out_an4_speakers(an4_test_utts):
    """AN4 test's speakers were held out of the base's training: its greedy CER on them is that of a model
    that hears English (MODEL_CARD.md gives every held-out set's figures)."""
    model = asr.load_model("english-base")
    utts = an4_test_utts[:40]
    hyps = [r.text for r in model.transcribe([u.audio for u in utts])]
    result = score([u.text for u in utts], hyps)
    assert result.cer.rate < 30, result.summary()        # 16.76 on all 130 (2026-12-05)
