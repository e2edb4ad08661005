"""asr bench plan: predicted hours from measured throughput, from the recorded H200 rows (tests/test_bench.py
plans from rows `asr bench train` has just measured)."""
import json
import re
from pathlib import Path

import pytest

from asr.bench.plan import DEFAULT_THROUGHPUT, _loglog, plan_table
from asr.cli import main as asr_main
from asr.config import TrainConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "recipes" / "librispeech" / "conf"


def test_plan_for_960h_uses_the_measured_h200_rows_of_its_own_model(capsys):
    asr_main(["bench", "plan", "--config", str(CONF / "960h.yaml"), "--gpus", "1,8,64", "--train-hours", "960.9"])
    out = capsys.readouterr().out
    assert out.startswith("PREDICTED (a cost model, not a measurement): 20 epochs of 960.9 h, 5x800 BiGRU 51.5 M")
    rows_5x800 = json.loads((ROOT / "recipes/an4/results/h200_2026-11-26/bench_gru5x800.json").read_text())
    rate = _loglog(180000, [(r["max_frames"], r["pipeline"]) for r in rows_5x800])
    assert 6731 < rate < 11369                              # between the B=128 and B=256 rows it lies between
    assert f"per GPU {rate:.0f} audio-s/s, from NVIDIA H200" in out
    table = {int(m[1]): m for m in re.finditer(r"^\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+"
                                               r"([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)}
    assert sorted(table) == [1, 8, 64] and table[64][2] == "8"   # nodes
    epoch_s = 960.9 * 3600 * (1 / 0.9 + 1 + 1 / 1.1) / 3 / rate   # speed perturbation, one GPU, no all-reduce
    assert float(table[1][7]) == pytest.approx(epoch_s / 60, abs=0.02)
    assert float(table[8][7]) == pytest.approx(epoch_s / 60 / 8, rel=0.02)   # ~linear inside a node
    assert float(table[1][8]) == pytest.approx(20 * epoch_s / 3600, abs=0.01)


def test_plan_interpolates_between_measured_models_for_100h():
    cfg = load_config(TrainConfig, CONF / "100h.yaml")
    _, (one,) = plan_table(cfg, [1], 100.6, DEFAULT_THROUGHPUT)
    assert 20e6 < one["parameters"] < 23e6                     # 5x512: between the 3x320 and 5x800 measured
    cfg800 = load_config(TrainConfig, CONF / "100h.yaml", ["model.hidden=800"])
    cfg320 = load_config(TrainConfig, CONF / "100h.yaml", ["model.hidden=320", "model.layers=3"])
    slow, fast = (plan_table(c, [1], 100.6)[1][0]["per_gpu"] for c in (cfg800, cfg320))
    assert slow < one["per_gpu"] < fast
