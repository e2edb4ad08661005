"""An OpenAI-compatible transcription server: any model `asr.load_model` reads, behind a URL.

    asr serve --model data/an4/exp/cpu/best.pt [--decoding D] [--host 127.0.0.1] [--port 8000]
    curl http://127.0.0.1:8000/v1/audio/transcriptions -F file=@a.wav -F model=whisper-1

    from openai import OpenAI                                   # the official client, unchanged
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.audio.transcriptions.create(model="whisper-1", file=open("a.wav", "rb")).text

Routes: `POST /v1/audio/transcriptions` (multipart `file`, `model` (any name), `response_format` json |
text | srt | vtt | verbose_json, `timestamp_granularities[]` word / segment, `language` accepted, `prompt`
taken as hotwords: its pieces between punctuation; and two fields of our own: `hotwords` (comma-separated
`PHRASE` or `PHRASE:BOOST`, asr.hotwords) and `nbest` (verbose_json then lists `alternatives`)),
`GET /v1/models`, `WS /v1/audio/stream` (any model: 16 kHz PCM in, partial transcripts and each utterance's
final out, asr/serve/stream.py), `GET /` (a page: microphone and file upload), `GET /health`, `GET /metrics`
(Prometheus). Errors are OpenAI's JSON error objects.

Requests that arrive within `batch_window` seconds of each other are decoded as one batch (at most
`max_batch`) by `Transcriber.transcribe([...])` in a model thread, so the event loop keeps accepting
while the model computes. `model_workers` threads each run a batch at once (each on `--model-threads`
torch threads); what is waiting is shared out between them, so on two cores two batches of 8 run side
by side instead of one of 16 while the other core idles (asr/serve/batch.py). Uploads are decoded from
their own bytes (a temporary file, never a path the request names) in a small pool of threads. The
WebSocket route is asr/serve/stream.py. `asr bench serve` (asr/bench/serve.py) loads it with concurrent
clients on loopback.
"""
from __future__ import annotations

import asyncio
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import torch

from ..hotwords import prompt_hotwords
from ..transcribe import Transcriber
from .batch import Batcher
from .openai_api import RESPONSE_FORMATS, ApiError, decode_upload, render
from .options import ServeOptions
from .stream import StreamRoute

PAGE = "page.html"           # the page GET / serves: package data beside this module (pyproject.toml)
FORM_OVERHEAD = 64 * 1024      # bytes of multipart headers and text fields allowed beside the file itself


class Metrics:
    """The server's Prometheus instruments, in a registry of its own (several servers in one process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("asr_requests", "HTTP requests answered", ["path", "status"], registry=r)
        self.latency = Histogram("asr_request_seconds", "time from request to answer", ["path"], registry=r,
                                 buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120))
        self.audio = Counter("asr_audio_seconds", "seconds of audio transcribed", registry=r)
        self.batch = Histogram("asr_batch_size", "requests per decoded batch", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.queue = Gauge("asr_queue_depth", "requests waiting or being decoded", registry=r)
        self.streams = Gauge("asr_streams", "open WebSocket streams", registry=r)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Server:
    """The routes, over one Transcriber; `app` is the ASGI application uvicorn runs."""

    def __init__(self, transcriber: Transcriber, options: ServeOptions | None = None):
        options = options or ServeOptions()
        self.transcriber, self.options = transcriber, options
        self.metrics = Metrics()
        self.batcher = Batcher(transcriber, options, self.metrics, in_progress=lambda: self.active)
        self.decoders = ThreadPoolExecutor(2, thread_name_prefix="asr-decode")  # uploads -> samples
        self.streams = StreamRoute(transcriber, options, self.metrics, self.batcher, self._authorize)
        self.steered: dict = {}  # DecodingOptions -> the model with a request's hotwords / nbest (the last 8)
        self.active = 0          # transcription requests in progress: reading, decoding, queued or in the model
        self.created = int(time.time())
        self.html = (Path(__file__).parent / PAGE).read_text(encoding="utf-8")
        self.app = self._build()

    def _build(self):
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route, WebSocketRoute

        @asynccontextmanager
        async def lifespan(app):
            threads = torch.get_num_threads()
            torch.set_num_threads(self.options.threads)     # while serving; given back when it stops
            await self.batcher.start()
            yield
            await self.batcher.stop()
            self.decoders.shutdown(wait=False, cancel_futures=True)
            torch.set_num_threads(threads)

        routes = [Route("/", self.page), Route("/health", self.health), Route("/metrics", self.prometheus),
                  Route("/v1/models", self.models), Route("/v1/models/{name:path}", self.model),
                  Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"]),
                  WebSocketRoute("/v1/audio/stream", self.streams.serve)]
        app = Starlette(routes=routes, lifespan=lifespan,
                        exception_handlers={ApiError: self._error, HTTPException: self._http_error,
                                            Exception: self._crash})
        return MetricsMiddleware(app, self.metrics, {r.path for r in routes})

    # -- errors and keys

    async def _error(self, request, e: ApiError):
        from starlette.responses import JSONResponse

        return JSONResponse(e.body(), status_code=e.status)

    async def _http_error(self, request, e):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return await self._error(request, ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}",
                                                   code=code))

    async def _crash(self, request, e: Exception):
        return await self._error(request, ApiError(500, f"internal error: {type(e).__name__}: {e}",
                                                   kind="server_error"))

    def _authorize(self, headers, query=None) -> None:
        key = self.options.api_key
        if not key:
            return
        given = headers.get("authorization", "")
        given = given[7:] if given[:7].lower() == "bearer " else (query or {}).get("api_key", "")
        if not hmac.compare_digest(given.encode(), key.encode()):
            raise ApiError(401, "invalid or missing API key (Authorization: Bearer <key>)", code="invalid_api_key")

    # -- plain routes

    async def page(self, request):
        from starlette.responses import HTMLResponse

        return HTMLResponse(self.html)

    async def health(self, request):
        from starlette.responses import JSONResponse

        return JSONResponse({"status": "ok", "model": self.options.model_name, "streaming": self.streams.mode,
                             "sample_rate": self.transcriber.sample_rate, "queue": self.batcher.pending,
                             "auth": bool(self.options.api_key), "threads": torch.get_num_threads(),
                             "workers": self.batcher.workers, "precision": self.transcriber.backend.precision})

    async def prometheus(self, request):
        from starlette.responses import Response

        body, media = self.metrics.render()
        return Response(body, media_type=media)

    def _model_card(self) -> dict:
        return {"id": self.options.model_name, "object": "model", "created": self.created, "owned_by": "asr"}

    async def models(self, request):
        from starlette.responses import JSONResponse

        self._authorize(request.headers)
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request):
        from starlette.responses import JSONResponse

        self._authorize(request.headers)
        if request.path_params["name"] != self.options.model_name:
            raise ApiError(404, f"no model {request.path_params['name']!r}; this server has "
                                f"{self.options.model_name!r}", param="model", code="model_not_found")
        return JSONResponse(self._model_card())

    # -- transcriptions

    async def transcriptions(self, request):
        from starlette.requests import ClientDisconnect
        from starlette.responses import JSONResponse, Response

        self._authorize(request.headers)
        if self.active >= self.options.max_queue:          # refused before its body is read: memory stays bounded
            raise ApiError(503, f"the server is busy ({self.active} requests in progress); retry later",
                           code="queue_full", kind="server_error")
        self.active += 1
        try:
            result, fmt, words, language = await asyncio.wait_for(self._transcribe(request),
                                                                  self.options.request_timeout)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the request took longer than {self.options.request_timeout:g} s",
                           code="timeout", kind="server_error") from None
        except ClientDisconnect:          # hung up before its upload arrived: nobody to answer (nginx's 499)
            return Response(status_code=499)
        finally:
            self.active -= 1
        self.metrics.audio.inc(result.duration)
        body, media = render(result, fmt, words, language)
        return JSONResponse(body) if media == "application/json" else Response(body, media_type=media)

    async def _transcribe(self, request):
        fields, data, filename = await self._upload(request)
        fmt = fields.get("response_format") or "json"
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not {fmt!r}",
                           param="response_format")
        if str(fields.get("stream", "false")).lower() == "true":
            raise ApiError(400, "streamed responses are not supported here (use the WebSocket /v1/audio/stream)",
                           param="stream")
        granularities = fields.getlist("timestamp_granularities[]") + fields.getlist("timestamp_granularities")
        wave = await asyncio.get_running_loop().run_in_executor(self.decoders, decode_upload, data, filename,
                                                                self.transcriber.sample_rate,
                                                                self.options.max_audio_seconds)   # (S,)
        seconds = wave.shape[0] / self.transcriber.sample_rate
        if seconds > self.options.max_audio_seconds:
            raise ApiError(413, f"the audio lasts {seconds:.1f} s; this server takes at most "
                                f"{self.options.max_audio_seconds:g} s", param="file", code="audio_too_long")
        transcriber = self._steered(fields)
        try:
            result = await self.batcher.transcribe(wave, transcriber)
        except Exception as e:  # the model failed on this batch: its requests say so, the server goes on
            raise ApiError(500, f"transcription failed: {type(e).__name__}: {e}", kind="server_error") from None
        return result, fmt, "word" in granularities, fields.get("language")

    def _steered(self, fields) -> Transcriber | None:
        """The model with this request's hotwords (`prompt`, `hotwords`) and `nbest`, or None for the server's
        own options. The last few are kept: a beam search with its LM takes a while to build."""
        items = prompt_hotwords(fields.get("prompt") or "")
        for value in fields.getlist("hotwords"):
            items += [w.strip() for w in str(value).split(",") if w.strip()]
        most, nbest = self.options.max_hotwords, fields.get("nbest") or "1"
        if len(items) > most or any(len(w) > 200 for w in items):
            raise ApiError(400, f"at most {most} hotwords of at most 200 characters each", param="hotwords")
        if not str(nbest).isdigit() or not 1 <= int(nbest) <= self.options.max_nbest:
            raise ApiError(400, f"nbest must be a whole number from 1 to {self.options.max_nbest}, not {nbest!r}",
                           param="nbest")
        if not items and int(nbest) == 1:
            return None
        base = self.transcriber.options
        options = replace(base, hotwords=(*base.hotwords, *items), nbest=max(base.nbest, int(nbest)))
        if options not in self.steered:
            while len(self.steered) >= 8:
                self.steered.pop(next(iter(self.steered)))
            self.steered[options] = Transcriber(self.transcriber.backend, options, self.transcriber.chunking)
        return self.steered[options]

    async def _upload(self, request):
        """The form's fields, and the bytes and name of its `file` (within the cap)."""
        form = await self._form(request)
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "a multipart `file` field with the audio is required", param="file")
            data = await upload.read()
            if len(data) > self.options.max_upload_bytes:
                raise self._too_big()
            return form, data, upload.filename or ""
        finally:
            await form.close()

    def _too_big(self) -> ApiError:
        return ApiError(413, f"the upload exceeds {self.options.max_upload_bytes} bytes", param="file",
                        code="file_too_large")

    async def _form(self, request):
        """The multipart form, its body read no further than the upload cap allows."""
        from starlette.formparsers import MultiPartException, MultiPartParser

        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(400, "the request must be multipart/form-data with a `file` field", param="file")
        limit = self.options.max_upload_bytes + FORM_OVERHEAD
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_big()

        async def body():
            n = 0
            async for chunk in request.stream():
                n += len(chunk)
                if n > limit:
                    raise self._too_big()
                yield chunk

        try:
            return await MultiPartParser(request.headers, body(), max_files=1, max_fields=32,
                                         max_part_size=FORM_OVERHEAD).parse()
        except MultiPartException as e:
            raise ApiError(400, f"malformed multipart form: {e.message}") from None


class MetricsMiddleware:
    """Counts every HTTP answer by route and status and times it (pure ASGI: the body streams through)."""

    def __init__(self, app, metrics: Metrics, paths: set[str]):
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in self.paths else "other"
        started, status = time.perf_counter(), [500]

        async def record(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.metrics.requests.labels(path, str(status[0])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)


def warm_up(transcriber: Transcriber) -> None:
    """Two calls on a second of silence, so that the first requests are not slow: the first pays for the decoder's
    set-up, the second makes the checkpoint backend's one-input graph (0.1-0.3 s)."""
    for _ in range(2):
        transcriber.transcribe(torch.zeros(transcriber.sample_rate))


def serve(transcriber: Transcriber, options: ServeOptions | None = None, sockets=None) -> None:
    """Run the server on options.host:options.port until interrupted (uvicorn; `sockets`: already bound ones
    instead, e.g. port 0 in tests)."""
    import uvicorn

    warm_up(transcriber)
    options = options or ServeOptions()
    config = uvicorn.Config(Server(transcriber, options).app, host=options.host, port=options.port,
                            log_level="warning", timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=sockets)
