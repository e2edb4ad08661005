"""`asr bench serve`: `asr serve` under N concurrent clients on loopback, for a bounded time, decoding one
request at a time (max batch 1, one model worker), with W model workers W requests at a time without
batching (when W > 1), and with dynamic batching, in one run.

    asr bench serve --model M --manifest data/an4/test.jsonl --clients 16 --seconds 20

The servers run side by side, each `asr serve` in a subprocess on a free port, and take turns: in each of
`rounds` rounds every server is loaded for seconds / rounds while the others idle, so a host whose speed
drifts during the run (neighbours, clocks) slows every row alike and the ratios between rows stay fair.
`clients` threads post the manifest's files (in turn, round robin) to /v1/audio/transcriptions until a
turn is up, each over one connection it keeps open, as HTTP clients do (`keepalive=False`: a new
connection a request). Rows: requests, errors, p50 / p95 / p99 latency, audio seconds transcribed per
second, the mean batch (from the server's own /metrics) and the server's peak resident memory. The
middle row separates what the workers' parallelism gains from what batching gains.
"""
from __future__ import annotations

import http.client
import json
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

SERVE_HEADER = (f"{'server':<26} {'workers':>7} {'threads':>7} {'clients':>7} {'requests':>8} {'errors':>6} "
                f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'audio s/s':>9} {'mean batch':>10} {'server MB':>9}")


def bench_serve(model: str | Path, files: list[str | Path], clients: int = 16, seconds: float = 20.0,
                max_batch: int | None = None, batch_window: float | None = None, threads: int | None = None,
                workers: int | None = None, keepalive: bool = True, rounds: int = 4,
                device: str | None = None, precision: str | None = None) -> list[dict]:
    """One row for one request at a time, one for `workers` at a time unbatched (workers > 1), then one
    with dynamic batching, each server loaded for `seconds` in all, in `rounds` turns (see the module doc).
    `max_batch`, `batch_window`, `workers`, `threads`, `device`, `precision`: the server's (None: its own default, as
    ServeOptions and `asr serve` have it); `keepalive`: each client keeps its connection open (else a new
    connection a request)."""
    from ..audio import audio_duration
    from ..serve.options import ServeOptions

    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    defaults = ServeOptions()
    workers, max_batch = workers or defaults.model_workers, max_batch or defaults.max_batch
    uploads = [(*_form(Path(f).name, Path(f).read_bytes()), audio_duration(f)) for f in files]  # body, headers, s
    runs = [("one at a time", 1, 1)] + ([(f"{workers} at a time, unbatched", 1, workers)] if workers > 1 else [])
    runs.append((f"batched (max {max_batch})", max_batch, workers))
    servers = [BenchedServer(model, label, batch, batch_window, threads, w, clients, device, precision)
               for label, batch, w in runs]
    try:
        for server in servers:
            server.ready(uploads[0])
        for _ in range(rounds):
            for server in servers:
                server.load(uploads, seconds / rounds, keepalive)
        return [server.row(keepalive) for server in servers]
    finally:
        for server in servers:
            server.stop()


class BenchedServer:
    """One `asr serve` subprocess under test, and what its turns under load measured."""

    def __init__(self, model, label: str, max_batch: int, window: float | None, threads: int | None, workers: int,
                 clients: int, device: str | None = None, precision: str | None = None):
        self.label, self.max_batch, self.clients, self.port = label, max_batch, clients, _free_port()
        flags = {"--max-batch": max_batch, "--batch-window": window, "--max-queue": 4 * clients,
                 "--model-workers": workers, "--device": device, "--model-threads": threads, "--precision": precision}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "asr", "serve", "--model", str(model), "--port", str(self.port),
             *(str(x) for flag, value in flags.items() if value is not None for x in (flag, value))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.latencies: list[float] = []
        self.audio = self.wall = self.peak_mb = 0.0
        self.errors = 0

    def ready(self, upload) -> None:
        """Wait for /health, note what the server chose, and send one request (the first batch's set-up)."""
        health = _wait_healthy(self.port, self.process)
        self.threads, self.workers, self.precision = health["threads"], health["workers"], health["precision"]
        Client(self.port, keepalive=False).post(*upload[:2])

    def load(self, uploads, seconds: float, keepalive: bool) -> None:
        """One turn: `clients` clients for `seconds`, the server's resident memory sampled meanwhile."""
        done = threading.Event()

        def watch():
            while not done.is_set():
                self.peak_mb = max(self.peak_mb, _resident_mb(self.process.pid))
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        latencies, audio, errors, wall = _load(self.port, uploads, self.clients, seconds, keepalive)
        done.set()
        watcher.join()
        self.latencies += latencies
        self.audio, self.errors, self.wall = self.audio + audio, self.errors + errors, self.wall + wall

    def row(self, keepalive: bool) -> dict:
        lat = sorted(self.latencies)
        pick = lambda q: quantile_ms(lat, q)
        return {"server": self.label, "max_batch": self.max_batch, "workers": self.workers, "threads": self.threads,
                "precision": self.precision, "clients": self.clients, "keepalive": keepalive,
                "requests": len(lat) + self.errors, "errors": self.errors,
                "p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99),
                "audio_per_second": self.audio / self.wall if self.wall else 0.0,
                "mean_batch": _mean_batch(self.port), "server_peak_mb": self.peak_mb}

    def stop(self) -> None:
        stop_process(self.process)


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM (the server's graceful shutdown), then SIGKILL after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def quantile_ms(sorted_seconds: list[float], q: float) -> float:
    """The q-quantile of sorted latencies in seconds, in milliseconds (0 for none)."""
    if not sorted_seconds:
        return 0.0
    return 1000 * sorted_seconds[min(len(sorted_seconds) - 1, int(q * len(sorted_seconds)))]


def _load(port: int, uploads, clients: int, seconds: float, keepalive: bool):
    """`clients` threads posting uploads in turn until `seconds` pass: (latencies, audio seconds, errors, wall)."""
    lock, latencies, totals = threading.Lock(), [], {"audio": 0.0, "errors": 0}
    deadline = time.monotonic() + seconds

    def client(k: int):
        i, me = k, Client(port, keepalive)
        while time.monotonic() < deadline:
            body, headers, duration = uploads[i % len(uploads)]
            i += clients
            start = time.monotonic()
            status = me.post(body, headers)
            took = time.monotonic() - start
            with lock:
                if status == 200:
                    latencies.append(took)
                    totals["audio"] += duration
                else:
                    totals["errors"] += 1
        me.close()

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, totals["audio"], totals["errors"], time.monotonic() - start


def _form(name: str, data: bytes) -> tuple[bytes, dict]:
    """A multipart body posting `data` as the file `name` (model whisper-1), and its headers."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


class Client:
    """One benchmark client: POSTs to /v1/audio/transcriptions over one kept-alive connection, as the openai
    client (httpx) and browsers do, reconnecting after an error; or (keepalive=False) a new connection a request."""

    def __init__(self, port: int, keepalive: bool = True):
        self.port, self.keepalive, self.conn = port, keepalive, None
        self.stale = 0            # kept-alive connections the server had closed (idle past its keep-alive timeout)
        self.retried = 0          # requests sent again after their kept-alive connection failed

    def post(self, body: bytes, headers: dict) -> int:
        """The HTTP status (0 when the connection or the reply failed). A kept-alive connection the server has
        closed meanwhile (uvicorn closes one idle for 5 s) is seen to be closed before it is used and replaced,
        as httpx's pool does; one that fails before any reply all the same (closed as the request went out) is
        tried once more on a new connection, as urllib3 does. Both are counted."""
        if self.conn is not None and self.conn.sock is not None and _closed_by_peer(self.conn.sock):
            self.stale += 1
            self.close()
        for attempt in (0, 1):
            reused = self.conn is not None
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                self.conn.request("POST", "/v1/audio/transcriptions", body,
                                  headers if self.keepalive else {**headers, "Connection": "close"})
                reply = self.conn.getresponse()
                reply.read()
                if not self.keepalive or reply.will_close:
                    self.close()
                return reply.status
            except (OSError, http.client.HTTPException):   # refused, reset, or a reply that is not HTTP
                self.close()
                if not reused or attempt:
                    return 0
                self.retried += 1
        return 0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection has been closed (or reset) by the server: it reads as ready, with
    nothing or an error to read (httpcore's test before it reuses a pooled connection)."""
    if sock.fileno() < 0:                  # closed here, not by the server: the request fails and is sent again
        return False
    ready, _, _ = select.select([sock], [], [], 0)
    if not ready:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, process, timeout: float = 120.0) -> dict:
    """The server's /health answer, once it gives one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"asr serve exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return json.loads(reply.read())
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"asr serve did not answer /health within {timeout:.0f} s")


def _mean_batch(port: int) -> float:
    """Requests per decoded batch, from the server's asr_batch_size histogram (sum / count)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith(("asr_batch_size_sum", "asr_batch_size_count"))}
    return values.get("asr_batch_size_sum", 0.0) / max(values.get("asr_batch_size_count", 0.0), 1.0)


def _resident_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def format_serve_row(r: dict) -> str:
    return (f"{r['server']:<26} {r['workers']:>7} {r['threads']:>7} {r['clients']:>7} {r['requests']:>8} "
            f"{r['errors']:>6} {r['p50_ms']:>7.0f} {r['p95_ms']:>7.0f} {r['p99_ms']:>7.0f} "
            f"{r['audio_per_second']:>9.1f} {r['mean_batch']:>10.2f} {r['server_peak_mb']:>9.0f}")


def format_serve_table(rows: list[dict]) -> str:
    """The rows of `bench_serve` as `asr bench serve` prints them, with the batching's gain over the other rows."""
    lines = [SERVE_HEADER, *map(format_serve_row, rows)]
    if rows[0]["audio_per_second"]:
        gain = rows[-1]["audio_per_second"] / rows[0]["audio_per_second"]
        line = f"dynamic batching: {gain:.2f}x the throughput of one request at a time"
        if len(rows) == 3 and rows[1]["audio_per_second"]:
            line += (f", {rows[-1]['audio_per_second'] / rows[1]['audio_per_second']:.2f}x that of "
                     f"{rows[-1]['workers']} at a time unbatched")
        lines.append(line)
    if rows[0].get("precision", "fp32") != "fp32":
        lines.append(f"the servers ran the model at precision {rows[0]['precision']}")
    return "\n".join(lines)
