"""Word LMs through the real KenLM lmplz (built by make install) and lexicons in decoder tokens."""
import re
from pathlib import Path

import pytest

from asr.corpora.an4 import read_split
from asr.decode import DecodingOptions
from asr.lm import build_lm, lm_file, read_lexicon_words, read_word_list, write_lexicon
from asr.score import score
from asr.tokens import Vocabulary, train_bpe
from asr.transcribe import load_model


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


def test_an_order_kenlm_cannot_load_is_refused_before_anything_is_written(tmp_path):
    """build_binary and the decoder's KenLM take at most 6-grams: a 7-gram failed after lmplz had run (its ARPA
    written, no lm.bin), naming a KenLM source line; now the order itself is named, up front."""
    for order in (7, 0):
        with pytest.raises(ValueError, match=f"order must be 1 to 6, not {order}: KenLM"):
            build_lm(["A B C"], tmp_path / "lm", order=order)
    assert not (tmp_path / "lm").exists()


WORDLIST = Path("/usr/share/dict/american-english")   # Debian's wamerican, installed by make install


def test_task_words_and_spelled_words_join_the_lm_text(an4_dir, tmp_path):
    texts = [u.text for u in read_split(an4_dir, "train")]
    dictionary = read_word_list(an4_dir / "etc" / "an4.dic")
    assert len(dictionary) == 101 and "EIGHTH" in dictionary and "EIGHTH(2)" not in dictionary  # variants folded
    paths = build_lm(texts, tmp_path, order=4, transcript_weight=2, words=dictionary,
                     spelled=["Jennifer", "Ångström", "X", "O'Neil", "Powell"])
    corpus = paths["corpus"].read_text().splitlines()
    new = sorted(set(dictionary) - {w for t in texts for w in t.split()})
    assert new == ["NOVEMBER", "THIRTEEN"]          # task words no train utterance says (test ones do)
    assert corpus == texts * 2 + new + ["J E N N I F E R", "P O W E L L"]  # only ASCII letters, 2+ of them, spelled
    lexicon = read_lexicon_words(paths["lexicon"])
    assert set(new) <= set(lexicon) and "JENNIFER" not in lexicon     # spellings teach letters, not words
    assert re.search(r"^ngram 4=\d+$", paths["lm"].read_text(), re.M)
    with pytest.raises(ValueError, match="transcript_weight"):
        build_lm(texts, tmp_path, transcript_weight=0)


def test_spelled_names_in_the_lm_fix_spelled_names_on_an4_test(an4_dir, an4_model, tmp_path):
    """AN4 speakers spell their names and streets letter by letter; test holds other speakers' names.
    An LM that also saw the spellings of the word list's capitalised words (names, places) decodes the
    test's spelled utterances with far fewer errors than one from the transcripts alone (measured with
    the fixture model: greedy 10.2, transcripts' LM 6.9, with spellings 2.6 %WER on 40 utterances)."""
    assert WORDLIST.exists(), f"{WORDLIST} is missing: `make install` installs Debian's wamerican"
    texts = [u.text for u in read_split(an4_dir, "train")]
    spelled = [u for u in read_split(an4_dir, "test") if len(u.text.split()) >= 4
               and all(len(w) == 1 for w in u.text.split())]
    names = [w for w in read_word_list(WORDLIST) if re.fullmatch(r"[A-Z][a-z]+", w)]
    assert len(spelled) == 40 and len(names) > 5000
    rates = []
    for name, extra in (("plain", []), ("spelled", names)):
        paths = build_lm(texts, tmp_path / name, order=6, transcript_weight=3, spelled=extra)   # the recipe's
        model = load_model(an4_model, options=DecodingOptions(
            method="beam", lm=str(paths["lm"]), lexicon=str(paths["lexicon"]), lm_weight=1.5, word_score=3, threads=1))
        hyps = [r.text for r in model.transcribe([u.audio for u in spelled])]
        rates.append(score([u.text for u in spelled], hyps).wer.rate)
    plain, with_names = rates
    assert with_names < 0.6 * plain, rates


def test_binary_lm_is_written_preferred_and_decodes_like_the_arpa(an4_dir, an4_model, an4_test_utts, tmp_path):
    texts = [u.text for u in read_split(an4_dir, "train")]
    paths = build_lm(texts, tmp_path, order=3)
    assert paths["binary"] == tmp_path / "lm.bin" and lm_file(tmp_path) == paths["binary"]
    assert paths["binary"].read_bytes()[:4] != paths["lm"].read_bytes()[:4]      # not the ARPA text again
    utts = an4_test_utts[:20]
    hyps = []
    for lm in (paths["lm"], paths["binary"]):
        model = load_model(an4_model, options=DecodingOptions(
            method="beam", lm=str(lm), lexicon=str(paths["lexicon"]), lm_weight=1.5, word_score=3, threads=1))
        hyps.append([r.text for r in model.transcribe([u.audio for u in utts])])
    assert hyps[0] == hyps[1]
    paths["binary"].unlink()
    assert lm_file(tmp_path) == paths["lm"]                                       # no binary: the ARPA
