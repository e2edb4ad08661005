"""DDP through torchrun: two gloo processes on CPU train a real model for a few steps and stay in sync."""
import subprocess
import sys

import pytest
import torch

from asr.cli import main as asr_main
from asr.data import FrameBudgetSampler, write_manifest
from asr.distributed import Dist, check_replicas_in_sync, parameter_fingerprint


def test_torchrun_two_gloo_ranks_hold_identical_parameters(tmp_path, an4_test_utts):
    utts = an4_test_utts[:24]
    manifest, stats, exp = tmp_path / "train.jsonl", tmp_path / "stats.json", tmp_path / "exp"
    write_manifest(manifest, utts)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(stats)])
    epochs, frames = 2, 800
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "asr", "train", f"exp_dir={exp}", f"train_manifest={manifest}", f"dev_manifest={manifest}",
           f"stats={stats}", f"epochs={epochs}", f"batch_frames={frames}", "threads=1", "device=cpu",
           "speed_perturb=[0.9,1.0,1.1]", "model.hidden=32", "model.conv_channels=32", "model.layers=2"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    per_rank = len(FrameBudgetSampler([u.duration for u in utts], frames, 100)) // 2
    assert f"x 2 processes: 24 train / 24 dev utterances, {per_rank} batches per epoch per process" in run.stdout
    assert "replicas in sync: 2 ranks hold identical parameters" in run.stdout
    assert run.stdout.count(f"epoch 1/{epochs}") == 1                   # only rank 0 logs
    last = torch.load(exp / "last.pt", weights_only=True)
    assert last["position"]["step"] == epochs * per_rank                # each rank took its share
    assert len(last["rng"]) == 2                                        # every rank's RNG, to resume each
    assert len((exp / "train_log.jsonl").read_text().splitlines()) == epochs


def _perturbed(rank: int, world: int, init_file: str, out) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.GRU(4, 3, num_layers=2)
    if rank == 1:
        with torch.no_grad():
            model.weight_hh_l1[0, 0] += 1e-6                            # one element, barely
    try:
        check_replicas_in_sync(Dist(rank, world), model)
        out.put((rank, "in sync"))
    except RuntimeError as e:
        out.put((rank, str(e)))
    torch.distributed.destroy_process_group()


def test_replica_check_catches_one_differing_element(tmp_path):
    ctx = torch.multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_perturbed, args=(r, 2, str(tmp_path / "init"), out)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join()
    assert results[0] == results[1] == "rank 1's parameters differ from rank 0's (first: weight_hh_l1)"
    torch.manual_seed(1)
    a = torch.nn.GRU(4, 3)
    torch.manual_seed(1)
    b = torch.nn.GRU(4, 3)
    assert parameter_fingerprint(a) == parameter_fingerprint(b)              # two replicas built alike agree
    with torch.no_grad():
        b.weight_hh_l0.view(-1)[[3, 4]] = b.weight_hh_l0.view(-1)[[4, 3]]   # two elements swapped: same sum
    assert parameter_fingerprint(a) != parameter_fingerprint(b)


def test_torchrun_two_gloo_ranks_read_their_own_shards_each_utterance_once(tmp_path, an4_test_utts):
    """DDP from WebDataset shards: each rank streams its own shards; the epoch's audio, summed over the
    ranks, is the whole training set's (every utterance once), in equal steps."""
    import json

    from asr.shard_stream import ShardBatching, plan_epoch
    from asr.shards import open_shards, write_shards

    utts = an4_test_utts[:24]
    manifest, stats, exp = tmp_path / "train.jsonl", tmp_path / "stats.json", tmp_path / "exp"
    write_manifest(manifest, utts)
    write_shards(utts, tmp_path / "shards", shard_bytes=100_000)
    asr_main(["stats", "--manifest", str(manifest), "--out", str(stats)])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "asr", "train", f"exp_dir={exp}", f"train_shards=file://{tmp_path}/shards/index.json",
           f"dev_manifest={manifest}", f"stats={stats}", "epochs=1", "batch_frames=800", "threads=1", "device=cpu",
           "shuffle_buffer=6", "batch_pool=8", "model.hidden=24", "model.conv_channels=24", "model.layers=1",
           "tensorboard=false"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    shards = open_shards(str(tmp_path / "shards" / "index.json"))
    assert len(shards) >= 4
    per_rank = len(plan_epoch(shards, 1, ShardBatching(800, 100, 0, 6, 8), world=2)[0])
    assert f"x 2 processes: 24 train / 24 dev utterances, {per_rank} batches per epoch per process" in run.stdout
    assert "replicas in sync: 2 ranks hold identical parameters" in run.stdout
    (record,) = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    assert record["audio_seconds"] == pytest.approx(sum(u.duration for u in utts), abs=1e-6)
    assert torch.load(exp / "last.pt", weights_only=True)["position"]["step"] == per_rank
