"""Greedy and beam-search decoding (flashlight, with and without a KenLM word LM) on a real trained model."""
import json
from pathlib import Path

import pytest
import torch

import asr
from asr.audio import load_audio
from asr.cli import main as asr_main
from asr.decode import DecodingOptions
from asr.lm import build_lm
from asr.score import score
from asr.transcripts import format_srt


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory, five_utts):
    out = tmp_path_factory.mktemp("lm")
    build_lm([u.text for u in five_utts], out)
    return out


def test_beam_search_with_lm_and_lexicon_transcribes_the_trained_utterances(overfit_model, five_utts, lm_dir):
    path, _ = overfit_model
    for options in (DecodingOptions(method="beam", lm=str(lm_dir / "lm.arpa"), lexicon=str(lm_dir / "lexicon.txt")),
                    DecodingOptions(method="beam"),                         # lexicon-free, no LM
                    DecodingOptions(method="beam", threads=1, beam_size=5)):
        model = asr.load_model(path, options=options)
        assert [r.text for r in model.transcribe([u.audio for u in five_utts])] == [u.text for u in five_utts]


def test_lexicon_restricts_beam_search_to_its_words(overfit_model, five_utts, tmp_path):
    held_out = five_utts[0]
    build_lm([u.text for u in five_utts[1:]], tmp_path)
    known = {w for u in five_utts[1:] for w in u.text.split()}
    model = asr.load_model(overfit_model[0], options=DecodingOptions(
        method="beam", lm=str(tmp_path / "lm.arpa"), lexicon=str(tmp_path / "lexicon.txt")))
    greedy = asr.load_model(overfit_model[0]).transcribe(held_out.audio).text
    words = model.transcribe(held_out.audio).text.split()
    assert set(words) <= known and set(greedy.split()) - known               # greedy spelled words beam cannot


def test_word_times_move_with_the_audio(overfit_model, five_utts):
    """Half a second of faint noise before an utterance delays its last word by exactly that much
    (the tiny test model mangles the first words after the unfamiliar lead-in, so only the last is compared)."""
    model = asr.load_model(overfit_model[0])
    noise = torch.Generator().manual_seed(0)
    for u in five_utts:
        wave = load_audio(u.audio)
        alone = model.transcribe(wave)
        assert [w.text for w in alone.words] == u.text.split()
        starts = [w.start for w in alone.words]
        assert starts == sorted(starts)
        assert all(w.start < w.end <= alone.duration + model.frame_seconds for w in alone.words)
        assert all(0.3 < w.confidence <= 1.0 for w in alone.words)          # a model that knows these words
        later = model.transcribe(torch.cat([1e-4 * torch.randn(8000, generator=noise), wave])).words[-1]
        assert later.text == alone.words[-1].text
        assert abs(later.start - alone.words[-1].start - 0.5) < 1e-6
        assert abs(later.end - alone.words[-1].end - 0.5) < 1e-6
    beam = asr.load_model(overfit_model[0], options=DecodingOptions(method="beam"))
    greedy_words, beam_words = model.transcribe(five_utts[1].audio).words, beam.transcribe(five_utts[1].audio).words
    assert [(w.text, w.start) for w in beam_words] == [(w.text, w.start) for w in greedy_words]


def test_srt_cues_split_at_pauses_and_time_stamps(overfit_model, five_utts):
    from dataclasses import replace
    model = asr.load_model(overfit_model[0])
    first, second = model.transcribe(five_utts[0].audio), model.transcribe(five_utts[1].audio)
    shift = first.duration + 2.0                                          # as if 2 s of silence followed
    words = [*first.words, *(replace(w, start=w.start + shift, end=w.end + shift) for w in second.words)]
    cues = format_srt(words, pause=1.5).strip().split("\n\n")          # the model leaves up to ~1.2 s inside one
    assert len(cues) == 2                                                 # the 2 s pause splits them
    assert cues[0].splitlines()[2] == five_utts[0].text and cues[1].splitlines()[0] == "2"
    start, arrow, end = cues[0].splitlines()[1].split(" ")
    assert arrow == "-->" and start.startswith("00:00:0") and start[8] == ","
    assert len(format_srt(words, max_words=2).strip().split("\n\n")) >= len(words) // 2


def test_transcribe_cli_json_words_and_srt_files(overfit_model, five_utts, tmp_path, capsys):
    path, _ = overfit_model
    asr_main(["transcribe", "--model", str(path), "--json", five_utts[0].audio])
    row = json.loads(capsys.readouterr().out)
    assert [w["text"] for w in row["words"]] == five_utts[0].text.split()
    assert all(0 <= w["start"] < w["end"] <= row["duration"] + 0.1 for w in row["words"])
    asr_main(["transcribe", "--model", str(path), "--format", "srt", "--out-dir", str(tmp_path), five_utts[0].audio])
    srt = next(tmp_path.glob("*.srt")).read_text()
    cue_words = [w for cue in srt.strip().split("\n\n") for w in cue.splitlines()[2].split()]
    assert srt.startswith("1\n00:00:") and cue_words == five_utts[0].text.split()


def test_decode_tune_picks_weights_on_dev_and_decode_uses_them(overfit_model, five_utts, lm_dir, tmp_path, capsys):
    from asr.data import write_manifest
    path, _ = overfit_model
    manifest = tmp_path / "five.jsonl"
    write_manifest(manifest, five_utts)
    asr_main(["tune", "--model", str(path), "--manifest", str(manifest), "--lm-dir", str(lm_dir),
              "--out", str(tmp_path / "decoding.json")])
    saved = json.loads((tmp_path / "decoding.json").read_text())
    assert saved["options"]["method"] == "beam" and saved["options"]["lm"].endswith("lm.bin")  # binary preferred
    assert len(saved["grid"]) == 1 + 5 * 7 and saved["grid"][0]["lm_weight"] is None
    assert min(r["wer"] for r in saved["grid"][1:]) == 0.0
    asr_main(["decode", "--model", str(path), "--manifest", str(manifest), "--out", str(tmp_path / "dec"),
              "--decoding", str(tmp_path / "decoding.json")])
    assert "(beam)" in capsys.readouterr().out
    from asr.decode import decoding_label, load_decoding
    assert load_decoding(tmp_path / "dec" / "decoding.json") == load_decoding(tmp_path / "decoding.json")
    assert decoding_label(tmp_path / "dec") == "beam + LM"           # what the score line and report.html say
    hyps = [line.split("\t")[1] for line in (tmp_path / "dec" / "hyp.txt").read_text().splitlines()]
    assert score([u.text for u in five_utts], hyps).wer.rate == 0.0


def test_lm_without_lexicon_is_refused():
    with pytest.raises(ValueError, match="needs a lexicon"):
        DecodingOptions(method="beam", lm="x.arpa")


def test_beam_search_in_worker_processes_matches_one_process(an4_model, an4_test_utts, tmp_path):
    """Flashlight holds the GIL, so parallel beam search runs in processes: same paths as one process."""
    from dataclasses import replace

    from asr.decode import BeamSearch

    build_lm([u.text for u in an4_test_utts], tmp_path)
    model = asr.load_model(an4_model)
    outputs = [model.log_probs([load_audio(u.audio)]) for u in an4_test_utts[:16]]
    lengths = torch.cat([n for _, n in outputs])                        # (N,)
    log_probs = torch.zeros(len(outputs), int(lengths.max()), 29)       # (N, T', V)
    for i, (lp, n) in enumerate(outputs):
        log_probs[i, :n[0]] = lp[0, :n[0]]
    for options in (DecodingOptions(method="beam"),
                    DecodingOptions(method="beam", lm=str(tmp_path / "lm.arpa"),
                                    lexicon=str(tmp_path / "lexicon.txt"))):
        one = BeamSearch(replace(options, threads=1), model.vocab)(log_probs, lengths)
        two = BeamSearch(replace(options, threads=2), model.vocab)
        assert two(log_probs, lengths) == one and two._pool is not None  # the worker processes did it
        assert any(p.ids for p in one)


def test_transcribe_writes_whispers_formats_and_vtt(overfit_model, five_utts, tmp_path, capsys):
    """--format txt | json | srt | vtt | tsv with --out-dir: one file per input, the same words and times in each."""
    path, _ = overfit_model
    audio = [five_utts[0].audio, five_utts[1].audio]
    result = asr.load_model(path).transcribe(audio[0])
    for fmt in ("txt", "json", "srt", "vtt", "tsv"):
        asr_main(["transcribe", "--model", str(path), "--format", fmt, "--out-dir", str(tmp_path / fmt), *audio])
        assert sorted(p.suffix for p in (tmp_path / fmt).iterdir()) == [f".{fmt}"] * 2
    stem = Path(audio[0]).stem
    assert (tmp_path / "txt" / f"{stem}.txt").read_text() == five_utts[0].text + "\n"
    assert json.loads((tmp_path / "json" / f"{stem}.json").read_text())["text"] == five_utts[0].text
    vtt = (tmp_path / "vtt" / f"{stem}.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n00:00:") and vtt.splitlines()[2][8] == "."          # 00:00:00.120 --> ...
    assert vtt.split("\n\n")[1:] == [c.split("\n", 1)[1].replace(",", ".")
                                    for c in (tmp_path / "srt" / f"{stem}.srt").read_text().split("\n\n")[:-1]] + [""]
    tsv = (tmp_path / "tsv" / f"{stem}.tsv").read_text().splitlines()
    assert tsv[0] == "start\tend\ttext" and int(tsv[1].split("\t")[0]) == round(result.words[0].start * 1000)
    assert " ".join(line.split("\t")[2] for line in tsv[1:]) == five_utts[0].text
    capsys.readouterr()
    asr_main(["transcribe", "--model", str(path), "--format", "text", audio[0]])          # the old name still works
    assert capsys.readouterr().out == f"{audio[0]}\t{five_utts[0].text}\n"
