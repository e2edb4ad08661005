from pathlib import Path

import pytest

from asr.config import ConfigError, load_config
from asr.model import AcousticModel
from asr.train import TrainConfig

RECIPES = Path(__file__).parent.parent / "recipes"


def test_yaml_then_overrides(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("epochs: 7\nlr: 1e-3\nmodel:\n  cell: lstm\n")
    cfg = load_config(TrainConfig, conf, ["model.hidden=64", "spec_augment=false", "lr=5e-4"])
    assert cfg.epochs == 7 and cfg.lr == 5e-4 and cfg.spec_augment is False
    assert cfg.model.cell == "lstm" and cfg.model.hidden == 64 and cfg.model.layers == TrainConfig().model.layers


def test_int_is_accepted_for_float():
    assert load_config(TrainConfig, None, ["lr=1"]).lr == 1.0


@pytest.mark.parametrize("override, message", [
    (["epochs=ten"], "epochs: expected int"),
    (["epochs=2.5"], "epochs: expected int"),
    (["model.hiden=3"], "unknown config key.*model.hiden"),
    (["nonsense=1"], "unknown config key.*nonsense"),
    (["model=3"], "model: expected a mapping"),
    (["threads"], "not key=value"),
])
def test_bad_overrides_are_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, None, override)


def test_invalid_value_rejected_by_the_dataclass():
    with pytest.raises(ValueError, match="cell must be one of"):
        load_config(TrainConfig, None, ["model.cell=transformer"])


def test_every_shipped_recipe_config_loads_and_builds_its_model():
    """A typo in a recipe's conf/*.yaml (an unknown key, a wrong type) must fail here, not an hour
    into someone's training run."""
    confs = sorted(RECIPES.glob("*/conf/*.yaml"))
    assert len(confs) >= 8, confs
    for conf in confs:
        cfg = load_config(TrainConfig, conf)
        AcousticModel(cfg.model)                  # the sizes it names make a model
        assert cfg.epochs > 0, conf


def test_every_gpu_search_run_is_a_valid_config():
    """conf/search.txt's lines are overrides on conf/gpu.yaml trained in a GPU session that may
    come once: a typo there would waste the session, so each line must load and build here."""
    conf = RECIPES / "an4" / "conf"
    runs = [line.split() for line in (conf / "search.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert len(runs) >= 4, runs
    names = [r[0] for r in runs]
    assert len(set(names)) == len(names), names   # each run trains into its own directory
    base = load_config(TrainConfig, conf / "gpu.yaml")
    for name, *overrides in runs:
        assert overrides, name
        cfg = load_config(TrainConfig, conf / "gpu.yaml", overrides)
        AcousticModel(cfg.model)
        assert cfg != base, name   # the overrides change something
