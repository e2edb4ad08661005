import json
from dataclasses import replace

import pytest
import torch

import asr
from asr.checkpoint import load_checkpoint
from asr.train import TrainConfig, lr_schedule


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
    log = [json.loads(line) for line in (path.parent / "train_log.jsonl").read_text().splitlines()]
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


def test_non_finite_steps_are_skipped_counted_and_stop_the_run_with_a_reason(five_utts, tmp_path):
    """A learning rate of 1e30 blows the weights up after one step: every later loss is non-finite. Those
    steps are skipped (the weights stay finite), counted, and after max_bad_steps the run stops, saying why."""
    from asr.cli import main as asr_main
    from asr.data import write_manifest
    manifest, stats = tmp_path / "five.jsonl", tmp_path / "stats.json"
    write_manifest(manifest, five_utts)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(stats)])
    with pytest.raises(SystemExit) as exit_:
        asr_main(["train", f"exp_dir={tmp_path / 'exp'}", f"train_manifest={manifest}", f"dev_manifest={manifest}",
                  f"stats={stats}", "epochs=20", "lr=1e30", "warmup=0", "max_bad_steps=5", "batch_frames=300",
                  "threads=1", "model.hidden=32", "model.conv_channels=32", "model.layers=1"])
    message = str(exit_.value.code)
    assert "5 steps in a row had a non-finite loss or gradient (5 skipped in all)" in message
    assert "Lower lr (now 1e+30)" in message
    last = torch.load(tmp_path / "exp" / "last.pt", weights_only=True)
    assert all(torch.isfinite(w).all() for w in last["model"].values())   # skipped steps never reached the weights
    assert last["position"]["step"] >= 1


OOM_RUN = r'''
"""Real allocation failures: the address space capped (RLIMIT_AS) until a whole AN4 batch no longer fits
but its halves do; then one long utterance with no headroom at all."""
import json, resource, sys
from dataclasses import replace
import torch
from asr.corpora.an4 import read_split
from asr.data import AudioDataset, collate
from asr.features import FeatureExtractor
from asr.model import AcousticModel, ModelConfig
from asr.tokens import Vocabulary
from asr.guards import out_of_memory
from asr.train import Stepper, TrainConfig

torch.set_num_threads(1)
torch.manual_seed(0)
cfg = TrainConfig(spec_augment=False, model=ModelConfig(conv_channels=64, hidden=256, layers=3))
utts = sorted(read_split(sys.argv[1], "test"), key=lambda u: -u.duration)[:16]
batch = collate([AudioDataset(utts, Vocabulary())[i] for i in range(16)])
model = AcousticModel(cfg.model)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
step = Stepper(model, FeatureExtractor(cfg.features), optimizer, scheduler, cfg, torch.device("cpu"),
               torch.Generator().manual_seed(0))
step(batch)                                   # optimizer state, allocator pools: all there before measuring
soft, hard = resource.getrlimit(resource.RLIMIT_AS)

def vm_bytes():
    return int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024

def fits(parts, extra):
    """Does one update on `parts` fit in `extra` more bytes of address space?"""
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + extra, hard))
    try:
        step._update(parts)
        return True
    except RuntimeError as e:
        if not out_of_memory(e):
            raise
        return False
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        step._free()

def least(parts):
    lo, hi = 0, 4 << 30                          # bytes: the smallest headroom the update fits in, to 16 MiB
    while hi - lo > (16 << 20):
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(parts, mid) else (mid, hi)
    return hi

whole, half = least([batch]), max(least([h]) for h in batch.halves())
out = {"whole_mib": whole >> 20, "half_mib": half >> 20}
for k in range(12, 0, -1):                     # less and less headroom, until the whole fails and halves do not
    before = (step.oom_split, step.oom_skipped)
    resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + whole * k // 12, hard))
    loss = step(batch)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    if step.oom_split > before[0]:
        break
out["split"] = {"split": step.oom_split, "skipped": step.oom_skipped, "loss": loss.item()}
# one utterance (the 16 joined, longer than any batch so far) with 4 MiB of headroom: nothing to halve
items = [AudioDataset(utts, Vocabulary())[i] for i in range(16)]
joined = (torch.cat([w for w, _, _ in items]), torch.cat([t for _, t, _ in items]),
          replace(utts[0], duration=sum(u.duration for u in utts)))
joined = collate([joined])
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + (4 << 20), hard))   # room for error messages only
loss = step(joined)
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
out["skip"] = {"split": step.oom_split, "skipped": step.oom_skipped, "loss": loss.item()}
print(json.dumps(out))
'''


@pytest.mark.slow
def test_a_batch_out_of_memory_is_trained_in_halves_or_skipped(an4_dir, tmp_path):
    import os
    import subprocess
    import sys
    script = tmp_path / "oom.py"
    script.write_text(OOM_RUN)
    # large blocks mapped and unmapped as they come and go: the address space then follows live memory
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    run = subprocess.run([sys.executable, str(script), str(an4_dir)], capture_output=True, text=True, timeout=600,
                         env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["half_mib"] < 0.8 * out["whole_mib"], out                 # halving the batch does save memory
    assert out["split"]["split"] == 1 and out["split"]["loss"] > 0, out   # one batch trained as two halves
    assert out["skip"]["skipped"] == out["split"]["skipped"] + 1 and out["skip"]["loss"] == 0, out
    assert "trained it as two halves" in run.stderr and "even halved: skipped; lower batch_frames" in run.stderr


def test_averaging_the_last_and_best_epochs(five_utts, tmp_path, capsys):
    from asr.cli import main as asr_main
    from asr.data import write_manifest
    manifest, stats, exp = tmp_path / "five.jsonl", tmp_path / "stats.json", tmp_path / "exp"
    write_manifest(manifest, five_utts)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(stats)])
    asr_main(["train", f"exp_dir={exp}", f"train_manifest={manifest}", f"dev_manifest={manifest}", f"stats={stats}",
              "epochs=6", "keep_epochs=3", "batch_frames=500", "threads=1", "noise_snr=[10, 30]", "model.hidden=32",
              "model.conv_channels=32", "model.layers=1"])
    assert sorted(p.name for p in exp.glob("epoch_*.pt")) == ["epoch_4.pt", "epoch_5.pt", "epoch_6.pt"]
    asr_main(["average", "--exp", str(exp), "--last", "3", "--out", str(tmp_path / "avg.pt")])
    weights = [torch.load(exp / f"epoch_{k}.pt", weights_only=True)["model"] for k in (4, 5, 6)]
    avg = torch.load(tmp_path / "avg.pt", weights_only=True)
    for name, w in avg["model"].items():
        if w.is_floating_point():
            torch.testing.assert_close(w, sum(x[name] for x in weights) / 3, msg=name)
    assert isinstance(asr.load_model(tmp_path / "avg.pt").transcribe(five_utts[0].audio).text, str)
    log = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    wer = {r["epoch"]: r["dev_wer"] for r in log if r["epoch"] >= 4}
    asr_main(["average", "--exp", str(exp), "--best", "2", "--out", str(tmp_path / "best2.pt")])
    chosen = sorted(wer, key=lambda e: (wer[e], -e))[:2]
    assert torch.load(tmp_path / "best2.pt", weights_only=True)["averaged_from"] == \
        [str(exp / f"epoch_{e}.pt") for e in sorted(chosen)]
    with pytest.raises(SystemExit, match="only 3 kept"):
        asr_main(["average", "--exp", str(exp), "--last", "5", "--out", str(tmp_path / "x.pt")])


def test_epoch_plan_fits_the_budget_and_follows_a_slowdown():
    """Epochs of 10 s in a 1000 s budget: 100 epochs once two are timed; one slow epoch spends its seconds
    but does not change the pace; epochs of 30 s from then on do, within a few epochs."""
    from asr.checkpoint import Progress
    from asr.step import EpochPlan

    progress = Progress()
    plan = EpochPlan(TrainConfig(epochs=500, time_budget=1000, budget_probe=2, warmup=0.1, final_lr=0.05), 4,
                     progress)
    assert plan.epochs == 500 and progress.epochs == 500                     # not timed yet: the cap
    done = lambda seconds, elapsed: (setattr(progress, "epoch", progress.epoch + 1),
                                     plan.epoch_done(seconds, elapsed))[1]
    assert done(10.0, 10.0) is None and plan.epochs == 500                    # one epoch timed: too few to plan
    assert "-> 100 epochs" in done(10.0, 20.0) and progress.epochs == 100
    assert plan.multiplier(100 * 4 - 1) == pytest.approx(0.05, abs=0.01)     # the decay ends with the plan
    assert "-> 91 epochs" in done(100.0, 120.0)       # a 100 s burst: its 90 s lost, the pace still 10 s
    assert "-> 46 epochs" in done(30.0, 150.0)        # median of 10, 10, 100, 30: 20 s an epoch
    assert "-> 32 epochs" in done(30.0, 180.0)        # three slow epochs of five: 30 s, 820 s left
    assert done(30.0, 210.0) is None and plan.epochs == 32
    assert done(30.0, 2000.0) is not None and plan.epochs == 7                # over budget: stop after this one
    unbudgeted = EpochPlan(TrainConfig(epochs=7), 4, Progress())
    assert unbudgeted.epoch_done(1.0, 1.0) is None and unbudgeted.epoch_done(1.0, 2.0) is None
    assert unbudgeted.epochs == 7
    resumed = Progress(epoch=5, epochs=16)                    # a run planned for 16, resumed with epochs=11
    assert EpochPlan(TrainConfig(epochs=11), 4, resumed).epochs == 11 and resumed.epochs == 11
    budgeted = Progress(epoch=5, epochs=16)                   # with a budget the plan stays until timed again
    assert EpochPlan(TrainConfig(epochs=500, time_budget=1000), 4, budgeted).epochs == 16


def test_a_time_budget_sets_the_epochs_and_resume_keeps_the_plan(five_utts, tmp_path):
    """A real run with a 4 s budget and a cap of 10000 epochs stops near the budget, its lr decayed to the end."""
    from asr.cli import main as asr_main
    from asr.data import write_manifest
    manifest, stats, exp = tmp_path / "five.jsonl", tmp_path / "stats.json", tmp_path / "exp"
    write_manifest(manifest, five_utts)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(stats)])
    run = ["train", f"exp_dir={exp}", f"train_manifest={manifest}", f"dev_manifest={manifest}", f"stats={stats}",
           "epochs=10000", "time_budget=4", "lr=1e-3", "final_lr=0.02", "batch_frames=500", "threads=1",
           "model.hidden=32", "model.conv_channels=32", "model.layers=1", "tensorboard=false"]
    asr_main(run)
    log = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    # the plan as it ended (last.pt's): a log line carries the plan before its own epoch's replan, so the last
    # line may still say one epoch more when that replan, the budget nearly spent, ended the run one early
    planned = torch.load(exp / "last.pt", weights_only=True)["position"]["epochs"]
    times = [(r["epoch"], r["epochs"], round(r["elapsed"], 2)) for r in log]
    assert 2 < planned == len(log) < 10000 and log[0]["epochs"] == 10000, times  # planned once two were timed
    assert log[-1]["epochs"] in (planned, planned + 1), times
    durations = [b["elapsed"] - a["elapsed"] for a, b in zip(log, log[1:])]
    assert log[-1]["elapsed"] <= 4 + 2 * max(durations) + 0.5, times         # the budget, give or take an epoch
    assert log[-1]["lr"] < 0.3 * 1e-3, (log[-1], times)    # decayed with the plan (to 2% unless a late replan cut it)
    asr_main([*run, "resume=true"])                                           # done: the plan holds, nothing more
    assert len((exp / "train_log.jsonl").read_text().splitlines()) == planned


@pytest.mark.parametrize("select_by", ["wer", "cer"])
def test_best_checkpoint_is_the_epoch_the_chosen_dev_score_ranks_first(five_utts, tmp_path, select_by):
    from asr.cli import main as asr_main
    from asr.data import write_manifest
    manifest, stats, exp = tmp_path / "five.jsonl", tmp_path / "stats.json", tmp_path / "exp"
    write_manifest(manifest, five_utts)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(stats)])
    asr_main(["train", f"exp_dir={exp}", f"train_manifest={manifest}", f"dev_manifest={manifest}", f"stats={stats}",
              "epochs=8", "batch_frames=500", "threads=1", f"select_by={select_by}", "model.hidden=32",
              "model.conv_channels=32", "model.layers=1"])
    log = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    score = [r[f"dev_{select_by}"] for r in log]
    assert len(set(score)) > 1                                   # the epochs differ, so the choice means something
    assert torch.load(exp / "best.pt", weights_only=True)["epoch"] == 1 + score.index(min(score))
    with pytest.raises(ValueError, match="select_by must be auto, wer or cer, not 'loss'"):
        TrainConfig(select_by="loss")


def test_averaging_the_best_epochs_ranks_them_by_the_runs_select_by(tmp_path):
    """`asr average --best N` takes the epochs the run's own selection ranks first: its config.json's select_by
    (or CER where characters are the words), not always dev WER."""
    from asr.checkpoint import epoch_checkpoints
    exp = tmp_path / "exp"
    exp.mkdir()
    scores = {1: (90.0, 40.0), 2: (80.0, 45.0), 3: (85.0, 30.0), 4: (70.0, 50.0)}    # epoch: (dev WER, dev CER)
    (exp / "train_log.jsonl").write_text("".join(json.dumps({"epoch": e, "dev_wer": w, "dev_cer": c}) + "\n"
                                                 for e, (w, c) in scores.items()))
    for e in scores:
        (exp / f"epoch_{e}.pt").touch()
    picked = lambda: [p.name for p in epoch_checkpoints(exp, best=2)]
    assert picked() == ["epoch_2.pt", "epoch_4.pt"]                               # no config.json: dev WER
    for config, expected in (({"select_by": "cer"}, ["epoch_1.pt", "epoch_3.pt"]),
                             ({"select_by": "auto", "text": {"word_unit": "char"}}, ["epoch_1.pt", "epoch_3.pt"]),
                             ({"select_by": "wer", "text": {"word_unit": "char"}}, ["epoch_2.pt", "epoch_4.pt"])):
        (exp / "config.json").write_text(json.dumps(config))
        assert picked() == expected, config


def test_kept_features_train_the_same_weights_as_features_computed_every_epoch(an4_test_utts):
    """Features kept from their first computation (FeatureCache) against computed anew each epoch, with speed
    perturbation and SpecAugment, on real AN4 batches: the same weights after four epochs, bit for bit, also
    when the cache's limit keeps only some utterances."""
    from asr.data import AudioDataset, collate, length_batches
    from asr.features import FeatureExtractor
    from asr.model import AcousticModel, ModelConfig
    from asr.step import Stepper
    from asr.tokens import Vocabulary

    utts = an4_test_utts[:24]
    dataset = AudioDataset(utts, Vocabulary())
    batches = [collate([dataset[i] for i in b]) for b in length_batches([u.duration for u in utts], 600, 100)]

    def train(cache_mb: float):
        torch.manual_seed(0)
        cfg = TrainConfig(speed_perturb=(0.9, 1.1), model=ModelConfig(hidden=32, conv_channels=32, layers=1))
        model = AcousticModel(cfg.model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        step = Stepper(model, FeatureExtractor(cfg.features), optimizer, scheduler, cfg, torch.device("cpu"),
                       torch.Generator().manual_seed(0))
        step.cache = None if cache_mb is None else asr.step.FeatureCache(int(cache_mb * 2 ** 20))
        for _ in range(4):
            for batch in batches:
                step(batch)
        return model.state_dict(), step.cache

    computed, _ = train(None)
    for limit_mb in (64, 0.1):           # room for every utterance at both speeds; for a few of them
        kept, cache = train(limit_mb)
        assert cache.hits > 0 and 0 < cache.bytes <= limit_mb * 2 ** 20
        assert (len(cache.kept) > len(utts)) == (limit_mb == 64)   # (a batch may not draw both speeds)
        for name, weight in computed.items():
            assert torch.equal(kept[name], weight), name


def test_the_weights_moving_average_follows_each_update_and_its_model_runs_what_it_holds(five_utts):
    """WeightAverage after every update is the recurrence it names (decay 0.9 here, less over the first steps),
    on every tensor; and its model, run for inference between updates (asr.rnn keeps inference weights on the
    module), computes with the weights it holds now, as a fresh model loaded with them does."""
    from asr.data import AudioDataset, collate
    from asr.features import FeatureConfig, FeatureExtractor
    from asr.model import AcousticModel, ModelConfig
    from asr.step import WeightAverage
    from asr.tokens import Vocabulary
    torch.manual_seed(0)
    vocab = Vocabulary()
    batch = collate([AudioDataset(five_utts[:2], vocab)[i] for i in range(2)])
    feats, lengths = FeatureExtractor(FeatureConfig())(batch.waves, batch.lengths)
    model = AcousticModel(ModelConfig(hidden=32, conv_channels=32, layers=2, vocab_size=len(vocab)))
    average = WeightAverage(model, epochs=2, steps_per_epoch=5)
    assert average.decay == pytest.approx(0.9)
    expected = {k: v.clone().double() for k, v in model.state_dict().items()}
    for n in range(1, 31):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p), alpha=0.1)
        average.update(n)
        decay = min(0.9, (1 + n) / (10 + n))
        expected = {k: decay * expected[k] + (1 - decay) * v.double() for k, v in model.state_dict().items()}
        if n in (3, 30):
            fresh = AcousticModel(model.cfg)
            fresh.load_state_dict(average.model.state_dict())
            with torch.no_grad():
                got, want = average.model.eval()(feats, lengths)[0], fresh.eval()(feats, lengths)[0]
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    for k, v in average.model.state_dict().items():
        torch.testing.assert_close(v.double(), expected[k], rtol=0, atol=1e-6, msg=k)
    assert not torch.equal(average.model.state_dict()["output.weight"], model.state_dict()["output.weight"])


def test_with_ema_epochs_dev_scores_the_average_and_best_pt_holds_it(five_utts, tmp_path):
    """A real run with `ema_epochs`: each epoch_k.pt holds the average of its epoch and transcribes dev as the
    log says dev scored; best.pt is the epoch that scored best; last.pt carries the live weights and the average,
    and the live weights are those of the same run without an average (keeping one changes only what is scored)."""
    from asr.cli import main as asr_main
    from asr.data import write_manifest
    from asr.score import score
    manifest, stats, exp = tmp_path / "five.jsonl", tmp_path / "stats.json", tmp_path / "exp"
    write_manifest(manifest, five_utts)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(stats)])
    run = ["train", f"train_manifest={manifest}", f"dev_manifest={manifest}", f"stats={stats}", "epochs=60",
           "batch_frames=500", "threads=1", "keep_epochs=60", "lr=4e-3", "select_by=cer", "spec_augment=false",
           "model.hidden=96", "model.conv_channels=96", "model.layers=2", "model.dropout=0.1", "tensorboard=false"]
    asr_main([*run, f"exp_dir={exp}", "ema_epochs=1"])
    asr_main([*run, f"exp_dir={tmp_path / 'live'}"])
    log = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    last = torch.load(exp / "last.pt", weights_only=True)
    for name, weight in last["average"].items():
        assert torch.equal(torch.load(exp / "epoch_60.pt", weights_only=True)["model"][name], weight), name
    assert not torch.equal(last["average"]["output.weight"], last["model"]["output.weight"])
    for name, weight in torch.load(tmp_path / "live" / "last.pt", weights_only=True)["model"].items():
        assert torch.equal(last["model"][name], weight), name
    refs = [u.text for u in five_utts]
    cers = [r["dev_cer"] for r in log]
    for epoch in (20, 40, 60):
        hyps = [r.text for r in asr.load_model(exp / f"epoch_{epoch}.pt").transcribe([u.audio for u in five_utts])]
        assert score(refs, hyps).cer.rate == pytest.approx(cers[epoch - 1]), (epoch, cers)
    assert min(cers[19::20]) < 100          # some of what was scored transcribes something: the check means something
    assert torch.load(exp / "best.pt", weights_only=True)["epoch"] == 1 + cers.index(min(cers))
    with pytest.raises(ValueError, match="ema_epochs must be >= 0"):
        TrainConfig(ema_epochs=-1)
