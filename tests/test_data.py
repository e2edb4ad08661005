import pytest

from asr.data import AudioDataset, BucketBatchSampler, Utterance, collate, length_batches, read_manifest, write_manifest
from asr.text import Vocabulary


def test_manifest_round_trip(tmp_path, an4_test_utts):
    n = write_manifest(tmp_path / "m.jsonl", an4_test_utts[:3])
    assert n == 3 and read_manifest(tmp_path / "m.jsonl") == an4_test_utts[:3]


def test_bad_manifest_line_is_named(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"id": "a", "audio": "x", "duration": 1, "text": "A"}\n{"id": 1}\n')
    with pytest.raises(ValueError, match="m.jsonl:2"):
        read_manifest(tmp_path / "m.jsonl")


def test_length_batches_respect_budget_and_cover_everything():
    durations = [0.5 + (i * 37 % 50) / 10 for i in range(200)]
    batches = length_batches(durations, 20.0)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:
        assert len(b) == 1 or len(b) * max(durations[i] for i in b) <= 20.0
    assert length_batches([30.0, 1.0], 20.0) == [[1], [0]]  # too long for the budget: alone


def test_sampler_shuffles_per_epoch_reproducibly():
    durations = [1.0 + i % 7 for i in range(100)]
    s = BucketBatchSampler(durations, 10.0, seed=3)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(2)
    e2 = list(s)
    assert e1 != e2 and sorted(map(tuple, e1)) == sorted(map(tuple, e2))
    s.set_epoch(1)
    assert list(s) == e1


def test_collate_pads_real_audio(an4_test_utts):
    ds = AudioDataset(an4_test_utts[:3], Vocabulary())
    batch = collate([ds[i] for i in range(3)])
    assert batch.waves.shape[0] == 3 and batch.waves.shape[1] == batch.lengths.max()
    assert batch.target_lengths.tolist() == [len(u.text) for u in an4_test_utts[:3]]
    assert Vocabulary().decode(batch.targets[0, :batch.target_lengths[0]].tolist()) == an4_test_utts[0].text
