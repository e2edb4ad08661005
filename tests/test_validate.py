"""A bad-input set generated from real AN4 speech: each kind gets its expected outcome through
`asr validate`, `asr prepare`, training and `asr transcribe`."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from asr.cli import main as asr_main
from asr.data import Utterance, read_manifest, write_manifest

SPEECH_TEXT = "ENTER SIX TWO FOUR"   # stands for the real utterance's transcript below


def _wav(path, samples, sr=16000, subtype="PCM_16"):
    sf.write(path, samples, sr, subtype=subtype)


@pytest.fixture(scope="module")
def bad_set(tmp_path_factory, an4_test_utts):
    """{kind: (path, transcript)} for 18 kinds of input, built from one real AN4 test utterance."""
    import torch

    from asr.audio import resample
    d = tmp_path_factory.mktemp("bad")
    speech_utt = next(u for u in an4_test_utts if 2.0 <= u.duration <= 3.5)
    speech = speech_utt.samples().numpy()                                   # (S,) float32, 16 kHz
    text = speech_utt.text
    _wav(d / "good.wav", speech)
    whole = (d / "good.wav").read_bytes()
    kinds = {}

    def add(kind, make, transcript=text):
        path = d / f"{kind}.wav"
        if make is not None:
            make(path)
        kinds[kind] = (path, transcript)

    add("good", lambda p: None)
    add("empty_file", lambda p: p.write_bytes(b""))
    add("truncated_header", lambda p: p.write_bytes(whole[:20]))
    add("not_audio", lambda p: p.write_bytes(b"this is not audio, whatever its name says\n" * 40))
    add("pcm8", lambda p: _wav(p, speech, subtype="PCM_U8"))
    add("pcm24", lambda p: _wav(p, speech, subtype="PCM_24"))
    add("stereo", lambda p: _wav(p, np.stack([speech, speech], axis=1)))
    add("rate8k", lambda p: _wav(p, resample(torch.from_numpy(speech), 16000, 8000).numpy(), 8000))
    add("rate48k", lambda p: _wav(p, resample(torch.from_numpy(speech), 16000, 48000).numpy(), 48000))
    add("one_sample", lambda p: _wav(p, speech[8000:8001]))
    add("silence_10min", lambda p: _wav(p, np.zeros(600 * 16000, dtype=np.float32)))
    add("clipped", lambda p: _wav(p, np.clip(speech * 30, -1, 1)))
    add("truncated_data", lambda p: p.write_bytes(whole[: len(whole) // 2]))
    add("nan_samples", lambda p: _wav(p, np.where(np.arange(speech.size) % 100 == 0, np.nan, speech).astype(np.float32),
                                      subtype="FLOAT"))
    add("missing_file", None)
    add("empty_transcript", lambda p: (d / "empty_transcript.wav").write_bytes(whole), "")
    add("unicode_transcript", lambda p: p.write_bytes(whole), "CAFÉ NOËL")
    add("oov_transcript", lambda p: p.write_bytes(whole), "ROOM #7 @ NOON")
    add("transcript_too_long", lambda p: _wav(p, speech[:8000]),
        "A VERY LONG TRANSCRIPT THAT HALF A SECOND COULD NEVER HOLD")
    return d, kinds, text


# kind -> (rejected?, words expected in the reason or note); `asr validate` normalises transcripts as training does
VALIDATE = {
    "good": (False, None), "pcm8": (False, None), "pcm24": (False, None), "truncated_data": (False, None),
    "empty_file": (True, "unreadable audio"), "truncated_header": (True, "unreadable audio"),
    "not_audio": (True, "unreadable audio"), "one_sample": (True, "too short"),
    "silence_10min": (True, "all silence"), "nan_samples": (True, "non-finite samples"),
    "missing_file": (True, "missing file"), "empty_transcript": (True, "empty transcript"),
    "unicode_transcript": (False, None),                            # normalised as training sees it: CAFE NOEL
    "oov_transcript": (False, "dropped by the text normalisation: '#@'"),   # ROOM SEVEN NOON
    "transcript_too_long": (True, "too short for its transcript"),
    "stereo": (False, "2 channels: downmixed"), "rate8k": (False, "sample rate 8000 Hz: resampled"),
    "rate48k": (False, "sample rate 48000 Hz: resampled"), "clipped": (False, "clipped"),
}


def test_every_kind_gets_its_outcome_from_validate(bad_set, tmp_path, capsys):
    d, kinds, _ = bad_set
    assert len(kinds) >= 15 and set(kinds) == set(VALIDATE)
    manifest = tmp_path / "all.jsonl"
    write_manifest(manifest, [Utterance(k, str(p), 2.0, t) for k, (p, t) in kinds.items()])
    with pytest.raises(SystemExit) as exit_:
        asr_main(["validate", str(manifest)])
    assert exit_.value.code == 1                                          # some entries cannot be used
    out = capsys.readouterr().out
    rejected = {r["id"]: r["reasons"] for r in map(json.loads, (tmp_path / "all.rejected.jsonl").open())}
    for kind, (fatal, words) in VALIDATE.items():
        assert (kind in rejected) == fatal, kind
        if words:
            line = next((x for x in out.splitlines() if f" {kind}: " in x and words in x), None)
            assert line is not None, f"{kind}: no line saying {words!r} in\n{out}"
            assert line.startswith("REJECT" if fatal else "note"), line
    assert "silence_10min" in rejected and any("too long: 600.0 s" in r for r in rejected["silence_10min"])
    assert f"{len(kinds)} entries: {len(kinds) - len(rejected)} usable, {len(rejected)} rejected" in out


def test_prepare_rejects_with_reasons_and_keeps_the_rest(bad_set, tmp_path, capsys):
    """Through `asr prepare csv`: transcripts are normalised first, so unicode and out-of-vocabulary
    characters are handled (CAFÉ -> CAFE, #7 -> SEVEN) instead of rejected."""
    d, kinds, _ = bad_set
    csv = tmp_path / "list.csv"
    csv.write_text("path,text\n" + "".join(f"{p},{t}\n" for p, t in kinds.values()))
    asr_main(["prepare", "csv", "--corpus", str(csv), "--out", str(tmp_path / "m")])
    out = capsys.readouterr().out
    kept = {u.id: u for u in read_manifest(tmp_path / "m" / "all.jsonl")}
    rejected = {r["id"]: r for r in map(json.loads, (tmp_path / "m" / "rejected.jsonl").open())}
    handled = {"unicode_transcript", "oov_transcript"}
    assert set(rejected) == {k for k, (fatal, _) in VALIDATE.items() if fatal} - handled
    assert set(kept) == set(kinds) - set(rejected)
    assert kept["unicode_transcript"].text == "CAFE NOEL" and kept["oov_transcript"].text == "ROOM SEVEN NOON"
    assert rejected["missing_file"]["reasons"] == ["missing file"]
    assert f"rejected: {len(rejected)} utterance(s)" in out


@pytest.mark.slow
def test_training_rejects_up_front_and_skips_what_it_cannot_read(bad_set, tmp_path, an4_dir):
    """A raw manifest of every kind trains: header, duration and transcript problems rejected before the
    first step (exp/rejected.jsonl), a file that fails only when decoded skipped and named mid-epoch."""
    d, kinds, _ = bad_set
    manifest = tmp_path / "all.jsonl"
    unreadable = ("missing_file", "empty_file", "not_audio", "truncated_header")
    utts = [Utterance(k, str(p), 2.0 if k in unreadable else sf.info(p).duration, t) for k, (p, t) in kinds.items()]
    write_manifest(manifest, utts)
    good = tmp_path / "good.jsonl"
    write_manifest(good, [u for u in utts if u.id in ("good", "pcm24", "stereo")])
    asr_main(["stats", "--manifest", str(good), "--out", str(tmp_path / "stats.json")])
    run = subprocess.run(
        [sys.executable, "-m", "asr.train", f"exp_dir={tmp_path / 'exp'}", f"train_manifest={manifest}",
         f"dev_manifest={good}", f"stats={tmp_path / 'stats.json'}", "epochs=1", "threads=1", "batch_frames=2000",
         "model.hidden=32", "model.conv_channels=32", "model.layers=1"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    rejected = {r["id"]: r["reasons"] for r in map(json.loads, (tmp_path / "exp" / "rejected.jsonl").open())}
    # training normalises transcripts as prepare does (unicode and #7 handled); its quick check (headers,
    # transcripts, durations) catches the rest but what only decoding reveals: NaN samples
    handled = {"unicode_transcript", "oov_transcript", "nan_samples"}
    assert set(rejected) == {k for k, (fatal, _) in VALIDATE.items() if fatal} - handled
    assert any("too long: 600.0 s" in r for r in rejected["silence_10min"])
    assert f"rejected {len(rejected)} of {len(kinds)} utterances" in run.stdout
    assert "skipping nan_samples" in run.stderr and "non-finite samples" in run.stderr
    assert (tmp_path / "exp" / "best.pt").exists()


def test_transcribe_goes_on_past_bad_files(bad_set, an4_model, capsys):
    d, kinds, text = bad_set
    order = list(kinds)
    with pytest.raises(SystemExit) as exit_:
        asr_main(["transcribe", "--model", str(an4_model), "--json", *[str(kinds[k][0]) for k in order]])
    assert "could not be transcribed" in str(exit_.value.code)          # non-zero: some files failed
    captured = capsys.readouterr()
    rows = {k: json.loads(line) for k, line in zip(order, captured.out.splitlines())}
    unreadable = {"empty_file", "truncated_header", "not_audio", "missing_file", "nan_samples"}
    for kind in order:
        row = rows[kind]
        assert row["path"] == str(kinds[kind][0])
        if kind in unreadable:
            assert str(kinds[kind][0]) in row["error"] and "text" not in row, row
            assert str(kinds[kind][0]) in captured.err
        else:
            assert "error" not in row and isinstance(row["text"], str), row
    for kind in ("good", "pcm24", "stereo", "rate48k"):                 # lossless to the model: the same words
        assert rows[kind]["text"] == rows["good"]["text"], kind
    assert rows["good"]["text"] and rows["silence_10min"]["text"] == ""
    assert rows["silence_10min"]["duration"] == 600.0
