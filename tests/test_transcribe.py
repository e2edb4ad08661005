import json
import subprocess
import sys

import pytest
import soundfile as sf

import asr
from asr.audio import AudioError, load_audio


def test_batched_equals_one_by_one(overfit_model, an4_test_utts, five_utts):
    model = asr.load_model(overfit_model[0])
    paths = [u.audio for u in five_utts] + [u.audio for u in an4_test_utts[:40]]  # 0.7 s to 6 s
    batched = model.transcribe(paths)
    alone = [model.transcribe(p) for p in paths]
    assert [r.text for r in batched] == [r.text for r in alone]
    assert [r.path for r in batched] == paths
    assert any(r.text for r in batched[5:])      # the model does emit text on unseen audio


def test_array_and_file_inputs_agree(overfit_model, five_utts, tmp_path):
    model = asr.load_model(overfit_model[0])
    u = five_utts[0]
    wave = load_audio(u.audio)
    flac = tmp_path / "u.flac"
    sf.write(flac, wave.numpy(), 16000)
    assert model.transcribe(wave).text == model.transcribe(flac).text == u.text
    assert model.transcribe(wave.numpy()).path is None


def test_bad_audio_path_names_the_file(overfit_model, tmp_path):
    model = asr.load_model(overfit_model[0])
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        model.transcribe(tmp_path / "missing.wav")


def _asr(*args):
    return subprocess.run([sys.executable, "-m", "asr.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_transcribe_text_and_json(overfit_model, five_utts):
    paths = [u.audio for u in five_utts[:2]]
    out = _asr("transcribe", "--model", overfit_model[0], *paths)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{u.audio}\t{u.text}" for u in five_utts[:2]]
    out = _asr("transcribe", "--json", "--model", overfit_model[0], *paths)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == [u.text for u in five_utts[:2]]
    assert rows[0]["path"] == paths[0] and rows[0]["duration"] == pytest.approx(five_utts[0].duration, abs=0.01)


def test_cli_bad_file_exits_nonzero_naming_it(overfit_model, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....garbage")
    out = _asr("transcribe", "--model", overfit_model[0], bad)
    assert out.returncode != 0 and "broken.wav" in out.stderr and "Traceback" not in out.stderr


def test_two_minutes_of_test_speech_score_as_its_utterances_do(an4_model, an4_test_utts):
    """AN4 test utterances joined by short silences into a 2-minute file: cut at its pauses, it is
    transcribed as well as the same utterances one by one (within a point of WER)."""
    import random

    import torch

    from asr.audio import load_audio
    from asr.score import score

    rng = random.Random(0)
    pieces, chosen, seconds = [], [], 0.0
    for u in an4_test_utts:
        wave, gap = load_audio(u.audio), torch.zeros(int(rng.uniform(0.3, 0.6) * 16000))
        pieces += [wave, gap]
        chosen.append(u)
        seconds += (wave.shape[0] + gap.shape[0]) / 16000
        if seconds >= 120:
            break
    model = asr.load_model(an4_model)
    refs = [u.text for u in chosen]
    per_utt = score(refs, [r.text for r in model.transcribe([u.audio for u in chosen])])
    long = model.with_options(chunk_seconds=20.0).transcribe(torch.cat(pieces))
    joined = score([" ".join(refs)], [long.text])
    assert long.duration >= 120
    assert abs(joined.wer.rate - per_utt.wer.rate) <= 1.0, (joined.summary(), per_utt.summary())
    assert per_utt.wer.rate < 20                                          # a model that transcribes AN4
    starts = [w.start for w in long.words]
    assert starts == sorted(starts) and long.words[-1].end <= long.duration + 0.05


def test_overlapping_chunks_join_into_the_frames_of_one_pass(an4_model, an4_test_utts):
    """40 s of speech in 10 s windows with 2 s of context each side (the window path, below the pause cutting):
    the joined frames are as many as one pass gives, and against the references the seams add no
    duplicated or dropped words (WER, insertions and deletions as one pass's, within one)."""
    import torch

    from asr.audio import load_audio
    from asr.decode import greedy_decode
    from asr.score import score

    model = asr.load_model(an4_model).with_options(chunk_seconds=10.0, chunk_overlap=2.0)
    waves, refs, seconds = [], [], 0.0
    for u in an4_test_utts:
        w = load_audio(u.audio)
        waves.append(w)
        refs.append(u.text)
        seconds += w.shape[0] / 16000
        if seconds > 40:
            break
    wave = torch.cat(waves)
    one_pass, n = model._forward([wave])                                 # (1, T', V)
    chunked, m = model.log_probs([wave])                                 # via 10 s windows
    assert torch.equal(n, m)
    agree = (one_pass.argmax(-1) == chunked.argmax(-1)).float().mean().item()
    assert agree > 0.97, agree
    ref = " ".join(refs)
    whole = score([ref], greedy_decode(one_pass, n, model.vocab)).wer
    joined = score([ref], greedy_decode(chunked, m, model.vocab)).wer
    assert abs(joined.rate - whole.rate) <= 1.5, (whole, joined)
    assert joined.ins <= whole.ins + 1 and joined.dels <= whole.dels + 1, (whole, joined)
