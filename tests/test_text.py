import pytest

from asr.text import TextConfig, normalize_text, spell_number
from asr.tokens import BPEVocabulary, Vocabulary, train_bpe, vocabulary_from_state


def test_normalize_text():
    assert normalize_text("  Hello,   world! It's 5 o'clock ") == "HELLO WORLD IT'S FIVE O'CLOCK"
    assert normalize_text("Café \u2018déjà\u2019 vu") == "CAFE 'DEJA' VU"   # accents stripped, curly quotes straight


@pytest.mark.parametrize("raw, spelled", [
    ("42", "FORTY TWO"), ("1,204", "ONE THOUSAND TWO HUNDRED FOUR"), ("1000000", "ONE MILLION"),
    ("3.14", "THREE POINT ONE FOUR"), ("21st", "TWENTY FIRST"), ("12th", "TWELFTH"), ("30th", "THIRTIETH"),
    ("1997", "NINETEEN NINETY SEVEN"), ("1905", "NINETEEN OH FIVE"), ("2004", "TWO THOUSAND FOUR"),
    ("1990s", "NINETEEN NINETIES"), ("50%", "FIFTY PERCENT"), ("0", "ZERO")])
def test_numbers_are_spelled_as_read(raw, spelled):
    assert normalize_text(raw) == spelled


def test_text_config_sets_case_punctuation_numbers_and_the_alphabet():
    raw = "Room 7, please!  Isn't it?"
    assert normalize_text(raw) == "ROOM SEVEN PLEASE ISN'T IT"
    keep = TextConfig(case="keep", punctuation="keep", numbers="keep")
    assert normalize_text(raw, keep) == "Room 7, please! Isn't it?"
    lower = TextConfig(case="lower", numbers="keep")
    assert normalize_text(raw, lower) == "room 7 please isn't it"
    for cfg in (TextConfig(), keep, lower):          # normalised text is spelled by the config's own alphabet
        assert set(normalize_text(raw, cfg)) <= set(cfg.alphabet)
        assert normalize_text(normalize_text(raw, cfg), cfg) == normalize_text(raw, cfg)   # idempotent
    assert TextConfig().alphabet == Vocabulary().chars                    # the default keeps old checkpoints valid
    with pytest.raises(ValueError, match="text.case must be one of upper, lower, keep"):
        TextConfig(case="title")
    assert spell_number("7") == "SEVEN"


def test_bpe_pieces_round_trip_split_words_and_survive_a_checkpoint(an4_dir, tmp_path):
    import torch

    from asr.corpora.an4 import read_split
    texts = [u.text for u in read_split(an4_dir, "train")]
    bpe = train_bpe(texts, 80, tmp_path / "bpe.model")
    assert len(bpe) == 81 and bpe.tokens[0] == "<blank>"
    assert train_bpe(texts, 80, tmp_path / "again.model") == bpe              # deterministic
    text = "ERASE C Q Q F SEVEN"
    ids = bpe.encode(text)
    assert 0 not in ids and len(ids) < len(text) and bpe.decode(ids) == text
    spans = bpe.word_spans(ids)
    assert [bpe.decode(ids[s:e]) for s, e in spans] == text.split()
    torch.save({"vocab": bpe.state()}, tmp_path / "ckpt.pt")
    back = vocabulary_from_state(torch.load(tmp_path / "ckpt.pt", weights_only=True)["vocab"])
    assert isinstance(back, BPEVocabulary) and back == bpe and back.encode(text) == ids
    with pytest.raises(ValueError, match=r"\['7'\] are not in the BPE vocabulary"):
        bpe.encode("ROOM 7")
    with pytest.raises(ValueError, match="cannot train 5000 BPE pieces"):
        train_bpe(texts, 5000, tmp_path / "big.model")


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
    from asr.tokens import vocabulary_report
    report = vocabulary_report(["AB A", "CAFÉ"])
    assert report["counts"]["A"] == 3 and report["outside"] == {"É": 1} and report["bad_utterances"] == [1]
    write_manifest(tmp_path / "m.jsonl", [Utterance("u1", "x.wav", 1.0, "AB A"), Utterance("u2", "y.wav", 1.0, "CAFÉ")])
    with pytest.raises(SystemExit, match="1 utterance"):
        asr_main(["vocab", "--manifest", str(tmp_path / "m.jsonl")])
    out = capsys.readouterr().out
    assert "outside the vocabulary: u2\tCAFÉ" in out and "'A'\t3" in out
