"""Starting from a trained model (asr.finetune): the suite's AN4 model fine-tuned for real onto VCTK speech with
a larger vocabulary (rows kept and added, checked on the weights), frozen parts bit for bit, a model or feature
mismatch refused by name."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from asr.cli import main as asr_main
from asr.finetune import initialise, part_parameters
from asr.model import AcousticModel, ModelConfig
from asr.text import TextConfig
from asr.tokens import Vocabulary, vocabulary_from_state
from asr.train import TrainConfig, train

WIDER = TextConfig(punctuation="keep")          # English's 28 characters and . , ? ! ; : - " : 37


def test_initialise_keeps_the_rows_of_shared_tokens_and_adds_new_ones(an4_model):
    ckpt = torch.load(an4_model, weights_only=True)
    old = vocabulary_from_state(ckpt["vocab"]).tokens
    vocab = Vocabulary(WIDER.alphabet)
    torch.manual_seed(0)
    model = AcousticModel(replace(ModelConfig(**ckpt["model_config"]), vocab_size=len(vocab)))
    fresh_w, fresh_b = model.output.weight.detach().clone(), model.output.bias.detach().clone()
    line = initialise(model, vocab, an4_model)
    assert "29 of its 37 rows" in line and "8 new rows" in line
    for i, token in enumerate(vocab.tokens):
        if token in old:                                      # the blank, the space, ' and A-Z: the AN4 model's
            assert torch.equal(model.output.weight[i], ckpt["model"]["output.weight"][old.index(token)].float())
            assert torch.equal(model.output.bias[i], ckpt["model"]["output.bias"][old.index(token)].float())
        else:                                                 # the punctuation: as a new model starts it
            assert torch.equal(model.output.weight[i], fresh_w[i]) and torch.equal(model.output.bias[i], fresh_b[i])
    assert torch.equal(model.rnn.weight_hh_l1, ckpt["model"]["rnn.weight_hh_l1"].float())


def _fine_tune(an4_model, vctk_six, exp, **changes):
    d, _ = vctk_six
    cfg = TrainConfig(exp_dir=str(exp), train_manifest=str(d / "six.jsonl"), dev_manifest=str(d / "six.jsonl"),
                      init_from=str(an4_model), init_config="checkpoint", text=WIDER, epochs=3, lr=5e-4,
                      batch_frames=2000, keep_epochs=3, threads=1, tensorboard=False, **changes)
    train(cfg)
    return {k: torch.load(exp / k, weights_only=True) for k in ("last.pt", "epoch_1.pt", "epoch_2.pt")}


def _same(a: dict, b: dict, keys) -> bool:
    return all(torch.equal(a[k].float(), b[k].float()) for k in keys)


def test_fine_tuning_onto_vctk_speech_moves_what_it_may_and_nothing_frozen(an4_model, vctk_six, tmp_path):
    ckpt = torch.load(an4_model, weights_only=True)["model"]
    saved = _fine_tune(an4_model, vctk_six, tmp_path / "ft", freeze=("front_end", "rnn.0"))
    last = saved["last.pt"]
    frozen = [k for k in ckpt if k.startswith(("conv1.", "conv2.")) or "_l0" in k]
    moved = [k for k in ckpt if "_l1" in k]
    assert frozen and moved and len(last["vocab"]["chars"]) == 36
    assert _same(last["model"], ckpt, frozen)                       # bit for bit, after three epochs
    assert not any(torch.equal(last["model"][k].float(), ckpt[k].float()) for k in moved)
    log = [json.loads(line) for line in (tmp_path / "ft" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"]
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["model"]["hidden"] == 160 and config["init_from"] == str(an4_model)   # the checkpoint's shape


def test_freeze_for_the_first_epochs_then_train(an4_model, vctk_six, tmp_path):
    ckpt = torch.load(an4_model, weights_only=True)["model"]
    saved = _fine_tune(an4_model, vctk_six, tmp_path / "ft", freeze=("front_end",), freeze_epochs=1)
    front = [k for k in ckpt if k.startswith(("conv1.", "conv2."))]
    assert _same(saved["epoch_1.pt"]["model"], ckpt, front)
    assert not _same(saved["epoch_2.pt"]["model"], ckpt, front)
    model = AcousticModel(ModelConfig(layers=2))
    assert len(part_parameters(model, "rnn.1")) == 8                 # weights and biases, both directions
    with pytest.raises(ValueError, match=r"rnn.2: the model has 2 recurrent layers"):
        part_parameters(model, "rnn.2")
    with pytest.raises(ValueError, match="unknown part 'encoder'"):
        part_parameters(model, "encoder")


def test_a_config_that_disagrees_with_the_checkpoint_is_refused_by_name(an4_model, vctk_six, tmp_path, capsys):
    d, _ = vctk_six
    six = d / "six.jsonl"
    args = ["train", f"exp_dir={tmp_path / 'x'}", f"train_manifest={six}", f"dev_manifest={six}",
            f"init_from={an4_model}", "model.hidden=320", "model.layers=2", "features.kind=fbank"]
    with pytest.raises(SystemExit, match=r"model.hidden: the config says 320, the checkpoint 160") as e:
        asr_main(args)
    assert "features.kind: the config says 'fbank', the checkpoint 'logmel'" in str(e.value)
    assert "model.layers" not in str(e.value) and "init_config=checkpoint" in str(e.value)
    with pytest.raises(SystemExit, match="no such checkpoint"):
        asr_main(["train", f"init_from={tmp_path / 'missing.pt'}", f"exp_dir={tmp_path / 'y'}"])
