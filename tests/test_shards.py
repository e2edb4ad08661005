"""WebDataset shards of real AN4 audio: webdataset's own reader reads what asr shard writes; the stream each
rank reads covers an epoch exactly once across ranks, resumes mid-epoch in the same order, from fsspec URLs."""
import json
import signal
import subprocess
import sys

import pytest
import torch

from asr.cli import main as asr_main
from asr.data import AudioDataset, collate, write_manifest
from asr.shard_stream import ShardBatching, ShardStream, plan_epoch
from asr.shards import INDEX, decode_flac, open_shards
from asr.tokens import Vocabulary
from asr.train import train

HALF = "shard-{000000..000003}.tar"
CFG = ShardBatching(batch_frames=800, frames_per_second=100, max_batch_size=0, shuffle_buffer=8, batch_pool=12)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, an4_test_utts):
    """40 real AN4 test utterances (SPHERE, encoded to FLAC once) in 8 shards, through `asr shard`."""
    out = tmp_path_factory.mktemp("shards")
    write_manifest(out / "train.jsonl", an4_test_utts[:40])
    asr_main(["shard", "--manifest", str(out / "train.jsonl"), "--out", str(out / "sh"), "--shard-mb", "0.2"])
    return out / "sh", an4_test_utts[:40]


def test_webdataset_reads_our_shards(sharded):
    import webdataset as wds

    folder, utts = sharded
    index = json.loads((folder / INDEX).read_text())
    n = len(index["shards"])
    assert n >= 4 and sorted(p.name for p in folder.glob("*.tar")) == [f"shard-{k:06d}.tar" for k in range(n)]
    samples = list(wds.WebDataset(str(folder / f"shard-{{000000..{n - 1:06d}}}.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [u.id for u in utts]
    first = samples[0]
    assert json.loads(first["json"]) == {"id": utts[0].id, "text": utts[0].text, "duration": utts[0].duration,
                                         "speaker": utts[0].speaker}
    torch.testing.assert_close(decode_flac(first["flac"]), utts[0].samples(), atol=1 / 32768, rtol=0)


def test_every_utterance_once_an_epoch_across_ranks_in_equal_steps(sharded):
    folder, utts = sharded
    shards = open_shards(str(folder / INDEX))
    for world in (1, 2, 3):
        for epoch in (1, 2, 3):
            per_rank = plan_epoch(shards, epoch, CFG, world)
            assert len({len(r) for r in per_rank}) == 1                     # DDP: the same steps on every rank
            seen = sorted(shards[s].ids[i] for r in per_rank for b in r for s, i in b)
            assert seen == sorted(u.id for u in utts)                       # each once
            for r in per_rank:
                for b in r:
                    assert len(b) == 1 or len(b) * max(shards[s].durations[i] for s, i in b) * 100 <= 800
    assert plan_epoch(shards, 1, CFG, 2) != plan_epoch(shards, 2, CFG, 2)   # reshuffled each epoch
    assert plan_epoch(shards, 2, CFG, 2) == plan_epoch(shards, 2, CFG, 2)   # ... as a function of the epoch


def test_stream_resumes_mid_epoch_in_the_same_order(sharded):
    folder, utts = sharded
    stream = ShardStream(open_shards(str(folder / INDEX)), Vocabulary(), CFG, num_replicas=2, rank=1, threads=2)
    stream.set_epoch(2)
    whole = [b for b in stream]
    assert [[u.id for u in b.utts] for b in whole] == stream.batch_ids() and len(whole) == len(stream)
    stream.set_epoch(2, start=3)
    assert [[u.id for u in b.utts] for b in stream] == [[u.id for u in b.utts] for b in whole[3:]]
    # batch consistency: a stream batch holds the same samples as the manifest's audio files collated
    by_id = {u.id: k for k, u in enumerate(utts)}
    dataset = AudioDataset(utts, Vocabulary())
    for b in whole[:3]:
        expected = collate([dataset[by_id[u.id]] for u in b.utts])
        assert torch.equal(b.pcm, expected.pcm) and torch.equal(b.targets, expected.targets)


def test_shards_read_from_fsspec_urls(sharded, tmp_path):
    """file:// URLs, and fsspec's in-memory file system from a brace pattern with no index (scanned)."""
    import fsspec

    folder, utts = sharded
    by_url = open_shards(f"file://{folder}/{INDEX}")
    assert by_url[0].url == f"file://{folder}/shard-000000.tar"
    stream = ShardStream(by_url, Vocabulary(), CFG)
    assert sorted(u.id for b in stream for u in b.utts) == sorted(u.id for u in utts)
    memory = fsspec.filesystem("memory")
    n = len(by_url)
    for k in range(n):
        memory.pipe(f"/t21/shard-{k:06d}.tar", (folder / f"shard-{k:06d}.tar").read_bytes())
    scanned = open_shards(f"memory://t21/shard-{{000000..{n - 1:06d}}}.tar")
    assert [s.keys for s in scanned] == [s.keys for s in by_url]
    assert [s.durations for s in scanned] == [s.durations for s in by_url]
    stream = ShardStream(scanned, Vocabulary(), CFG)
    assert sorted(u.id for b in stream for u in b.utts) == sorted(u.id for u in utts)
    memory.rm("/t21", recursive=True)


def test_shards_read_over_http(sharded):
    """http:// (fsspec's HTTP file system, aiohttp) from a real HTTP server: by index.json, and by a brace
    pattern whose index.json the server also holds."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    folder, utts = sharded
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        shards = open_shards(f"{base}/{INDEX}")
        assert shards[0].url == f"{base}/shard-000000.tar"
        stream = ShardStream(shards, Vocabulary(), CFG)
        got = {u.id: int(b.lengths[k]) for b in stream for k, u in enumerate(b.utts)}
        assert sorted(got) == sorted(u.id for u in utts)
        first = utts[0]
        assert got[first.id] == len(first.samples())       # the audio came through whole
        half = open_shards(f"{base}/{HALF}")
        assert [s.keys for s in half] == [s.keys for s in shards[:4]]
    finally:
        server.shutdown()


def _train(tmp_path, folder, exp, *extra):
    dev, stats = tmp_path / "dev.jsonl", tmp_path / "stats.json"
    # half the shards, named by a brace pattern (their index.json beside them describes them)
    return [sys.executable, "-m", "asr.train", f"exp_dir={exp}", f"train_shards={folder}/{HALF}",
            f"dev_manifest={dev}", f"stats={stats}", "epochs=2", "threads=1", "batch_frames=800", "shuffle_buffer=8",
            "batch_pool=12", "model.hidden=24", "model.conv_channels=24", "model.layers=1", "tensorboard=false",
            "log_every=1", *extra]


def test_training_from_shards_resumes_mid_epoch_as_if_never_stopped(sharded, tmp_path):
    folder, utts = sharded
    write_manifest(tmp_path / "dev.jsonl", utts[:4])
    asr_main(["stats", "--manifest", str(folder.parent / "train.jsonl"), "--out", str(tmp_path / "stats.json")])
    from asr.config import TrainConfig, load_config

    straight = tmp_path / "straight"                                    # in this process, no DataLoader worker
    train(load_config(TrainConfig, None, _train(tmp_path, folder, straight)[3:]))
    shards = open_shards(f"{folder}/{HALF}")
    n, per_epoch = sum(len(s.keys) for s in shards), len(plan_epoch(shards, 1, CFG)[0])
    stop_at = per_epoch + 3                                             # 3 batches into epoch 2
    # the interrupted run streams from one DataLoader worker process: the same batches either way
    proc = subprocess.Popen(_train(tmp_path, folder, tmp_path / "run", "num_workers=1"), stdout=subprocess.PIPE,
                            text=True)
    said = []
    for line in proc.stdout:
        said.append(line)
        if line.startswith(f"step {stop_at} "):
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=120)
    assert any(f"{n} train / 4 dev utterances, {per_epoch} batches per epoch" in line for line in said), said
    assert said[-1].startswith(f"step {stop_at} "), said[-5:]              # stopped where it was asked to
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["position"]
    assert saved["epoch"] == 2 and 0 < saved["batch"] < per_epoch
    resumed = subprocess.run(_train(tmp_path, folder, tmp_path / "run", "num_workers=1", "resume=true"),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"(epoch 2, batch {saved['batch']})" in resumed.stdout
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    for name in a:
        torch.testing.assert_close(b[name], a[name], msg=name)         # same batches, same order, same weights
