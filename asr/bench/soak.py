"""`asr bench soak`: `asr serve` under sustained mixed traffic, to show it neither fails nor drifts.

    asr bench soak --model M --manifest data/an4/test.jsonl --minutes 30 --clients 8

One `asr serve` subprocess (an API key required, its limits as given) and `clients` threads that, until the
time is up, each pick a kind of request at random (fixed seed) and send it:

  good        a manifest file, or several joined (up to ~20 s), with the right key       -> 200
  stream      a manifest file over the WebSocket, 0.1 s chunks, then "end"               -> 200 (its "end")
  wrong_key   a good upload with the wrong key                                           -> 401
  no_key      a good upload with no key                                                  -> 401
  not_audio   bytes that are no audio format                                             -> 400
  truncated   a WAV whose header promises more than the upload holds                     -> 400
  too_long    six hours of silence in 1 MB of FLAC                                       -> 413
  too_big     an upload over the server's byte cap                                       -> 413
  hang_up     headers and half the body, then the connection closed                      -> (no answer)

Rows per window (the run in `windows` equal parts): requests by status, unexpected answers (any status the kind
does not expect, every 5xx among them), p50 / p99 latency of the good uploads and the server's resident memory
at the window's end. The summary compares the memory after the first window (warm-up) with the last.
"""
from __future__ import annotations

import io
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from .serve import Client, _form, _free_port, _resident_mb, _wait_healthy, quantile_ms, stop_process

EXPECTED = {"good": {200}, "stream": {200}, "wrong_key": {401}, "no_key": {401}, "not_audio": {400},
            "truncated": {400}, "too_long": {413}, "too_big": {413}, "hang_up": {0}}   # 0: no answer
WEIGHTS = {"good": 40, "stream": 10, "wrong_key": 8, "no_key": 4, "not_audio": 8, "truncated": 8, "too_long": 6,
           "too_big": 6, "hang_up": 10}
KEY = "soak-test-key"


def soak_payloads(files: list[str | Path], max_upload_bytes: int, seed: int = 0) -> dict:
    """The bodies each kind sends, built once from the manifest's files."""
    import soundfile as sf

    from ..audio import SAMPLE_RATE, load_audio

    rng = random.Random(seed)
    waves = [load_audio(f).numpy() for f in files]
    wav = lambda x: _wav_bytes(x, SAMPLE_RATE)
    goods = [_form(Path(f).name, Path(f).read_bytes()) + (len(w) / SAMPLE_RATE,) for f, w in zip(files, waves)]
    for _ in range(4):                                  # longer ones: files joined, up to ~20 s
        joined = np.concatenate(rng.sample(waves, min(len(waves), 6)))[:20 * SAMPLE_RATE]
        goods.append(_form("joined.wav", wav(joined)) + (len(joined) / SAMPLE_RATE,))
    silence = io.BytesIO()
    with sf.SoundFile(silence, "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") as f:
        for _ in range(36):
            f.write(np.zeros(SAMPLE_RATE * 600, np.int16))
    good_wav = wav(waves[0])
    return {"good": goods, "pcm": [(w * 32767).astype("<i2").tobytes() for w in waves[:8]],
            "not_audio": _form("a.wav", b"this is not audio at all, only words " * 50)[:2],
            "truncated": _form("a.wav", good_wav[:len(good_wav) // 2])[:2],
            "too_long": _form("silence.flac", silence.getvalue())[:2],
            "too_big": _form("big.wav", b"\0" * (max_upload_bytes + 1))[:2]}


def _wav_bytes(x: np.ndarray, sr: int) -> bytes:
    import soundfile as sf

    out = io.BytesIO()
    sf.write(out, x, sr, format="WAV", subtype="PCM_16")
    return out.getvalue()


class SoakServer:
    """The `asr serve` subprocess under soak: an API key, the given limits, its memory sampled."""

    def __init__(self, model: str | Path, max_upload_bytes: int, max_audio_seconds: float, extra: list[str]):
        self.port = _free_port()
        self.log = tempfile.TemporaryFile()      # its stderr: a pipe nobody reads would stall it once full
        self.process = subprocess.Popen(
            [sys.executable, "-m", "asr", "serve", "--model", str(model), "--port", str(self.port), "--api-key", KEY,
             "--max-upload-mb", str(max_upload_bytes / 2 ** 20), "--max-audio-seconds", str(max_audio_seconds),
             *extra], stdout=subprocess.DEVNULL, stderr=self.log)
        self.health = _wait_healthy(self.port, self.process)

    def log_tail(self, chars: int = 3000) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

    def rss_mb(self) -> float:
        return _resident_mb(self.process.pid)

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


def _send(kind: str, port: int, payloads: dict, rng: random.Random, client: Client) -> tuple[int, float | None]:
    """One request of `kind`: its status (0: no answer, as a hung-up client gets) and, for a good upload, the
    audio seconds it carried."""
    auth = {"Authorization": f"Bearer {KEY}"}
    if kind in ("good", "wrong_key", "no_key"):
        body, headers, seconds = rng.choice(payloads["good"])
        key = {"good": auth, "wrong_key": {"Authorization": "Bearer not-the-key"}, "no_key": {}}[kind]
        return client.post(body, {**headers, **key}), seconds if kind == "good" else None
    if kind == "stream":
        return _stream(port, rng.choice(payloads["pcm"])), None
    if kind == "hang_up":
        body, headers, _ = rng.choice(payloads["good"])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            head = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                    f"Content-Type: {headers['Content-Type']}\r\nContent-Length: {len(body)}\r\n\r\n")
            s.sendall(head.encode() + body[:len(body) // 2])
        return 0, None
    body, headers = payloads[kind]
    return client.post(body, {**headers, **auth}), None


def _stream(port: int, pcm: bytes) -> int:
    """A WebSocket session: int16 chunks of 0.1 s, "end", and every message up to the "end" one (200), else 0."""
    from websockets.sync.client import connect

    try:
        with connect(f"ws://127.0.0.1:{port}/v1/audio/stream?encoding=s16",
                     additional_headers={"Authorization": f"Bearer {KEY}"}, open_timeout=30) as ws:
            for i in range(0, len(pcm), 3200):
                ws.send(pcm[i:i + 3200])
            ws.send("end")
            while True:
                message = json.loads(ws.recv(timeout=60))
                if message.get("type") == "end":
                    return 200
                if message.get("type") == "error":
                    return int(message.get("status", 0) or 0) or 1
    except Exception:  # noqa: BLE001 - any failure of the session is what this counts
        return 0


def soak(model: str | Path, files: list[str | Path], minutes: float = 30.0, clients: int = 8, windows: int = 10,
         seed: int = 0, max_upload_bytes: int = 4 * 2 ** 20, max_audio_seconds: float = 60.0,
         extra: list[str] = (), log=print) -> dict:
    """Mixed traffic for `minutes` (see the module doc); returns the windows' rows and the summary."""
    payloads = soak_payloads(files, max_upload_bytes, seed)
    server = SoakServer(model, max_upload_bytes, max_audio_seconds, list(extra))
    records: list[tuple[float, str, int, float]] = []          # (time, kind, status, latency)
    lock, seconds = threading.Lock(), minutes * 60
    start = time.monotonic()
    deadline = start + seconds
    memory: list[tuple[float, float]] = []
    retried, stale = [0], [0]

    def client(k: int):
        rng, me = random.Random(seed * 1000 + k), Client(server.port)
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        while time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            t0 = time.monotonic()
            status, _ = _send(kind, server.port, payloads, rng, me)
            with lock:
                records.append((t0 - start, kind, status, time.monotonic() - t0))
        me.close()
        with lock:
            retried[0] += me.retried
            stale[0] += me.stale

    def watch():
        while time.monotonic() < deadline + 1:
            memory.append((time.monotonic() - start, server.rss_mb()))
            time.sleep(1.0)

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        watcher = threading.Thread(target=watch)
        for t in [watcher, *threads]:
            t.start()
        for t in threads:
            t.join()
        watcher.join()
        try:
            alive = _wait_healthy(server.port, server.process, 10) is not None
        except RuntimeError:
            alive = False
        server_log = server.log_tail(10 ** 6)
    finally:
        server.stop()
    result = summarise(records, memory, seconds, windows)
    result.update(clients=clients, minutes=minutes, alive=alive, threads=server.health["threads"],
                  workers=server.health["workers"], tracebacks=server_log.count("Traceback"), retried=retried[0],
                  stale=stale[0],
                  log_tail=server_log[-3000:] if "Traceback" in server_log else "")
    log(format_soak(result))
    return result


def summarise(records, memory, seconds: float, windows: int) -> dict:
    """Per window: requests by status, unexpected answers, good uploads' p50 / p99 latency, RSS at its end."""
    rows, width = [], seconds / windows
    for w in range(windows):
        part = [r for r in records if w * width <= r[0] < (w + 1) * width]
        good = sorted(r[3] for r in part if r[1] == "good" and r[2] == 200)
        rss = [m for t, m in memory if t <= (w + 1) * width]
        rows.append({"window": w + 1, "until_s": round((w + 1) * width), "requests": len(part),
                     "by_status": dict(sorted(Counter(r[2] for r in part).items())),
                     "unexpected": sum(r[2] not in EXPECTED[r[1]] for r in part),
                     "p50_ms": quantile_ms(good, 0.5), "p99_ms": quantile_ms(good, 0.99),
                     "rss_mb": rss[-1] if rss else 0.0})
    by_kind = {k: dict(sorted(Counter(r[2] for r in records if r[1] == k).items())) for k in EXPECTED}
    return {"windows": rows, "by_kind": by_kind, "requests": len(records),
            "unexpected": sum(r["unexpected"] for r in rows), "server_errors": sum(r[2] >= 500 for r in records),
            "rss_start_mb": memory[0][1] if memory else 0.0,
            "rss_after_warmup_mb": rows[0]["rss_mb"], "rss_end_mb": memory[-1][1] if memory else 0.0,
            "rss_peak_mb": max((m for _, m in memory), default=0.0)}


def format_soak(r: dict) -> str:
    lines = [f"{'window':>6} {'until s':>7} {'requests':>8} {'unexpected':>10} {'p50 ms':>7} {'p99 ms':>7} "
             f"{'RSS MB':>7}  by status"]
    for w in r["windows"]:
        lines.append(f"{w['window']:>6} {w['until_s']:>7} {w['requests']:>8} {w['unexpected']:>10} "
                     f"{w['p50_ms']:>7.0f} {w['p99_ms']:>7.0f} {w['rss_mb']:>7.0f}  "
                     + " ".join(f"{k}:{v}" for k, v in w["by_status"].items()))
    lines.append("by kind: " + "; ".join(f"{k} " + " ".join(f"{s}:{n}" for s, n in v.items())
                                         for k, v in r["by_kind"].items()))
    lines.append(f"{r['requests']} requests, {r['unexpected']} unexpected, {r['server_errors']} 5xx; server RSS "
                 f"{r['rss_start_mb']:.0f} MB at start, {r['rss_after_warmup_mb']:.0f} MB after the first window, "
                 f"{r['rss_end_mb']:.0f} MB at the end (peak {r['rss_peak_mb']:.0f}); "
                 f"server {'answering' if r.get('alive') else 'NOT answering'} after, "
                 f"{r.get('tracebacks', 0)} tracebacks in its log; {r.get('stale', 0)} kept-alive connections found "
                 f"closed by the server before use (idle past its keep-alive timeout) and replaced, "
                 f"{r.get('retried', 0)} requests sent again after their kept-alive connection failed")
    return "\n".join(lines)
