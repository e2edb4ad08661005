"""Any language, any script: Unicode normalisation per recipe, the alphabet learned from the data, Common Voice
as published, scripts written without spaces, and a real (short) training run on Persian clips whose output
goes through everything downstream: words and times, subtitles, LM beam search, sherpa-onnx, the server."""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

import asr
from asr.cli import main as asr_main
from asr.data import read_manifest, read_text_config
from asr.score import score
from asr.text import TextConfig, detect_text_config, learn_alphabet, normalize_text, outside_alphabet
from asr.tokens import BPEVocabulary, Vocabulary, train_bpe, vocabulary_from_state

FIXTURES = Path(__file__).parent / "fixtures"
PERSIAN = TextConfig(charset="data", case="lower", language="fa")


def arabic_script(text: str) -> bool:
    """Every character of `text` is a letter or mark of the Arabic script (Persian's), a space or a ZWNJ."""
    return all(c in " \u200c" or "ARABIC" in unicodedata.name(c, "") for c in text)


def test_english_normalisation_is_unchanged_on_every_an4_and_vctk_transcript(an4_dir):
    """English keeps, to the character, what normalize_text gave before any other language could be trained
    (tests/fixtures/english_normalised.tsv, made by that code): AN4's numbers cannot move."""
    from asr.corpora.an4 import read_split

    rows = [line.split("\t") for line in (FIXTURES / "english_normalised.tsv").read_text(encoding="utf-8").splitlines()
            if not line.startswith("#")]
    assert len(rows) == 948 + 130 + 503
    changed = [(uid, raw, was, normalize_text(raw)) for uid, raw, was in rows if normalize_text(raw) != was]
    assert changed == []
    prepared = {u.id: u.text for split in ("train", "test") for u in read_split(an4_dir, split)}
    assert {uid: was for uid, _, was in rows if not uid.startswith("vctk-")} == prepared
    assert TextConfig().alphabet == Vocabulary().chars                       # and English's 28 characters


@pytest.mark.parametrize("raw, text, expected", [
    # Persian: NFKC, bidi marks dropped, ZWNJ kept inside a word, Arabic yeh / kaf unified to Persian's, Persian
    # digits read out in Persian, Arabic punctuation removed
    ("\u200fمی\u200cخواهم ۱۲ كتاب بخرم؟\u200e", PERSIAN, "می\u200cخواهم دوازده کتاب بخرم"),
    ("سلام، دنیا!", PERSIAN, "سلام دنیا"),
    # Latin scripts with diacritics and letters of their own: kept (ł is not an accented l), case folded
    ("Zażółć gęślą jaźń", TextConfig(charset="data", case="lower", language="pl"), "zażółć gęślą jaźń"),
    ("Tie\u0302\u0301ng Vie\u0323\u0302t có dấu", TextConfig(charset="data", case="lower", language="vi"),
     "tiếng việt có dấu"),                                                   # decomposed input, NFC output
    ("Ẹ kú àárọ̀, ọ̀rẹ́ mi!", TextConfig(charset="data", case="lower", language="yo"), "ẹ kú àárọ̀ ọ̀rẹ́ mi"),
    ("Zażółć gęślą jaźń", TextConfig(charset="data", case="upper", accents="strip", language="pl"),
     "ZAZOŁC GESLA JAZN"),                                                   # strip, when asked: ł has no accent
    # Cyrillic: case folding, numbers read out in Russian
    ("Привет, мир! Ёжик 2024 года.", TextConfig(charset="data", case="lower", language="ru"),
     "привет мир ёжик две тысячи двадцать четыре года"),
    # Chinese: no spaces, characters are the words; num2words has no Chinese: digits stay
    ("我用 iPhone 拍了 3 张照片。", TextConfig(charset="data", case="lower", language="zh", word_unit="char"),
     "我用iphone拍了3张照片"),
    # a language nobody named: the digits stay digits
    ("Straße 5", TextConfig(charset="data", case="keep", language=""), "Straße 5"),
])
def test_normalisation_in_other_scripts(raw, text, expected):
    assert normalize_text(raw, text) == expected
    assert normalize_text(expected, text) == expected                      # idempotent


def test_the_alphabet_is_learned_from_the_data_and_rare_characters_are_mapped_or_named():
    from collections import Counter

    texts = [normalize_text(t, PERSIAN) for t in ["سلام دنیا", "سلام", "دنیا سلام", "دنیای ما", "ما سلامیم", "ژاله"]]
    alphabet, rare = learn_alphabet(texts, min_count=3)
    counts = Counter("".join(texts).replace(" ", ""))
    assert alphabet[0] == " " and set(alphabet[1:]) == {c for c, n in counts.items() if n >= 3}
    assert rare == {c: n for c, n in counts.items() if n < 3} == {"ژ": 1, "ه": 1}
    learned = PERSIAN.with_alphabet_of(texts)
    assert learned.alphabet == alphabet and learned.with_alphabet_of(["x"]) is learned
    latin = TextConfig(charset="data", case="lower", language="")
    learned = latin.with_alphabet_of(["cafe", "cafe", "cafe", "face", "face", "face"])
    assert normalize_text("Café", learned) == "cafe"                        # é, never seen: its letter
    assert normalize_text("café x", learned) == "cafe x" and outside_alphabet("cafe x", learned) == "x"
    with pytest.raises(ValueError, match="learned from the training transcripts"):
        _ = latin.alphabet


def test_validate_names_characters_too_rare_to_learn(tmp_path, persian_prepared):
    """A training manifest with a character its alphabet lacks: asr validate rejects that utterance, saying why."""
    utts = read_manifest(persian_prepared / "train.jsonl")[:20]
    from dataclasses import replace

    from asr.data import write_manifest

    bad = [replace(utts[0], id="rare", text=utts[0].text + " ژژ x")] + utts[1:]
    write_manifest(tmp_path / "train.jsonl", bad)
    (tmp_path / "text.json").write_text((persian_prepared / "text.json").read_text())
    with pytest.raises(SystemExit):
        asr_main(["validate", str(tmp_path / "train.jsonl"), "--quick"])
    rejected = [json.loads(line) for line in (tmp_path / "train.rejected.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejected] == ["rare"]
    assert "too rare in the training transcripts" in rejected[0]["reasons"][0] and "x" in rejected[0]["reasons"][0]


def test_the_text_config_is_detected_from_the_transcripts_when_nobody_says():
    english = ["HELLO WORLD", "it's 5 o'clock", "the quick brown fox jumps over the lazy dog"] * 10 + ["a café"]
    assert detect_text_config(english) == TextConfig()               # English's: a loanword's accent is stripped
    assert detect_text_config(["le café est très bon", "où est la gare"]).charset == "data"       # French is not
    fa = detect_text_config(["سلام دنیا", "کتاب خوب"])
    assert fa.charset == "data" and fa.language == "" and fa.word_unit == "word"
    zh = detect_text_config(["今天天气很好", "我们去公园散步吧", "你好世界欢迎你"])
    assert zh.charset == "data" and zh.word_unit == "char"


def test_bpe_pieces_in_persian_and_in_a_script_of_thousands_of_characters(tmp_path):
    texts = [normalize_text(t, PERSIAN) for t in ["کتاب خوب است", "خوب است", "کتاب های خوب", "است و بود"] * 20]
    bpe = train_bpe(texts, 30, tmp_path / "fa.model")
    ids = bpe.encode("کتاب خوب")
    assert bpe.decode(ids) == "کتاب خوب" and [bpe.decode(ids[s:e]) for s, e in bpe.word_spans(ids)] == ["کتاب", "خوب"]
    han = "".join(chr(0x4E00 + i) for i in range(800))                     # more characters than LARGE_SCRIPT
    big = train_bpe([han[i:i + 20] for i in range(0, 800, 7)] * 3, 1100, tmp_path / "zh.model")
    rare = "\u9fa0\u9fa1"                                                  # never seen: UTF-8 bytes, back whole
    assert big.decode(big.encode(han[:5] + rare)) == han[:5] + rare
    assert vocabulary_from_state(big.state()) == big and isinstance(big, BPEVocabulary)


def test_scoring_a_script_written_without_spaces(tmp_path):
    """Characters are the words: the WER counts characters, and CER is the headline (first line)."""
    s = score(["今天天气很好", "你好"], ["今天天很好", "你好"], unit="char")
    assert s.wer.total == 8 and s.wer.errors == 1 and s.cer.rate == s.headline.rate == pytest.approx(12.5)
    assert s.summary().splitlines()[0].startswith("%CER 12.50")
    assert score(["今天天气很好"], ["今天天很好"]).wer.rate == 100.0           # as words: one word, wrong
    (tmp_path / "ref").write_text("a 今天天气很好\nb 你好\n", encoding="utf-8")
    (tmp_path / "hyp").write_text("a 今天 天很好\nb 你好\n", encoding="utf-8")
    (tmp_path / "c.yaml").write_text("text: {charset: data, case: lower, language: zh, word_unit: char}\n")
    asr_main(["score", str(tmp_path / "ref"), str(tmp_path / "hyp"), "--config", str(tmp_path / "c.yaml")])
    assert (tmp_path / "wer.txt").read_text(encoding="utf-8").startswith("%CER 12.50 [ 1 / 8")


def test_characters_are_words_in_a_vocabulary_without_spaces(tmp_path):
    """word_unit char: each character a word (word times, lexicon spellings with no boundary, LM over characters),
    text joined without spaces; the checkpoint's vocabulary keeps it."""
    from asr.lm import build_lm

    vocab = Vocabulary((" ", *"今天天气很好你"), "char")
    ids = vocab.encode("今天天气")
    assert vocab.word_spans(ids) == [(0, 1), (1, 2), (2, 3), (3, 4)] and vocab.separator == ""
    assert vocab.spell("气") == "气" and vocab.boundary_token is None
    assert vocabulary_from_state(vocab.state()) == vocab and Vocabulary().state() == {"kind": "chars",
                                                                                     "chars": list(Vocabulary().chars)}
    build_lm(["今天天气很好", "你好"], tmp_path, order=2, word_unit="char")
    assert (tmp_path / "corpus.txt").read_text(encoding="utf-8").splitlines() == ["今 天 天 气 很 好", "你 好"]


def test_common_voice_is_read_as_published_and_split_by_speaker(persian_prepared, persian_dir):
    splits = {name: read_manifest(persian_prepared / f"{name}.jsonl") for name in ("train", "dev", "test")}
    assert sum(map(len, splits.values())) == 83 + 2102                       # validated + other, none rejected
    speakers = {name: {u.speaker for u in us} for name, us in splits.items()}
    assert not speakers["train"] & speakers["dev"] and not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"] and len(speakers["test"]) >= 5
    assert all(u.text and arabic_script(u.text) for us in splits.values() for u in us)
    text = read_text_config(persian_prepared / "train.jsonl")
    assert text.language == "fa" and text.charset == "data" and 30 <= len(text.learned) <= 60
    assert all(arabic_script(c) for c in text.learned)
    from asr.corpora.custom import source_kind

    assert source_kind(persian_dir) == "commonvoice"


def test_a_release_with_its_own_split_keeps_it(persian_dir, tmp_path):
    """A Common Voice release with train / dev / test.tsv: those, as they are (here made from real clips)."""
    release = tmp_path / "cv-corpus-0.0" / "fa"
    (release / "clips").mkdir(parents=True)
    rows = (persian_dir / "validated.tsv").read_text(encoding="utf-8").splitlines()
    header, rows = rows[0], rows[1:31]
    for i, name in enumerate(("train", "dev", "test")):
        (release / f"{name}.tsv").write_text("\n".join([header, *rows[i * 10:(i + 1) * 10]]) + "\n", encoding="utf-8")
    (release / "validated.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    for row in rows:
        clip = row.split("\t")[1]
        (release / "clips" / clip).symlink_to(persian_dir / "clips" / clip)
    asr_main(["prepare", "custom", "--corpus", str(release), "--out", str(tmp_path / "out")])
    rejected = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "rejected.jsonl").read_text().splitlines())}
    for i, name in enumerate(("train", "dev", "test")):
        ids = [u.id for u in read_manifest(tmp_path / "out" / f"{name}.jsonl")]
        listed = [Path(r.split("\t")[1]).stem for r in rows[i * 10:(i + 1) * 10]]
        assert ids == [uid for uid in listed if uid not in rejected]
    # ten training sentences teach few characters three times: a sentence with a rarer one is not trained on
    assert all(r["split"] == "train" and "too rare" in r["reasons"][0] for r in rejected.values())
    config = (tmp_path / "out" / "config.yaml").read_text(encoding="utf-8")
    assert 'language: "fa"' in config and 'charset: "data"' in config      # the config later stages train with


def test_a_short_persian_training_run_learns_persian_script(persian_model):
    exp, utts = persian_model
    model = asr.load_model(exp / "last.pt")
    log = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.6 * log[0]["loss"]                           # the loss falls
    assert log[-1]["dev_cer"] < 95
    results = model.transcribe([u.audio for u in utts])
    assert sum(bool(r.text) for r in results) >= 7
    assert all(arabic_script(r.text) for r in results)                      # Persian script out
    assert model.vocab.chars == read_text_config(exp / "ten.jsonl").learned          # prepare's, in the checkpoint
    for r in results:
        assert [w.text for w in r.words] == r.text.split()
        assert all(0 <= w.start <= w.end <= r.duration + 0.05 for w in r.words)


@pytest.fixture(scope="module")
def persian(fa_model, persian_prepared):
    """The commonvoice recipe's Persian model, and 40 of the prepared test clips (speakers it never heard)."""
    return fa_model, read_manifest(persian_prepared / "test.jsonl")[:40], asr.load_model(fa_model)


def test_persian_output_in_every_transcript_form(persian, tmp_path):
    from asr.transcripts import get_writer, read_transcripts, render, write_transcripts

    _, utts, model = persian
    result = next(r for r in model.transcribe([u.audio for u in utts]) if " " in r.text)
    cues = [block.splitlines()[-1] for block in render(result, "srt").strip().split("\n\n")]
    assert " ".join(cues) == result.text and all(c in render(result, "vtt") for c in cues)
    assert json.loads(render(result, "json"))["text"] == result.text
    assert result.text in get_writer("json", tmp_path)(result).read_text(encoding="utf-8")   # UTF-8, not \\u escapes
    written = write_transcripts(tmp_path / "hyp.txt", {"u1": result.text})
    assert read_transcripts(written) == {"u1": result.text}


def test_lm_beam_search_over_persian_words(persian, tmp_path, persian_prepared):
    from asr.decode import DecodingOptions
    from asr.lm import build_lm

    _, utts, model = persian
    paths = build_lm([u.text for u in read_manifest(persian_prepared / "train.jsonl")], tmp_path / "lm")
    lexicon = (tmp_path / "lm" / "lexicon.txt").read_text(encoding="utf-8").splitlines()
    assert len(lexicon) > 1000 and all(arabic_script(line.split("\t")[0]) for line in lexicon)
    beam = model.with_options(method="beam", lm=str(paths["lm"]), lexicon=str(paths["lexicon"]), lm_weight=3.0,
                              word_score=2.0)                              # the recipe's weights, tuned on dev
    assert isinstance(beam.options, DecodingOptions)
    words = {line.split("\t")[0] for line in lexicon}
    hyps = [r.text for r in beam.transcribe([u.audio for u in utts])]
    assert all(w in words for h in hyps for w in h.split())                  # lexicon words, in Persian
    greedy = [r.text for r in model.transcribe([u.audio for u in utts])]
    refs = [u.text for u in utts]
    assert score(refs, hyps).wer.rate < score(refs, greedy).wer.rate - 5      # the LM puts words right


def test_sherpa_onnx_decodes_our_persian_export_as_we_do(persian, tmp_path):
    from asr.export import sherpa_recognizer, sherpa_transcribe

    path, utts, model = persian
    asr_main(["export", "--model", str(path), "--format", "sherpa-onnx", "--out", str(tmp_path / "s")])
    tokens = [line.rsplit(" ", 1)[0] for line in (tmp_path / "s" / "tokens.txt").read_text("utf-8").splitlines()]
    assert tokens[:2] == ["<blk>", "\u2581"] and all(arabic_script(t) for t in tokens[2:])
    ours = [r.text for r in model.transcribe([u.audio for u in utts])]
    theirs = sherpa_transcribe(sherpa_recognizer(tmp_path / "s"), [u.samples() for u in utts])
    assert sum(a == b for a, b in zip(ours, theirs)) >= 38 and sum(" " in t for t in ours) >= 20   # (224 of 224)
    asr_main(["export", "--model", str(path), "--out", str(tmp_path / "fa.onnx")])
    onnx = asr.load_model(tmp_path / "fa.onnx")                            # the ONNX metadata carries the alphabet
    assert onnx.vocab == model.vocab and [r.text for r in onnx.transcribe([u.audio for u in utts])] == ours


def test_the_server_answers_in_persian(persian):
    """The server's JSON: Persian text as it is (the official client reads it back)."""
    openai = pytest.importorskip("openai")
    from test_serve import running

    from asr.serve import ServeOptions, Server

    _, utts, model = persian
    u = next(u for u, r in zip(utts, model.transcribe([u.audio for u in utts])) if " " in r.text)
    expected = model.transcribe(u.audio)
    with running(Server(model, ServeOptions(model_name="fa"))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        r = client.audio.transcriptions.create(model="fa", file=Path(u.audio), response_format="verbose_json",
                                               timestamp_granularities=["word"])
    assert r.text == expected.text and [w.word for w in r.words] == [w.text for w in expected.words]
    assert " ".join(s.text for s in r.segments) == expected.text


def test_the_page_shows_right_to_left_text_the_right_way_round(persian, tmp_path):
    """Headless Chromium on the server's page: a Persian transcript in the page's text elements is laid out
    right to left (their direction follows their text), an English one left to right."""
    import shutil
    import subprocess

    from test_serve import page_value, running

    from asr.serve import Server

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (make install installs it)")
    _, _, model = persian
    check = ("document.getElementById('model').textContent === '…' ? null : "
             "Object.fromEntries(['file-text', 'final', 'partial'].map(id => {{"
             "const e = document.getElementById(id); e.textContent = {text!r};"
             "return [id, getComputedStyle(e).direction]; }}))")
    with running(Server(model)) as url:
        log = tmp_path / "chromium.log"
        chrome = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                                   f"--user-data-dir={tmp_path / 'profile'}", "about:blank"], stderr=log.open("w"))
        try:
            persian_dirs = page_value(chrome, log, url + "/", check.format(text="سلام دنیا"), 30)
            english_dirs = page_value(chrome, log, url + "/", check.format(text="HELLO WORLD"), 30)
        finally:
            chrome.kill()
            chrome.wait()
    assert persian_dirs == {"file-text": "rtl", "final": "rtl", "partial": "rtl"}
    assert english_dirs == {"file-text": "ltr", "final": "ltr", "partial": "ltr"}
