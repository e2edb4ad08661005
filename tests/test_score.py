import pytest

import asr
from asr.score import score, score_dataset


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


def test_every_transcript_form_reads_back_what_was_written(tmp_path):
    """asr.transcripts, the one home of id-keyed transcript files: what write_transcripts writes in each form,
    read_transcripts reads back (and detects), in any script; an id the form cannot hold is refused by name."""
    from asr.transcripts import TRANSCRIPT_FORMATS, detect_format, read_transcripts, write_transcripts

    texts = {"a": "YES", "b": "", "spk1-u2": "ZAŻÓŁĆ GĘŚLĄ JAŹŃ", "fa_1": "سلام دنیا", "zh": "你好世界"}
    for fmt in TRANSCRIPT_FORMATS:
        path = write_transcripts(tmp_path / f"hyp.{fmt}", texts, fmt)
        assert read_transcripts(path) == texts and detect_format(path) == fmt, fmt
    (tmp_path / "hyp.txt").write_text("a\tYES\nb\t\n")                   # asr decode's hyp.txt
    assert read_transcripts(tmp_path / "hyp.txt", "tsv") == {"a": "YES", "b": ""}
    for fmt, uid in (("kaldi", "a b"), ("trn", "a(1)"), ("tsv", "a\tb")):
        with pytest.raises(ValueError, match="cannot be written"):
            write_transcripts(tmp_path / "bad", {uid: "X"}, fmt)


@pytest.fixture(scope="module")
def an4_decoded(an4_model, an4_test_utts):
    """Real references and real hypotheses: 40 AN4 test utterances decoded by the fixture model."""
    utts = an4_test_utts[:40]
    return utts, [r.text for r in asr.load_model(an4_model).transcribe([u.audio for u in utts])]


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_score_reads_kaldi_trn_tsv_and_nemo_files_paired_by_id(an4_decoded, tmp_path, capsys):
    import json
    import random

    from asr.cli import main as asr_main
    from asr.transcripts import detect_format, read_transcripts

    utts, hyps = an4_decoded
    expected = score([u.text for u in utts], hyps).summary()
    order = list(range(len(utts)))
    random.Random(0).shuffle(order)                                  # hypotheses in another order than refs
    refs = {"kaldi": _write(tmp_path / "text", [f"{u.id} {u.text}" for u in utts]),
            "trn": _write(tmp_path / "ref.trn", [f"{u.text.lower()} ({u.id})" for u in utts]),
            "jsonl": _write(tmp_path / "ref.jsonl", [json.dumps({"audio_filepath": u.id, "duration": u.duration,
                                                                 "text": u.text}) for u in utts])}
    hyp_files = {"tsv": _write(tmp_path / "hyp.txt", [f"{utts[i].id}\t{hyps[i]}" for i in order]),
                 "trn": _write(tmp_path / "hyp.trn", [f"{hyps[i]} ({utts[i].id})" for i in order]),
                 "kaldi": _write(tmp_path / "hyp_text", [f"{utts[i].id} {hyps[i]}".rstrip() for i in order]),
                 "jsonl": _write(tmp_path / "pred.jsonl", [json.dumps(
                     {"audio_filepath": utts[i].id, "text": utts[i].text, "pred_text": hyps[i]}) for i in order])}
    for fmt, path in {**refs, **hyp_files}.items():
        assert detect_format(path) == fmt, path
    assert read_transcripts(hyp_files["jsonl"], hypotheses=True) == read_transcripts(hyp_files["tsv"])
    for ref in refs.values():
        for hyp in hyp_files.values():
            capsys.readouterr()
            asr_main(["score", str(ref), str(hyp), "--out", str(tmp_path / "out")])
            out = capsys.readouterr().out
            assert out.endswith(expected + "\n") and f"{len(utts)} utterances scored" in out, (ref, hyp)
    asr_main(["score", str(hyp_files["jsonl"])])                     # NeMo's transcribe output alone: text vs pred_text
    assert capsys.readouterr().out.endswith(expected + "\n")


def test_score_names_what_only_one_file_has(an4_decoded, tmp_path, capsys):
    from asr.cli import main as asr_main

    utts, hyps = an4_decoded
    ref = _write(tmp_path / "text", [f"{u.id} {u.text}" for u in utts])
    hyp = _write(tmp_path / "hyp.txt", [f"{u.id}\t{h}" for u, h in zip(utts[3:], hyps[3:])] + ["stray-1\tYES"])
    asr_main(["score", str(ref), str(hyp)])
    out = capsys.readouterr().out
    assert (f"3 of {len(utts)} reference utterance(s) have no hypothesis, scored as empty (all deletions): "
            f"{utts[0].id}, {utts[1].id}, {utts[2].id}") in out
    assert "1 hypothesis utterance(s) have no reference, not scored: stray-1" in out
    assert out.endswith(score([u.text for u in utts], ["", "", ""] + hyps[3:]).summary() + "\n")


def test_score_files_refuse_bad_lines_by_file_and_line(tmp_path):
    from asr.cli import main as asr_main

    ref = _write(tmp_path / "text", ["a YES", "b NO"])
    for name, lines, reason in (("dup", ["a YES", "a NO"], "dup:2: utterance 'a' a second time"),
                                ("bad.jsonl", ['{"text": "YES"}'], "bad.jsonl:1: a JSON line needs an id"),
                                ("other", ["x YES"], "share no utterance id")):
        with pytest.raises(SystemExit, match=reason):
            asr_main(["score", str(ref), str(_write(tmp_path / name, lines))])
    with pytest.raises(SystemExit, match="alone has no hypotheses"):
        asr_main(["score", str(ref)])
