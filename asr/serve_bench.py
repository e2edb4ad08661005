"""`asr bench serve`: `asr serve` under N concurrent clients on loopback, for a bounded time, decoding one
request at a time (max batch 1, one model worker), then, with W model workers, W requests at a time
without batching (when W > 1), then with dynamic batching, in one run.

    asr bench serve --model M --manifest data/an4/test.jsonl --clients 16 --seconds 20

Each run starts the server in a subprocess on a free port; `clients` threads post the manifest's files
(in turn, round robin) to /v1/audio/transcriptions until the time is up. Rows: requests, errors,
p50 / p95 / p99 latency, audio seconds transcribed per second, the mean batch (from the server's own
/metrics) and the server's peak resident memory. The middle row separates what the workers' parallelism
gains from what batching gains.
"""
from __future__ import annotations

import json
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
                max_batch: int = 16, batch_window: float = 0.05, threads: int | None = None,
                workers: int | None = None) -> list[dict]:
    """One row for one request at a time, one for `workers` at a time unbatched (workers > 1), then one
    with dynamic batching (see the module doc). `workers`, `threads`: the server's (default: its own)."""
    from .audio import audio_duration
    from .serve_batch import serve_workers

    workers = workers or serve_workers()
    uploads = [(Path(f).name, Path(f).read_bytes(), audio_duration(f)) for f in files]
    runs = [("one at a time", 1, 1)] + ([(f"{workers} at a time, unbatched", 1, workers)] if workers > 1 else [])
    return [_bench_run(model, uploads, clients, seconds, batch, batch_window, label, threads, w)
            for label, batch, w in runs + [(f"batched (max {max_batch})", max_batch, workers)]]


def _bench_run(model, uploads, clients: int, seconds: float, max_batch: int, window: float, label: str,
               threads: int | None, workers: int) -> dict:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "asr", "serve", "--model", str(model), "--port", str(port),
                               "--max-batch", str(max_batch), "--batch-window", str(window),
                               "--max-queue", str(4 * clients), "--model-workers", str(workers),
                               *(["--model-threads", str(threads)] if threads else [])],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        health = _wait_healthy(port, server)
        threads, workers = health["threads"], health["workers"]     # what the server chose, when not told
        _post(port, *uploads[0][:2])                              # warm-up: the first batch's set-up
        peak = [0.0]
        done = threading.Event()

        def watch():                                              # the server's resident memory, sampled
            while not done.is_set():
                peak[0] = max(peak[0], _resident_mb(server.pid))
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        latencies, audio, errors, wall = _load(port, uploads, clients, seconds)
        done.set()
        watcher.join()
        mean_batch = _mean_batch(port)
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies.sort()
    pick = lambda q: 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0.0
    return {"server": label, "max_batch": max_batch, "workers": workers, "threads": threads, "clients": clients,
            "requests": len(latencies) + errors,
            "errors": errors, "p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99),
            "audio_per_second": audio / wall, "mean_batch": mean_batch, "server_peak_mb": peak[0]}


def _load(port: int, uploads, clients: int, seconds: float):
    """`clients` threads posting uploads in turn until `seconds` pass: (latencies, audio seconds, errors, wall)."""
    lock, latencies, totals = threading.Lock(), [], {"audio": 0.0, "errors": 0}
    deadline = time.monotonic() + seconds

    def client(k: int):
        i = k
        while time.monotonic() < deadline:
            name, data, duration = uploads[i % len(uploads)]
            i += clients
            start = time.monotonic()
            status = _post(port, name, data)
            took = time.monotonic() - start
            with lock:
                if status == 200:
                    latencies.append(took)
                    totals["audio"] += duration
                else:
                    totals["errors"] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, totals["audio"], totals["errors"], time.monotonic() - start


def _post(port: int, name: str, data: bytes) -> int:
    """One multipart POST of `data` as the file `name`; the HTTP status (0 when the connection failed)."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/audio/transcriptions", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            reply.read()
            return reply.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


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
