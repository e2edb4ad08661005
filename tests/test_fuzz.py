"""Property-based fuzzing (hypothesis) of what users and clients hand us: audio bytes of every format, manifests
(ours, NeMo's, Kaldi data dirs), transcript files for `asr score`, config overrides, multipart uploads. Each
input, however mangled, ends in a result or in a clear error naming it: never a traceback, a hang or a 5xx.
Real files seed every strategy; the examples are bounded and derandomised (the same ones every run), so the
suite stays fast and a failure reproduces."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr.audio import SAMPLE_RATE, AudioError, load_audio_bytes
from asr.cli import main as asr_main
from asr.config import ConfigError, TrainConfig, load_config

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@st.composite
def mutated(draw, seeds: dict[str, bytes]) -> tuple[str, bytes]:
    """A seed (by name) with up to six mutations: bytes flipped, zeroed, cut out or inserted, or the end cut
    off; positions favour the first 4 KB, where headers say how to read the rest."""
    name = draw(st.sampled_from(sorted(seeds)))
    data = bytearray(seeds[name])
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        near = draw(st.booleans())
        pos = draw(st.integers(0, min(len(data), 4096) - 1 if near else len(data) - 1))
        kind = draw(st.sampled_from(["flip", "zero", "cut", "insert", "truncate"]))
        if kind == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "zero":
            data[pos:pos + draw(st.integers(1, 64))] = bytes(min(64, len(data) - pos))[:len(data[pos:pos + 64])]
        elif kind == "cut":
            del data[pos:pos + draw(st.integers(1, 512))]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[pos:]
    return name, bytes(data)


def _call(argv: list[str]) -> None:
    """An `asr` command: it returns or exits with one line naming the problem (run_command); anything else
    (a traceback) fails the test."""
    try:
        asr_main(argv)
    except SystemExit as e:
        assert e.code in (0, 1, 2) or (isinstance(e.code, str) and e.code.startswith("asr ")), e.code


# -- audio bytes

@pytest.fixture(scope="module")
def audio_seeds(an4_test_utts, tmp_path_factory) -> dict[str, bytes]:
    """One real utterance as each format a user may upload: AN4's own SPHERE, WAV, FLAC, Ogg Vorbis, MP3 and
    (through PyAV, as browsers and phones write them) WebM / Opus and M4A / AAC."""
    from test_audio import _encode

    u = an4_test_utts[0]
    wave = u.samples().numpy()
    seeds = {".sph": Path(u.audio).read_bytes()}
    for suffix, fmt, subtype in ((".wav", "WAV", "PCM_16"), (".flac", "FLAC", "PCM_16"), (".ogg", "OGG", "VORBIS"),
                                 (".mp3", "MP3", "MPEG_LAYER_III")):
        out = io.BytesIO()
        sf.write(out, wave, SAMPLE_RATE, format=fmt, subtype=subtype)
        seeds[suffix] = out.getvalue()
    d = tmp_path_factory.mktemp("fuzz_audio")
    pyav = {".webm": ("libopus", 48000, "webm"), ".m4a": ("aac", 16000, "mp4")}
    for suffix, (codec, rate, container) in pyav.items():
        _encode(d / f"seed{suffix}", wave, codec, rate, container)
        seeds[suffix] = (d / f"seed{suffix}").read_bytes()
    for suffix, data in seeds.items():                               # every seed reads before it is mangled
        assert load_audio_bytes(data, suffix=suffix).shape[0] > SAMPLE_RATE, suffix
    return seeds


@FUZZ
@given(data=st.data())
def test_mangled_audio_of_every_format_decodes_or_is_refused_by_name(audio_seeds, data):
    suffix, blob = data.draw(mutated(audio_seeds))
    try:
        wave = load_audio_bytes(blob, name="the upload", suffix=suffix, max_seconds=60)
    except AudioError as e:
        assert str(e).startswith("the upload: "), str(e)
        return
    assert wave.dtype == torch.float32 and wave.dim() == 1 and bool(torch.isfinite(wave).all())
    assert wave.shape[0] <= 60 * SAMPLE_RATE + SAMPLE_RATE


# -- manifests: ours, NeMo's, Kaldi data dirs

TEXT_EDITS = st.lists(st.tuples(st.sampled_from(["delete", "insert", "replace"]), st.integers(0, 10 ** 6),
                                st.text(max_size=12)), min_size=1, max_size=4)


def _edit(text: str, edits) -> str:
    for kind, pos, piece in edits:
        pos = pos % (len(text) + 1)
        if kind == "delete":
            text = text[:pos] + text[pos + len(piece) + 1:]
        elif kind == "insert":
            text = text[:pos] + piece + text[pos:]
        else:
            text = text[:pos] + piece + text[pos + len(piece):]
    return text


@pytest.fixture(scope="module")
def manifest_seeds(an4_test_utts) -> dict[str, str]:
    ours = "".join(json.dumps({"id": u.id, "audio": u.audio, "duration": u.duration, "text": u.text}) + "\n"
                   for u in an4_test_utts[:3])
    nemo = "".join(json.dumps({"audio_filepath": u.audio, "duration": u.duration, "text": u.text.lower(),
                               "offset": 0.1}) + "\n" for u in an4_test_utts[3:6])
    return {"ours": ours, "nemo": nemo}


@FUZZ
@given(which=st.sampled_from(["ours", "nemo"]), edits=TEXT_EDITS)
def test_mangled_manifests_validate_or_are_refused_by_name(manifest_seeds, tmp_path_factory, which, edits):
    path = tmp_path_factory.mktemp("fuzz_manifest") / f"{which}.jsonl"
    path.write_text(_edit(manifest_seeds[which], edits), encoding="utf-8")
    _call(["validate", str(path), "--quick", "--rejected", str(path.with_suffix(".rejected.jsonl"))])


@FUZZ
@given(part=st.sampled_from(["wav.scp", "text", "utt2spk", "segments"]), edits=TEXT_EDITS)
def test_mangled_kaldi_dirs_import_or_are_refused_by_name(an4_test_utts, tmp_path_factory, part, edits):
    d = tmp_path_factory.mktemp("fuzz_kaldi")
    utts = an4_test_utts[:3]
    files = {"wav.scp": "".join(f"rec{i} {u.audio}\n" for i, u in enumerate(utts)),
             "text": "".join(f"utt{i} {u.text}\n" for i, u in enumerate(utts)),
             "utt2spk": "".join(f"utt{i} spk{i}\n" for i in range(len(utts))),
             "segments": "".join(f"utt{i} rec{i} 0.00 {u.duration - 0.1:.2f}\n" for i, u in enumerate(utts))}
    files[part] = _edit(files[part], edits)
    for name, text in files.items():
        (d / name).write_text(text, encoding="utf-8")
    _call(["kaldi-import", "--dir", str(d), "--out", str(d / "out.jsonl")])


# -- transcript files for asr score

@FUZZ
@given(fmt=st.sampled_from(["kaldi", "trn", "tsv", "jsonl"]), side=st.sampled_from(["ref", "hyp"]), edits=TEXT_EDITS)
def test_mangled_transcript_files_score_or_are_refused_by_name(tmp_path_factory, fmt, side, edits):
    pairs = [("a1", "HELLO THERE"), ("a2", "TWO SEVEN NINE"), ("a3", "é 中文 ok")]
    render = {"kaldi": lambda i, t: f"{i} {t}\n", "trn": lambda i, t: f"{t} ({i})\n",
              "tsv": lambda i, t: f"{i}\t{t}\n", "jsonl": lambda i, t: json.dumps({"id": i, "text": t}) + "\n"}[fmt]
    d = tmp_path_factory.mktemp("fuzz_score")
    texts = {"ref": "".join(render(i, t) for i, t in pairs), "hyp": "".join(render(i, t[::-1]) for i, t in pairs)}
    texts[side] = _edit(texts[side], edits)
    suffix = {"kaldi": ".txt", "trn": ".trn", "tsv": ".tsv", "jsonl": ".jsonl"}[fmt]
    for name, text in texts.items():
        (d / f"{name}{suffix}").write_text(text, encoding="utf-8")
    _call(["score", str(d / f"ref{suffix}"), str(d / f"hyp{suffix}"), "--out", str(d / "out")])


# -- config overrides

KEYS = ["epochs", "lr", "batch_frames", "speed_perturb", "noise_snr", "time_budget", "tokens", "threads", "precision",
        "select_by", "freeze", "model.hidden", "model.cell", "model.layers", "model.time_stride", "model.conv_kernel",
        "model.front_end", "model.dropout", "features.kind", "features.n_mels", "text.case", "text.charset",
        "augment.time_masks", "nonsense", "model.nonsense", "model", ""]
# floats without subnormals: training in the same worker flushes them to zero (asr.train), which hypothesis refuses
VALUES = st.one_of(st.integers(-10 ** 6, 10 ** 6).map(str), st.floats(allow_subnormal=False).map(str),
                   st.text(max_size=16), st.sampled_from(["[]", "[1, 2", "{a: 1}", "null", "true", "[0.9, x]", "-",
                                                          "1e999", "gru", "lstm", "conv2d", "'", "\"", ":"]))


@FUZZ
@given(overrides=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=4))
def test_any_override_gives_a_config_or_an_error_naming_it(overrides):
    try:
        cfg = load_config(TrainConfig, None, [f"{k}={v}" for k, v in overrides])
    except (ConfigError, ValueError) as e:
        assert str(e), overrides
        return
    assert isinstance(cfg, TrainConfig)


# -- multipart uploads to the server

@pytest.fixture(scope="module")
def served(an4_model, an4_test_utts):
    from test_serve import running, wav_bytes

    import asr
    from asr.serve import ServeOptions, Server

    good = wav_bytes(an4_test_utts[0].samples())
    with running(Server(asr.load_model(an4_model), ServeOptions(max_upload_bytes=1024 ** 2,
                                                                 max_audio_seconds=30.0))) as url:
        yield url, good


@st.composite
def multipart(draw, good: bytes) -> tuple[bytes, str]:
    """A well-formed upload (file, model, response_format, language), then mangled as bytes."""
    boundary = "b0undary"
    fields = {"model": "whisper-1", "response_format": draw(st.sampled_from(["json", "text", "srt", "verbose_json"]))}
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                 f"Content-Type: audio/wav\r\n\r\n".encode() + good + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    _, body = draw(mutated({"body": body}))
    content_type = draw(st.sampled_from([f"multipart/form-data; boundary={boundary}", "multipart/form-data",
                                         "multipart/form-data; boundary=other", "application/json", ""]))
    return body, content_type


@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_mangled_multipart_uploads_get_2xx_or_4xx_and_the_server_goes_on(served, data):
    from test_serve import request

    url, good = served
    body, content_type = data.draw(multipart(good))
    status, answer = request(url, "POST", "/v1/audio/transcriptions", body,
                             {"Content-Type": content_type} if content_type else {})
    assert status < 500, (status, answer)
    assert request(url, "GET", "/health")[0] == 200

