"""Runs side by side (asr compare) and how far back gradients reach (asr.gradients), on real AN4 audio."""
import dataclasses
import json

import pytest
import torch

from asr.checkpoint import load_checkpoint
from asr.cli import main as asr_main
from asr.data import write_manifest
from asr.gradients import gradient_reach
from asr.model import AcousticModel, ModelConfig
from asr.train import TrainConfig, train


@pytest.fixture(scope="module")
def waves(an4_test_utts):
    return [u.samples() for u in an4_test_utts[:8]]


def test_trained_gated_cell_keeps_gradients_that_vanish_at_initialisation(an4_model, waves):
    """The fixture GRU (trained on AN4) still sends a gradient 1 s (50 frames) back; the same
    architecture at initialisation, and a vanilla RNN of the same size, lose it geometrically."""
    model, extractor, _, _ = load_checkpoint(an4_model)
    trained = gradient_reach(model, extractor, waves, max_distance=60)
    torch.manual_seed(0)
    init = gradient_reach(AcousticModel(model.cfg), extractor, waves, max_distance=60)
    torch.manual_seed(0)
    rnn = gradient_reach(AcousticModel(dataclasses.replace(model.cfg, cell="rnn", hidden=289)), extractor, waves, 60)
    assert trained.shape == (61,) and not torch.isnan(trained).any()          # all 8 utterances are > 1.2 s
    assert trained[50] > -3 and init[50] < -6 and rnn[50] < -6, (trained[50], init[50], rnn[50])
    assert (init[10:51].diff() < 0.1).all() and init[50] < init[0] - 6      # vanishing: falls with distance
    assert model.training is False


def test_no_recurrence_means_no_reach(an4_model, waves):
    """A vanilla RNN with its recurrent weights zeroed computes each frame from that frame's input alone:
    exact zeros past k = 0. A GRU with the same weights zeroed still reaches back, through its update gate
    (h_t = (1 - z) n + z h_(t-1)): the path gating adds."""
    _, extractor, _, _ = load_checkpoint(an4_model)
    torch.manual_seed(0)
    reach = {}
    for cell in ("rnn", "gru"):
        model = AcousticModel(ModelConfig(cell=cell, conv_channels=32, hidden=32, layers=2))
        with torch.no_grad():
            for name, p in model.rnn.named_parameters():
                if name.startswith("weight_hh"):
                    p.zero_()
        reach[cell] = gradient_reach(model, extractor, waves[:2], max_distance=5)
    assert reach["rnn"][0] > -3 and (reach["rnn"][1:] == -30).all()          # log10 of the 1e-30 floor
    assert (reach["gru"] > -5).all()


def test_compare_two_cells_with_and_without_clipping(tmp_path, five_utts, an4_test_utts):
    manifest = tmp_path / "five.jsonl"
    write_manifest(manifest, five_utts)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(tmp_path / "stats.json")])
    exps = []
    for cell, hidden, clip in (("rnn", 64, 0.0), ("gru", 40, 0.5)):
        exp = tmp_path / f"{cell}_clip{clip:g}"
        train(TrainConfig(exp_dir=str(exp), train_manifest=str(manifest), dev_manifest=str(manifest),
                          stats=str(tmp_path / "stats.json"), epochs=3, batch_frames=500, clip_norm=clip, threads=1,
                          model=ModelConfig(cell=cell, conv_channels=32, hidden=hidden, layers=2)))
        log = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
        norms = log[-1]["grad_norm"]                                         # per-epoch summary of the norms
        assert 0 < norms["min"] <= norms["median"] <= norms["max"]
        assert norms["clipped"] == (0.0 if clip == 0 else pytest.approx(1.0))  # norms here are all far above 0.5
        exps.append(exp)
    test = tmp_path / "test.jsonl"
    write_manifest(test, an4_test_utts[:3])
    out = tmp_path / "cmp"
    asr_main(["compare", *map(str, exps), "--out", str(out), "--manifest", str(test), "--reach-utts", "3"])
    table = (out / "compare.md").read_text().splitlines()
    assert len(table) == 4 and "vanilla RNN (tanh)" in table[2] and "| none |" in table[2] and "| 0.5 |" in table[3]
    result = json.loads((out / "compare.json").read_text())
    rows = {r["run"]: r for r in result["runs"]}
    assert rows["gru_clip0.5"]["grad_norm"]["clipped"] == pytest.approx(1.0)
    assert rows["rnn_clip0"]["grad_norm"]["steps"] == 3 * 3                  # 3 epochs x 3 batches, from TensorBoard
    assert rows["rnn_clip0"]["epochs"] == 3 and rows["rnn_clip0"]["test"] is None
    assert set(result["gradient_reach_log10"]) == {"rnn_clip0", "gru_clip0.5", "rnn 2x64 at init", "gru 2x40 at init"}
    for name in ("grad_norms.png", "dev_wer.png", "gradient_reach.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_negative_clip_norm_is_refused():
    with pytest.raises(ValueError, match="clip_norm"):
        TrainConfig(clip_norm=-1)
