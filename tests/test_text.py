import pytest

from asr.text import Vocabulary, normalize_text


def test_normalize_text():
    assert normalize_text("  Hello,   world! It's 5 o'clock ") == "HELLO WORLD IT'S O'CLOCK"


def test_vocabulary_blank_is_zero_and_round_trips():
    v = Vocabulary()
    assert v.tokens[0] == "<blank>" and len(v) == 29
    ids = v.encode("RUBOUT G M E")
    assert 0 not in ids
    assert v.decode(ids) == "RUBOUT G M E"


def test_unknown_character_is_named():
    with pytest.raises(ValueError, match="'7'"):
        Vocabulary().encode("ROOM 7")


def test_vocabulary_report_counts_characters_and_names_outsiders(tmp_path, capsys):
    import pytest

    from asr.cli import main as asr_main
    from asr.data import Utterance, write_manifest
    from asr.text import vocabulary_report
    report = vocabulary_report(["AB A", "CAFÉ"])
    assert report["counts"]["A"] == 3 and report["outside"] == {"É": 1} and report["bad_utterances"] == [1]
    write_manifest(tmp_path / "m.jsonl", [Utterance("u1", "x.wav", 1.0, "AB A"), Utterance("u2", "y.wav", 1.0, "CAFÉ")])
    with pytest.raises(SystemExit, match="1 utterance"):
        asr_main(["vocab", "--manifest", str(tmp_path / "m.jsonl")])
    out = capsys.readouterr().out
    assert "outside the vocabulary: u2\tCAFÉ" in out and "'A'\t3" in out
