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
    rows = [json.loads(l) for l in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == [u.text for u in five_utts[:2]]
    assert rows[0]["path"] == paths[0] and rows[0]["duration"] == pytest.approx(five_utts[0].duration, abs=0.01)


def test_cli_bad_file_exits_nonzero_naming_it(overfit_model, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....garbage")
    out = _asr("transcribe", "--model", overfit_model[0], bad)
    assert out.returncode != 0 and "broken.wav" in out.stderr and "Traceback" not in out.stderr
