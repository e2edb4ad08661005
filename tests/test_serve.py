"""asr serve: a real uvicorn server on a loopback port, called by the official openai client, raw HTTP,
a WebSocket client and (where installed) headless Chromium."""
from __future__ import annotations

import contextlib
import http.client
import io
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import asr
from asr.audio import SAMPLE_RATE
from asr.serve import ServeOptions, Server
from asr.transcripts import format_srt, format_vtt

openai = pytest.importorskip("openai")


@contextlib.contextmanager
def running(server: Server):
    """`server` on uvicorn in a background thread, on a free loopback port: yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(server.app, log_level="error", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):
        if uv.started:
            break
        time.sleep(0.01)
    assert uv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()


def wav_bytes(samples: torch.Tensor | np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    out = io.BytesIO()
    sf.write(out, np.asarray(samples, dtype=np.float32), sr, format="WAV", subtype="PCM_16")
    return out.getvalue()


def post(url: str, fields: dict[str, str], files: dict[str, tuple[str, bytes]] | None = None,
         headers: dict | None = None) -> tuple[int, dict | str]:
    """A raw multipart POST to /v1/audio/transcriptions: (status, JSON body or text)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    for name, (filename, data) in (files or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return request(url, "POST", "/v1/audio/transcriptions", body,
                   {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})})


def request(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body, headers or {})
    r = conn.getresponse()
    data = r.read().decode()
    conn.close()
    is_json = r.getheader("content-type", "").startswith("application/json")
    return r.status, json.loads(data) if is_json else data


def assert_openai_error(status: int, body, expected: int, param: str | None = None) -> None:
    assert status == expected, body
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"], body
    if param:
        assert body["error"]["param"] == param


@pytest.fixture(scope="module")
def an4_transcriber(an4_model):
    return asr.load_model(an4_model)


@pytest.fixture(scope="module")
def an4_url(an4_transcriber):
    """The AN4 model served with small limits (1 MB uploads, 8 s of audio) and a 0.2 s batching window."""
    options = ServeOptions(model_name="an4-bigru", max_batch=16, batch_window=0.2, max_upload_bytes=1024 ** 2,
                           max_audio_seconds=8.0)
    with running(Server(an4_transcriber, options)) as url:
        yield url


@pytest.fixture(scope="module")
def client(an4_url):
    return openai.OpenAI(base_url=an4_url + "/v1", api_key="unused", max_retries=0)


def test_openai_client_every_response_format(client, an4_transcriber, an4_test_utts):
    u = an4_test_utts[0]
    expected = an4_transcriber.transcribe(u.audio)
    assert expected.text
    create = lambda **kw: client.audio.transcriptions.create(model="whisper-1", file=Path(u.audio), **kw)
    assert create().text == expected.text
    assert create(response_format="json", language="en").text == expected.text
    assert create(response_format="text").strip() == expected.text
    assert create(response_format="srt") == format_srt(expected.words)
    assert create(response_format="vtt") == format_vtt(expected.words)
    verbose = create(response_format="verbose_json", timestamp_granularities=["word"])
    assert verbose.text == expected.text and verbose.duration == pytest.approx(expected.duration, abs=1e-3)
    assert [w.word for w in verbose.words] == [w.text for w in expected.words]
    assert [(w.start, w.end) for w in verbose.words] == [(round(w.start, 3), round(w.end, 3)) for w in expected.words]
    assert " ".join(s.text for s in verbose.segments) == expected.text
    assert verbose.segments[0].start == verbose.words[0].start
    assert create(response_format="verbose_json").words is None         # segments only, as OpenAI by default
    assert [m.id for m in client.models.list()] == ["an4-bigru"]


def test_prompt_and_hotwords_steer_the_search_and_nbest_lists_alternatives(an4_url, client, an4_transcriber,
                                                                           an4_test_utts):
    """OpenAI's `prompt` becomes hotwords (its pieces between punctuation), as does our `hotwords` field; `nbest`
    lists alternatives in verbose_json; each as transcribe() with those options gives it; bad values get 400."""
    from asr.hotwords import prompt_hotwords

    u = an4_test_utts[3]
    prompt = "Rubout, enter; PITTSBURGH"
    create = lambda **kw: client.audio.transcriptions.create(model="whisper-1", file=Path(u.audio), **kw)
    steered = an4_transcriber.with_options(hotwords=tuple(prompt_hotwords(prompt)), nbest=3).transcribe(u.audio)
    assert prompt_hotwords(prompt) == ["Rubout", "enter", "PITTSBURGH"]
    verbose = create(response_format="verbose_json", prompt=prompt, extra_body={"nbest": 3})
    assert verbose.text == steered.text
    assert [a["text"] for a in verbose.model_extra["alternatives"]] == [a.text for a in steered.alternatives]
    assert verbose.model_extra["alternatives"][0]["text"] == verbose.text
    data = Path(u.audio).read_bytes()
    status, body = post(an4_url, {"hotwords": "RUBOUT:2,ENTER", "response_format": "json"}, {"file": ("a.sph", data)})
    assert status == 200 and body["text"] == an4_transcriber.with_options(
        hotwords=("RUBOUT:2", "ENTER")).transcribe(u.audio).text
    for fields, param in [({"nbest": "0"}, "nbest"), ({"nbest": "many"}, "nbest"),
                          ({"hotwords": ",".join(f"W{i}" for i in range(101))}, "hotwords")]:
        status, body = post(an4_url, fields, {"file": ("a.sph", data)})
        assert_openai_error(status, body, 400, param)
    assert create().text == an4_transcriber.transcribe(u.audio).text            # the server's own options after


def test_concurrent_requests_are_batched_and_each_equals_transcribe_alone(an4_url, client, an4_transcriber,
                                                                          an4_test_utts):
    batches_before = metric(an4_url, "asr_batch_size_count")
    assert_all_at_once_equal_alone(client, an4_transcriber, an4_test_utts[1:17])
    batches = metric(an4_url, "asr_batch_size_count") - batches_before
    assert 1 <= batches <= 4, f"16 concurrent requests took {batches} batches"   # decoded together, not one by one


def assert_all_at_once_equal_alone(client, transcriber, utts) -> None:
    """`utts` posted at once by the openai client (verbose_json, word times): each answer is what
    `transcriber.transcribe()` gives that file alone."""
    alone = [transcriber.transcribe(u.audio) for u in utts]                  # one at a time
    with ThreadPoolExecutor(len(utts)) as pool:
        got = list(pool.map(lambda u: client.audio.transcriptions.create(
            model="whisper-1", file=Path(u.audio), response_format="verbose_json",
            timestamp_granularities=["word"]), utts))
    for g, e in zip(got, alone):
        assert g.text == e.text
        assert [(w.word, w.start, w.end) for w in g.words] == [(w.text, round(w.start, 3), round(w.end, 3))
                                                               for w in e.words]


def metric(url: str, name: str, labels: str = "") -> float:
    _, text = request(url, "GET", "/metrics")
    lines = [line for line in text.splitlines() if line.startswith(name + (labels or " "))]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_bad_uploads_get_openai_errors_and_the_server_goes_on(an4_url, client, an4_transcriber, an4_test_utts):
    u = an4_test_utts[0]
    good = wav_bytes(u.samples())
    expected = an4_transcriber.transcribe(u.audio).text
    long = wav_bytes(torch.cat([u.samples()] * 3))                         # 12 s: over the 8 s cap
    cases = [
        ({"model": "whisper-1"}, {"file": ("a.wav", b"this is not audio at all " * 40)}, 400, "file"),
        ({"model": "whisper-1"}, {"file": ("a.wav", b"")}, 400, "file"),
        ({"model": "whisper-1"}, {"file": ("a.wav", good[:len(good) // 2])}, 400, "file"),   # truncated WAV
        ({"model": "whisper-1"}, {"file": ("a.wav", good[:30])}, 400, "file"),                # cut in the header
        ({"model": "whisper-1"}, {"file": ("a.wav", b"\0" * (1024 ** 2 + 1))}, 413, "file"),  # over the cap
        ({"model": "whisper-1"}, {"file": ("a.wav", long)}, 413, "file"),                     # too many seconds
        ({"model": "whisper-1"}, None, 400, "file"),                                          # no file field
        ({"model": "whisper-1", "file": "/etc/passwd"}, None, 400, "file"),                   # a path, not bytes
        ({"model": "whisper-1", "response_format": "mp3"}, {"file": ("a.wav", good)}, 400, "response_format"),
    ]
    for fields, files, status, param in cases:
        code, body = post(an4_url, fields, files)
        assert_openai_error(code, body, status, param)
        assert post(an4_url, {"model": "whisper-1"}, {"file": ("a.wav", good)})[1]["text"] == expected
    assert "truncated WAV" in post(an4_url, {}, {"file": ("a.wav", good[:len(good) // 2])})[1]["error"]["message"]
    code, body = post(an4_url, {}, {"file": ("../../../../etc/passwd", good)})    # the name is never a path
    assert code == 200 and body["text"] == expected
    assert_openai_error(*request(an4_url, "POST", "/v1/audio/transcriptions", b"{}",
                                 {"Content-Type": "application/json"}), 400)
    assert_openai_error(*request(an4_url, "GET", "/v1/nothing"), 404)
    with pytest.raises(openai.BadRequestError) as e:                         # the client reads our errors
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"not audio"))
    assert "could not decode audio" in e.value.message
    assert metric(an4_url, "asr_requests_total", '{path="/v1/audio/transcriptions",status="413"}') >= 2


def test_the_servers_warm_up_makes_the_one_input_graph_before_the_first_request(an4_model):
    """`asr serve` warms its model up before it listens: the checkpoint backend's graph is made by then (where the
    compiled loops run), so no request waits for the trace."""
    from asr.native import compiled_loop
    from asr.serve.app import warm_up

    transcriber = asr.load_model(an4_model)
    warm_up(transcriber)
    assert (transcriber.backend.__dict__.get("_graph") is not None) == (compiled_loop() is not None)


def test_health_and_metrics(an4_url, client, an4_test_utts):
    client.audio.transcriptions.create(model="whisper-1", file=Path(an4_test_utts[0].audio))
    code, health = request(an4_url, "GET", "/health")
    assert code == 200 and health["status"] == "ok" and health["model"] == "an4-bigru"
    assert health["streaming"] == "redecode" and health["sample_rate"] == SAMPLE_RATE   # a bidirectional model
    assert health["precision"] == "fp32"                               # the default
    _, text = request(an4_url, "GET", "/metrics")
    for name in ('asr_requests_total{path="/v1/audio/transcriptions",status="200"}', "asr_request_seconds_bucket",
                 "asr_audio_seconds_total", "asr_batch_size_bucket", "asr_queue_depth"):
        assert name in text
    assert metric(an4_url, "asr_audio_seconds_total") >= an4_test_utts[0].duration - 0.01


class SlowTranscriber:
    """A Transcriber whose model takes `delay` seconds more per batch (to fill the queue, time out): the server's
    model workers run a batch's forward passes through transcribe_later."""

    def __init__(self, transcriber, delay: float):
        self.t, self.delay = transcriber, delay

    def __getattr__(self, name):
        return getattr(self.t, name)

    def transcribe_later(self, audio):
        time.sleep(self.delay)
        return self.t.transcribe_later(audio)


class OverlapTranscriber(SlowTranscriber):
    """A Transcriber that records each batch's size and the most batches it ran at once."""

    def __init__(self, transcriber, delay: float):
        super().__init__(transcriber, delay)
        self.lock, self.running, self.most, self.sizes = threading.Lock(), 0, 0, []

    def transcribe_later(self, audio):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.sizes.append(len(audio))
        try:
            return super().transcribe_later(audio)
        finally:
            with self.lock:
                self.running -= 1


def test_two_model_workers_share_concurrent_requests_and_each_equals_transcribe_alone(an4_transcriber,
                                                                                      an4_test_utts):
    """With model_workers=2, 16 requests at once are split between two batches computed side by side
    (not one batch of 16 beside an idle worker), and each answer is what transcribe() gives alone."""
    model = OverlapTranscriber(an4_transcriber, 0.3)
    options = ServeOptions(max_batch=16, batch_window=0.5, model_workers=2)
    with running(Server(model, options)) as url:
        assert request(url, "GET", "/health")[1]["workers"] == 2
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert_all_at_once_equal_alone(client, an4_transcriber, an4_test_utts[1:17])
    assert sum(model.sizes) == 16 and model.most == 2, model.sizes      # two batches computed at once
    assert max(model.sizes) <= 8 and len(model.sizes) <= 6, model.sizes  # shared out, and still batched
    with pytest.raises(ValueError, match="model_workers"):
        Server(an4_transcriber, ServeOptions(model_workers=0))


def test_queue_cap_timeout_key_and_a_free_event_loop(an4_transcriber, an4_test_utts, monkeypatch):
    options = ServeOptions(api_key="s3cret", max_queue=1, batch_window=0.0, request_timeout=1.0)
    good = {"file": ("a.wav", wav_bytes(an4_test_utts[0].samples()))}
    auth = {"Authorization": "Bearer s3cret"}
    with running(Server(SlowTranscriber(an4_transcriber, 1.5), options)) as url, ThreadPoolExecutor(2) as pool:
        assert_openai_error(*post(url, {}, good), 401)
        assert_openai_error(*post(url, {}, good, {"Authorization": "Bearer wrong"}), 401)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        first = pool.submit(post, url, {}, good, auth)
        time.sleep(0.3)                                                    # the first is in the model thread
        started = time.perf_counter()
        assert request(url, "GET", "/health")[0] == 200                    # the event loop is not blocked
        assert time.perf_counter() - started < 1.0                     # while the model sleeps 1.5 s
        assert_openai_error(*post(url, {}, good, auth), 503)               # the queue (1) is full
        assert_openai_error(*first.result(), 504)                          # 1.5 s of model > the 1 s timeout
        time.sleep(0.6)                                                    # the slow batch ends
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        with pytest.raises(InvalidStatus):                                 # the WebSocket wants the key too
            connect(url.replace("http", "ws") + "/v1/audio/stream")
        with connect(url.replace("http", "ws") + "/v1/audio/stream?api_key=s3cret&max_utterance=x") as ws:
            assert "max_utterance must be a number" in json.loads(ws.recv())["error"]["message"]
        assert [m.id for m in openai.OpenAI(base_url=url + "/v1", api_key="s3cret").models.list()] == ["asr"]

    from asr.cli import build_parser
    from asr.cli.serve import serve_options

    monkeypatch.setenv("ASR_API_KEY", "from-env")
    args = build_parser().parse_args(["serve", "--model", "m/best.pt"])
    assert serve_options(args).host == "127.0.0.1"                         # this machine only, by default
    assert serve_options(args).api_key == "from-env" and serve_options(args).model_name == "best"
    assert serve_options(build_parser().parse_args(["serve", "--model", "m", "--api-key", "k"])).api_key == "k"


class BrokenTranscriber(SlowTranscriber):
    def transcribe_later(self, audio):
        raise RuntimeError("the model fell over")


class BrokenDecoding(SlowTranscriber):
    def transcribe_later(self, audio):
        self.t.transcribe_later(audio)

        def decode():
            raise RuntimeError("the decoder fell over")
        return decode


@pytest.mark.parametrize("broken, says", [(BrokenTranscriber, "the model fell over"),
                                          (BrokenDecoding, "the decoder fell over")])
def test_a_failing_model_answers_500_and_the_server_goes_on(broken, says, an4_transcriber, an4_test_utts):
    """A failure in a batch's forward passes (the model worker) or in its decoding (the decoder thread)."""
    good = {"file": ("a.wav", wav_bytes(an4_test_utts[0].samples()))}
    with running(Server(broken(an4_transcriber, 0.0))) as url:
        for _ in range(2):
            code, body = post(url, {}, good)
            assert_openai_error(code, body, 500)
            assert says in body["error"]["message"] and body["error"]["type"] == "server_error"
        assert request(url, "GET", "/health")[0] == 200


@pytest.fixture(scope="module")
def uni_model(tmp_path_factory) -> Path:
    """A random unidirectional GRU (untrained: its transcripts are garbage, but deterministic)."""
    from asr.checkpoint import save_checkpoint
    from asr.features import FeatureConfig, FeatureExtractor
    from asr.model import AcousticModel, ModelConfig
    from asr.tokens import Vocabulary

    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(cell="gru", bidirectional=False, lookahead=2, hidden=48, conv_channels=48,
                                      layers=2, dropout=0.0)).eval()
    extractor = FeatureExtractor(FeatureConfig(), torch.randn(80), torch.rand(80) + 0.5)
    path = tmp_path_factory.mktemp("uni") / "uni.pt"
    save_checkpoint(path, model, extractor, Vocabulary())
    return path


def two_utterances(five_utts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two real utterances with 2 s of silence between them: (the whole, the first, the second)."""
    first, second = five_utts[1].samples(), five_utts[2].samples()
    return torch.cat([first, torch.zeros(2 * SAMPLE_RATE), second]), first, second


def talk(ws, wave: torch.Tensor) -> tuple[list[dict], list[dict]]:
    """Send `wave` in 100 ms messages (each answered by a partial, after any finals), then {"type": "end"}:
    (the messages before the end, those after it)."""
    before, after = [], []
    for i in range(0, wave.shape[0], 1600):
        ws.send(wave[i:i + 1600].numpy().astype("<f4").tobytes())
        while (m := json.loads(ws.recv()))["type"] != "partial":
            before.append(m)
        before.append(m)
    ws.send(json.dumps({"type": "end"}))
    while (m := json.loads(ws.recv()))["type"] != "end":
        after.append(m)
    return before, [*after, m]


@pytest.mark.parametrize("kind", ["frames", "redecode"])
def test_websocket_ends_utterances_on_silence_and_gives_the_whole_at_the_end(kind, stream_model, an4_transcriber,
                                                                              five_utts):
    """Any model streams: a unidirectional one frame by frame (its partials those of stream()), a bidirectional
    one re-decoded. Two utterances with a pause: the first's final comes by itself, in the pause; the second's
    at the end, then the whole transcript."""
    from websockets.sync.client import connect

    model = asr.load_model(stream_model) if kind == "frames" else an4_transcriber
    wave, first, second = two_utterances(five_utts)
    local = model.stream()
    expected_partials = [local.feed(wave[i:i + 1600]).text for i in range(0, wave.shape[0], 1600)]
    whole = local.finish()
    with running(Server(model)) as url:
        assert request(url, "GET", "/health")[1]["streaming"] == kind
        with connect(url.replace("http", "ws") + "/v1/audio/stream") as ws:
            before, after = talk(ws, wave)
        with connect(url.replace("http", "ws") + "/v1/audio/stream?encoding=s16&endpoints=off") as ws:
            ws.send((wave.numpy() * 32767).astype("<i2").tobytes())        # int16 PCM, rules off: one utterance
            assert json.loads(ws.recv())["type"] == "partial"
            ws.send("end")
            messages = [json.loads(ws.recv()), json.loads(ws.recv())]
            assert [m["type"] for m in messages] == ["final", "end"] and messages[0]["text"] == messages[1]["text"]
    finals = [m for m in before + after if m["type"] == "final"]
    assert [f["text"] for f in finals] == [u.transcript.text for u in local.utterances] and len(finals) == 2
    assert all(f["text"] for f in finals) and after[-1]["text"]                 # words, not agreeing silence
    assert finals[0]["text"] == model.transcribe(first).text
    assert [m for m in before if m["type"] == "final"] == finals[:1]             # the first by itself
    assert first.shape[0] / SAMPLE_RATE <= finals[1]["start"] and finals[0]["end"] <= finals[1]["start"]
    assert [m["text"] for m in before if m["type"] == "partial"] == expected_partials
    assert after[-1]["text"] == whole.text and [w["word"] for w in after[-1]["words"]] == [w.text for w in whole.words]


def test_an_onnx_export_serves_files_and_streams(uni_model, an4_test_utts, tmp_path):
    """Any model load_model reads: the same routes on an `asr export` ONNX file (onnxruntime)."""
    from websockets.sync.client import connect

    from asr.cli import main as asr_main

    asr_main(["export", "--model", str(uni_model), "--out", str(tmp_path / "uni.onnx")])
    model = asr.load_model(tmp_path / "uni.onnx")
    u = an4_test_utts[2]
    expected = model.transcribe(u.audio)
    with running(Server(model, ServeOptions(model_name="uni-onnx"))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert client.audio.transcriptions.create(model="whisper-1", file=Path(u.audio)).text == expected.text
        with connect(url.replace("http", "ws") + "/v1/audio/stream?endpoints=off") as ws:   # one utterance
            before, after = talk(ws, u.samples())
            assert after[-1]["text"] == model.transcribe(u.samples()).text


def test_bench_client_keeps_its_connection_and_reconnects(an4_url, an4_test_utts):
    """`asr bench serve`'s client: one connection for many requests, as HTTP clients keep them; a kept-alive
    connection the server closed while it idled is replaced before use, not failed on (counted: what left 27
    requests of a 30-minute soak unanswered before); a request whose kept-alive connection fails before any reply
    is sent once more on a new one (counted); with keepalive=False,
    a new connection for every request; a server that is not there is a 0."""
    from asr.bench.serve import Client, _form

    port = int(an4_url.rsplit(":", 1)[1])
    body, headers = _form("a.wav", wav_bytes(an4_test_utts[0].samples()))
    kept = Client(port)
    assert kept.post(body, headers) == 200
    conn = kept.conn
    assert kept.post(body, headers) == 200 and kept.conn is conn                  # the same connection
    conn.sock.close()                                                               # the connection drops
    assert kept.post(body, headers) == 200 and kept.conn is not conn and kept.retried == 1   # sent again
    assert kept.post(body, headers) == 200 and kept.retried == 1
    conn = kept.conn
    time.sleep(5.5)                                                # idle past uvicorn's 5 s: the server closes it
    assert kept.post(body, headers) == 200 and kept.conn is not conn and (kept.stale, kept.retried) == (1, 1)
    once = Client(port, keepalive=False)
    assert once.post(body, headers) == 200 and once.conn is None
    assert once.post(b"not a form", headers) == 400 and once.conn is None
    kept.close()
    from asr.bench.serve import _free_port

    nobody = Client(_free_port())
    assert nobody.post(body, headers) == 0 and nobody.conn is None and nobody.retried == 0   # refused, no retry


def test_page_is_served(an4_url):
    code, page = request(an4_url, "GET", "/")
    assert code == 200 and "/v1/audio/stream" in page and "/v1/audio/transcriptions" in page


@pytest.mark.parametrize("kind", ["frames", "redecode"])
def test_page_in_headless_chromium_shows_each_utterance_as_a_line(kind, stream_model, an4_transcriber, five_utts,
                                                                  tmp_path, monkeypatch):
    """Chromium's fake capture device plays two real utterances with 2 s of silence between them into the
    page's microphone; the page streams them over the WebSocket and, with no `end` until the recording stops,
    shows each utterance as a line of its own as the server ends it, then the whole transcript: what the server
    made of the audio it received (Chrome resamples the file on its way). For a streaming (frames) and a
    bidirectional (redecode) model."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (make install installs it)")
    from asr.stream import RedecodingTranscriber, StreamingTranscriber

    received: list[torch.Tensor] = []
    cls = StreamingTranscriber if kind == "frames" else RedecodingTranscriber
    feed = cls.feed
    monkeypatch.setattr(cls, "feed", lambda self, s: (received.append(torch.as_tensor(s)), feed(self, s))[1])
    wave, _, _ = two_utterances(five_utts)
    clip = tmp_path / "clip.wav"
    sf.write(clip, wave.numpy(), SAMPLE_RATE, subtype="PCM_16")
    model = asr.load_model(stream_model) if kind == "frames" else an4_transcriber
    seconds = wave.shape[0] / SAMPLE_RATE
    with running(Server(model)) as url:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                 f"--user-data-dir={tmp_path / 'profile'}", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={clip}%noloop",
                 "--autoplay-policy=no-user-gesture-required"]
        log = tmp_path / "chromium.log"                  # a file, not a pipe: Chromium logs a lot and must not block
        chrome = subprocess.Popen([browser, *flags, "about:blank"], stderr=log.open("w"))
        try:
            shown = page_value(chrome, log, f"{url}/?record={seconds + 1:.1f}",
                               "document.body.dataset.done ? {lines: [...document.querySelectorAll('#lines > div')]"
                               ".map(d => d.textContent), whole: document.getElementById('final').textContent, "
                               "mode: document.getElementById('mode').textContent} : null", seconds + 40)
        finally:
            chrome.kill()
            chrome.wait()
    heard = sum(r.shape[0] for r in received) / SAMPLE_RATE
    assert heard >= 0.8 * seconds, f"the server received {heard:.2f} s of a {seconds:.2f} s file"
    monkeypatch.undo()                                 # feed() unrecorded again: the same chunks, replayed here
    local = model.stream()
    for chunk in received:
        local.feed(chunk)
    whole = local.finish()
    assert shown["lines"] == [u.transcript.text for u in local.utterances] and len(shown["lines"]) == 2
    assert shown["whole"] == whole.text and kind[:5] in shown["mode"].replace("-", "")


def page_value(chrome: subprocess.Popen, log: Path, url: str, expression: str, timeout: float):
    """Open `url` in a running Chromium over the DevTools protocol and return the value of `expression` there
    once it is not null (the page says when it is ready)."""
    import re
    import urllib.request

    from websockets.sync.client import connect

    port, started = None, time.monotonic()
    while port is None:                                   # "DevTools listening on ws://127.0.0.1:PORT/devtools/..."
        assert chrome.poll() is None and time.monotonic() - started < 30, log.read_text()[-2000:]
        port = (m := re.search(r"DevTools listening on ws://[^:/]+:(\d+)/", log.read_text())) and m.group(1)
        time.sleep(0.1)
    new = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?{url}", method="PUT")
    with urllib.request.urlopen(new, timeout=10) as r:
        target = json.loads(r.read())["webSocketDebuggerUrl"]
    deadline = time.monotonic() + timeout
    with connect(target, max_size=None) as ws:
        for k in range(1, 100_000):
            ws.send(json.dumps({"id": k, "method": "Runtime.evaluate",
                                "params": {"expression": expression, "returnByValue": True}}))
            while (reply := json.loads(ws.recv(timeout=10))).get("id") != k:
                pass                                      # events, not our answer
            value = reply.get("result", {}).get("result", {}).get("value")
            if value is not None:
                return value
            assert time.monotonic() < deadline, f"the page did not give {expression[:60]}... in time"
            time.sleep(0.3)
    raise AssertionError("unreachable")


def test_bench_serve_runs_asr_serve_under_load(an4_model, an4_test_utts, tmp_path):
    """`asr bench serve` (small): `asr serve` subprocesses, one request at a time, two at a time unbatched, then
    batched on two workers, no errors; the servers take the bench's --model-threads and --precision."""
    from asr.cli import main as asr_main
    from asr.data import write_manifest

    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, an4_test_utts[:3])
    asr_main(["bench", "serve", "--model", str(an4_model), "--manifest", str(manifest), "--clients", "3",
              "--seconds", "2", "--rounds", "2", "--model-threads", "1", "--model-workers", "2",
              "--precision", "bf16", "--out", str(tmp_path / "rows.json")])
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["max_batch"] for r in rows] == [1, 1, 16] and all(r["keepalive"] for r in rows)
    assert [r["workers"] for r in rows] == [1, 2, 2]                   # one at a time, two at a time, batched
    assert [r["threads"] for r in rows] == [1, 1, 1]                   # the server took --model-threads
    assert [r["precision"] for r in rows] == ["bf16"] * 3              # ... and --precision
    for r in rows:
        assert r["requests"] > 0 and r["errors"] == 0 and r["audio_per_second"] > 0
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] and r["server_peak_mb"] > 0
    assert rows[0]["mean_batch"] == 1.0 and rows[2]["mean_batch"] > 1.0    # the batched row batched


def test_an_upload_past_the_duration_limit_is_refused_within_bounded_memory(an4_transcriber, an4_test_utts):
    """Six hours of silence in 1 MB of FLAC: refused 413 from its header without decoding, or (its length left
    unknown, as a streaming encoder writes it) as soon as decoding passes the limit; four at once too. The
    server's resident memory, sampled throughout, rises by a bounded amount, not by six hours of samples
    (1.4 GB as float32)."""
    from test_audio import silent_flac

    declared, unknown = silent_flac(6), silent_flac(6, declared=False)
    good = wav_bytes(an4_test_utts[0].samples())
    page = 4096
    rss = lambda: int(Path("/proc/self/statm").read_text().split()[1]) * page
    with running(Server(an4_transcriber, ServeOptions(max_audio_seconds=600.0))) as url:
        assert post(url, {}, {"file": ("a.wav", good)})[0] == 200          # warm: the model and the decoders
        start, peak, done = rss(), [0], threading.Event()

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], rss())
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        t0 = time.perf_counter()
        code, body = post(url, {}, {"file": ("silence.flac", declared)})
        declared_seconds = time.perf_counter() - t0
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: post(url, {}, {"file": ("silence.flac", unknown)}), range(4)))
        done.set()
        watcher.join()
        assert_openai_error(code, body, 413, "file")
        assert body["error"]["message"] == "the audio lasts 21600.0 s; this server takes at most 600 s"
        for code, body in answers:
            assert_openai_error(code, body, 413, "file")
            assert body["error"]["message"] == "the audio lasts more than 600 s; this server takes at most 600 s"
        rise = (peak[0] - start) / 2 ** 20
        assert rise < 100, f"the server's memory rose by {rise:.0f} MB"
        assert declared_seconds < 2.0                                       # nothing decoded
        assert post(url, {}, {"file": ("a.wav", good)})[0] == 200          # and it goes on
