"""Kill a real training process with SIGKILL mid-epoch, resume it, and land where an uninterrupted run lands."""
import json
import re
import signal
import subprocess
import sys
import time

import torch

from asr.cli import main as asr_main
from asr.data import write_manifest

EPOCHS = 12


def _train_cmd(exp, manifest, dev, stats, *extra):
    # save_every=3 with 4 batches an epoch: most step checkpoints fall mid-epoch
    return [sys.executable, "-m", "asr.train", f"exp_dir={exp}", f"train_manifest={manifest}",
            f"dev_manifest={dev}", f"stats={stats}", f"epochs={EPOCHS}", "save_every=3", "threads=1",
            "batch_frames=400", "model.hidden=32", "model.conv_channels=32", "model.layers=2", *extra]


def _last(exp):
    try:
        return torch.load(exp / "last.pt", weights_only=True)
    except (FileNotFoundError, EOFError, RuntimeError):
        return None


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, five_utts, an4_test_utts):
    manifest, dev, stats = tmp_path / "five.jsonl", tmp_path / "dev.jsonl", tmp_path / "stats.json"
    write_manifest(manifest, five_utts)
    write_manifest(dev, an4_test_utts[:30])  # a dev pass long enough to kill the run before the epoch's end save
    asr_main(["stats", "--manifest", str(manifest), "--out", str(stats)])

    straight = tmp_path / "straight"
    run = (manifest, dev, stats, "ema_epochs=2", f"keep_epochs={EPOCHS}")   # the weights' moving average too
    done = subprocess.run(_train_cmd(straight, *run), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    total_steps = _last(straight)["position"]["step"]
    per_epoch = total_steps // EPOCHS
    assert per_epoch == 4

    def mid_epoch(position):
        return 6 <= position["step"] < total_steps and 0 < position["batch"] < per_epoch

    exp = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(exp, *run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        ckpt = _last(exp)
        if ckpt is not None and mid_epoch(ckpt["position"]):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = _last(exp)["position"]
    assert mid_epoch(saved), f"killed at {saved}: not mid-epoch"

    resumed = subprocess.run(_train_cmd(exp, *run, "resume=true"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {exp / 'last.pt'} at step {saved['step']} " in resumed.stdout
    end = _last(exp)
    assert end["position"]["step"] == total_steps
    # same data order, RNG and optimizer state: the weights are those of the run never killed
    for part in ("model", "average"):
        for name, weight in _last(straight)[part].items():
            torch.testing.assert_close(end[part][name], weight, msg=f"{part} {name}")
    for epoch in range(1, EPOCHS + 1):   # each epoch's average (the first after the kill: a few updates from last.pt's)
        kept = [torch.load(e / f"epoch_{epoch}.pt", weights_only=True)["model"] for e in (straight, exp)]
        for name, weight in kept[0].items():
            torch.testing.assert_close(kept[1][name], weight, msg=f"epoch {epoch} {name}")


def _setup(tmp_path, five_utts):
    manifest, stats = tmp_path / "five.jsonl", tmp_path / "stats.json"
    write_manifest(manifest, five_utts)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(stats)])
    return manifest, stats


def _wait_for_step(proc, step: int, timeout: float = 120) -> list[str]:
    """Read the run's `step N loss ...` lines until step `step`; returns the lines read."""
    lines, deadline = [], time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.match(r"step (\d+) ", line)
        if m and int(m[1]) >= step:
            break
    return lines


def test_sigterm_saves_where_it_stopped_and_resume_finishes_the_run(tmp_path, five_utts):
    manifest, stats = _setup(tmp_path, five_utts)
    exp = tmp_path / "exp"
    cmd = _train_cmd(exp, manifest, manifest, stats, "save_every=0", "save_epochs=100", "log_every=1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_step(proc, 10)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out                  # stopped, not crashed
    assert "Traceback" not in out and "SIGTERM: stopped at step" in out and "resume=true" in out
    saved = _last(exp)["position"]                                       # no periodic save: this is the signal's
    assert 10 <= saved["step"] < EPOCHS * 4
    resumed = subprocess.run([*cmd, "resume=true"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {exp / 'last.pt'} at step {saved['step']} " in resumed.stdout
    assert _last(exp)["position"]["step"] == EPOCHS * 4                  # every step done once: none lost
    # the training wall time continues across the stop (RESULTS and reports read the last line's)
    log = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, EPOCHS + 1))
    elapsed = [r["elapsed"] for r in log]
    assert all(b > a for a, b in zip(elapsed, elapsed[1:])), elapsed


def test_sigkill_at_a_random_moment_loses_at_most_one_checkpoint_interval(tmp_path, five_utts):
    import random

    manifest, stats = _setup(tmp_path, five_utts)
    exp, every = tmp_path / "exp", 3
    cmd = _train_cmd(exp, manifest, manifest, stats, f"save_every={every}", "log_every=1")
    moment = random.Random().randint(4, EPOCHS * 4 - 8)                  # a different step each run
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = _wait_for_step(proc, moment)
    time.sleep(random.Random().uniform(0, 0.2))                          # and somewhere inside that step
    proc.send_signal(signal.SIGKILL)
    lines += proc.stdout.readlines()
    proc.wait()
    # the last step printed; the step after it may have finished unprinted when the kill came
    printed = max(int(m[1]) for m in (re.match(r"step (\d+) ", x) for x in lines) if m)
    ckpt = _last(exp)                                                    # written atomically: always loadable
    assert ckpt is not None, f"no loadable last.pt after SIGKILL at step {printed}"
    assert -1 <= printed - ckpt["position"]["step"] <= every, (moment, printed, ckpt["position"])
    resumed = subprocess.run([*cmd, "resume=true"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _last(exp)["position"]["step"] == EPOCHS * 4
