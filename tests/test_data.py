import pytest
import torch

from asr.corpora.an4 import read_split
from asr.data import AudioDataset, FrameBudgetSampler, collate, length_batches, read_manifest, write_manifest
from asr.features import FeatureConfig
from asr.tokens import Vocabulary

FPS = FeatureConfig().frames_per_second  # 100 feature frames a second


def test_manifest_round_trip(tmp_path, an4_test_utts):
    n = write_manifest(tmp_path / "m.jsonl", an4_test_utts[:3])
    assert n == 3 and read_manifest(tmp_path / "m.jsonl") == an4_test_utts[:3]


def test_bad_manifest_line_is_named(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"id": "a", "audio": "x", "duration": 1, "text": "A"}\n{"id": 1}\n')
    with pytest.raises(ValueError, match="m.jsonl:2"):
        read_manifest(tmp_path / "m.jsonl")


def test_length_batches_respect_frame_budget_and_cover_everything():
    durations = [0.5 + (i * 37 % 50) / 10 for i in range(200)]
    batches = length_batches(durations, 2000, FPS)
    assert sorted(i for b in batches for i in b) == list(range(200))
    for b in batches:  # padded frames = size x longest
        assert len(b) == 1 or len(b) * max(durations[i] for i in b) * FPS <= 2000
    assert length_batches([30.0, 1.0], 2000, FPS) == [[1], [0]]  # too long for the budget: alone
    assert max(map(len, length_batches(durations, 10**9, FPS, max_batch_size=16))) == 16


def test_no_batch_exceeds_the_longest_utterance_alone(an4_dir):
    """The OOM guarantee: peak padded frames is max(budget, longest utterance), on a real corpus."""
    durations = [u.duration for u in read_split(an4_dir, "train")]
    longest = max(durations) * FPS
    for budget in (300, 2000, 8000):
        peak = max(len(b) * max(durations[i] for i in b) * FPS for b in length_batches(durations, budget, FPS))
        assert peak <= max(budget, longest)


def test_sampler_shuffles_per_epoch_reproducibly_and_resumes_mid_epoch():
    durations = [1.0 + i % 7 for i in range(100)]
    s = FrameBudgetSampler(durations, 1000, FPS, seed=3)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(2)
    e2 = list(s)
    assert e1 != e2 and sorted(map(tuple, e1)) == sorted(map(tuple, e2))
    s.set_epoch(1)
    assert list(s) == e1
    s.set_epoch(1, start=3)
    assert list(s) == e1[3:]


def test_sortagrad_goes_shortest_first_then_shuffles():
    durations = [1.0 + (i * 13 % 29) / 4 for i in range(120)]
    s = FrameBudgetSampler(durations, 1500, FPS, sortagrad=1, seed=0)
    longest = lambda batches: [max(durations[i] for i in b) for b in batches]
    s.set_epoch(1)
    assert longest(list(s)) == sorted(longest(list(s)))
    s.set_epoch(2)
    assert longest(list(s)) != sorted(longest(list(s)))


def test_ranks_split_each_epoch_into_equal_disjoint_shares():
    durations = [1.0 + i % 9 for i in range(203)]
    whole = FrameBudgetSampler(durations, 1200, FPS, seed=5)
    ranks = [FrameBudgetSampler(durations, 1200, FPS, seed=5, num_replicas=3, rank=r) for r in range(3)]
    for epoch in (1, 2):
        for s in (whole, *ranks):
            s.set_epoch(epoch)
        shares = [list(s) for s in ranks]
        assert len({len(x) for x in shares}) == 1 and len(shares[0]) == len(whole) // 3
        flat = [tuple(b) for x in shares for b in x]
        assert len(set(flat)) == len(flat)                                  # no batch on two ranks
        assert set(flat) <= {tuple(b) for b in list(whole)}                 # the same batches, split
        assert shares[1] == [list(whole)[i] for i in range(1, 3 * len(shares[0]), 3)]
    with pytest.raises(ValueError, match="cannot feed 300 ranks"):
        FrameBudgetSampler(durations, 1200, FPS, num_replicas=300, rank=0)


def test_collate_pads_real_audio(an4_test_utts):
    ds = AudioDataset(an4_test_utts[:3], Vocabulary())
    batch = collate([ds[i] for i in range(3)])
    assert batch.waves.shape[0] == 3 and batch.waves.shape[1] == batch.lengths.max()
    assert batch.pcm.dtype == torch.int16                                  # half the bytes of float32...
    for i in range(3):                                                     # ...and exact for 16-bit audio
        assert torch.equal(batch.waves[i, :batch.lengths[i]], ds[i][0])
        assert not batch.pcm[i, batch.lengths[i]:].any()
    assert batch.target_lengths.tolist() == [len(u.text) for u in an4_test_utts[:3]]
    assert Vocabulary().decode(batch.targets[0, :batch.target_lengths[0]].tolist()) == an4_test_utts[0].text
