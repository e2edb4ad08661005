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
