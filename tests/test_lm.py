"""Word LMs through the real KenLM lmplz (built by make install) and lexicons in decoder tokens."""
import re

import pytest

from asr.corpora.an4 import read_split
from asr.lm import build_lm, read_lexicon_words, write_lexicon
from asr.text import Vocabulary, train_bpe


def test_lmplz_builds_a_trigram_lm_and_lexicon_from_an4_transcripts(an4_dir, tmp_path):
    texts = [u.text for u in read_split(an4_dir, "train")]
    paths = build_lm(texts, tmp_path, order=3)
    arpa = paths["lm"].read_text()
    counts = {int(n): int(c) for n, c in re.findall(r"^ngram (\d)=(\d+)$", arpa, re.M)}
    words = {w for t in texts for w in t.split()}
    assert set(counts) == {1, 2, 3}
    assert counts[1] == len(words) + 3                                  # + <s>, </s>, <unk>
    assert counts[2] > counts[1] and "\\end\\" in arpa
    lexicon = dict(line.split("\t") for line in paths["lexicon"].read_text().splitlines())
    assert set(lexicon) == words and lexicon["ENTER"] == "E N T E R |"
    assert paths["words"].read_text().splitlines()[0].split("\t")[0] in words  # most frequent first


def test_lexicon_spells_in_decoder_tokens_and_names_bad_characters(tmp_path):
    v = Vocabulary()
    tokens = v.decoder_tokens
    assert tokens[:3] == ["<blank>", "|", "'"] and len(tokens) == 29
    assert v.spell("DON'T") == "D O N ' T |"
    assert set(v.spell("DON'T").split()) <= set(tokens)
    with pytest.raises(ValueError, match="'é' is not in the vocabulary"):
        write_lexicon(["CAFé"], tmp_path / "lexicon.txt")


def test_bpe_lexicon_spells_words_in_pieces(an4_dir, tmp_path):
    texts = [u.text for u in read_split(an4_dir, "train")]
    bpe = train_bpe(texts, 60, tmp_path / "bpe.model")
    words = sorted({w for t in texts for w in t.split()})
    write_lexicon(words, tmp_path / "lexicon.txt", bpe)
    assert read_lexicon_words(tmp_path / "lexicon.txt") == words
    for line in (tmp_path / "lexicon.txt").read_text().splitlines():
        word, spelling = line.split("\t")
        pieces = spelling.split()
        assert set(pieces) <= set(bpe.decoder_tokens) and pieces[0].startswith("\u2581")   # a word starts at '▁'
        assert "".join(pieces).lstrip("\u2581") == word and bpe.boundary_token is None


def test_empty_corpus_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no transcripts"):
        build_lm(["", " "], tmp_path)
