import pytest

import asr
from asr.score import read_hyps, score, score_dataset


def test_counts_and_kaldi_summary():
    refs = ["A B C D", "ENTER ONE TWO"]
    hyps = ["A X C D E", "ENTER TWO"]   # 1 sub + 1 ins, 1 del
    s = score(refs, hyps)
    assert (s.wer.errors, s.wer.total, s.wer.ins, s.wer.dels, s.wer.subs) == (3, 7, 1, 1, 1)
    assert s.wer.rate == pytest.approx(300 / 7)
    assert s.summary().splitlines()[0] == "%WER 42.86 [ 3 / 7, 1 ins, 1 del, 1 sub ]"
    assert s.summary().splitlines()[1].startswith("%CER ")
    assert asr.wer(refs, hyps) == pytest.approx(300 / 7)


def test_empty_hypothesis_is_all_deletions():
    s = score(["YES NO"], [""])
    assert (s.wer.dels, s.wer.errors, s.wer.total) == (2, 2, 2)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        score(["A", "B"], ["A"])


def test_writes_reports(tmp_path):
    score_dataset(["u1", "u2", "u3", "u4"], ["A B", "C D", "E F", "H I J"], ["A B", "C E", "E F G", "H"], tmp_path)
    assert (tmp_path / "wer.txt").read_text().startswith("%WER 44.44 [ 4 / 9, 1 ins, 2 del, 1 sub ]")
    per_utt = (tmp_path / "per_utt.tsv").read_text().splitlines()
    assert per_utt[1:] == ["u1\t0\t2\tA B\tA B", "u2\t1\t2\tC D\tC E", "u3\t1\t2\tE F\tE F G", "u4\t2\t3\tH I J\tH"]
    alignment = (tmp_path / "alignment.txt").read_text()
    assert "=== u2 ===" in alignment and "REF: C D" in alignment


def test_read_hyps(tmp_path):
    (tmp_path / "hyp.txt").write_text("a\tYES\nb\t\n")
    assert read_hyps(tmp_path / "hyp.txt") == {"a": "YES", "b": ""}
