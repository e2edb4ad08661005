"""The server's streaming route, `WS /v1/audio/stream` (asr.serve mounts it): a model's `stream()` behind a
WebSocket (any model: a unidirectional one frame by frame, a bidirectional one re-decoded every second),
16 kHz PCM in; the utterance so far as partials, each utterance the endpoint rules end as a final, and the
whole transcript at the end, out. Its steps run in the server's model threads between batches.

Query parameters: `encoding` (f32 | s16), `api_key`, and the endpoint rules (asr.stream.EndpointRules):
`silence_after_text`, `silence_without_text`, `max_utterance` (seconds), `endpoints=off` for one utterance."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import torch

from .openai_api import ApiError, render, round_seconds

PCM_ENCODINGS = {"f32": "<f4", "s16": "<i2"}   # WebSocket sample formats (little-endian), ?encoding=


class StreamRoute:
    """The ASGI WebSocket endpoint; `available` says whether the model can stream at all."""

    def __init__(self, transcriber, options, metrics, batcher, authorize):
        self.transcriber, self.options, self.metrics = transcriber, options, metrics
        self.batcher, self.authorize = batcher, authorize
        self.mode = transcriber.stream(endpoints=None).mode    # frames (unidirectional) or redecode
        self.open = 0                      # streams now open

    async def serve(self, ws):
        """16 kHz PCM chunks in (binary messages: float32, or int16 with ?encoding=s16), a JSON partial
        ({"type": "partial", "text", "seconds"}: the utterance so far) out for each, and a final for each
        utterance the endpoint rules end ({"type": "final", "text", "start", "end", "words"}); the text message
        {"type": "end"} (or "end") gets the last utterance's final, then the whole transcript ({"type": "end",
        "text", "duration", "words"}) and the close."""
        try:
            self.authorize(ws.headers, ws.query_params)
        except ApiError as e:
            await ws.close(code=1008, reason=e.message)
            return
        await ws.accept()
        try:
            dtype = PCM_ENCODINGS[ws.query_params.get("encoding", "f32")]
        except KeyError:
            return await _refuse(ws, ApiError(400, f"encoding must be one of {', '.join(PCM_ENCODINGS)}",
                                              param="encoding"))
        try:
            rules = _rules(ws.query_params)
        except ValueError as e:
            return await _refuse(ws, ApiError(400, str(e), param="endpoints"))
        if self.open >= self.options.max_streams:
            return await _refuse(ws, ApiError(503, "too many streams open", code="streams_full",
                                              kind="server_error"), code=1013)
        self.open += 1
        self.metrics.streams.set(self.open)
        try:
            await self._stream(ws, np.dtype(dtype), rules)
        finally:
            self.open -= 1
            self.metrics.streams.set(self.open)

    async def _stream(self, ws, dtype: np.dtype, rules) -> None:
        from starlette.websockets import WebSocketDisconnect

        stream = self.transcriber.stream(endpoints=rules)
        seconds = 0.0
        scale = 1.0 if dtype.kind == "f" else 1 / 32768
        try:
            while True:
                try:
                    message = await asyncio.wait_for(ws.receive(), self.options.request_timeout)
                except asyncio.TimeoutError:
                    return await _refuse(ws, ApiError(408, f"no message for {self.options.request_timeout:g} s",
                                                      code="timeout"), code=1000)
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    data = message["bytes"]
                    if len(data) % dtype.itemsize:
                        return await _refuse(ws, ApiError(400, f"a binary message must hold whole "
                                                               f"{dtype.itemsize}-byte samples"))
                    chunk = np.frombuffer(data, dtype).astype(np.float32) * scale          # (S,)
                    seconds += chunk.shape[0] / self.transcriber.sample_rate
                    if seconds > self.options.max_audio_seconds:
                        return await _refuse(ws, ApiError(413, f"streams are limited to "
                                                               f"{self.options.max_audio_seconds:g} s",
                                                          code="audio_too_long"), code=1009)
                    partial = await self.batcher.run_model(stream.feed, torch.from_numpy(chunk))
                    for final in partial.finals:
                        await ws.send_json(_final(final))
                    await ws.send_json({"type": "partial", "text": partial.text, "seconds": round_seconds(seconds)})
                elif _is_end(message.get("text")):
                    told = len(stream.utterances)
                    whole = await self.batcher.run_model(stream.finish)
                    for final in stream.utterances[told:]:
                        await ws.send_json(_final(final))
                    self.metrics.audio.inc(whole.duration)
                    await ws.send_json({"type": "end", "text": whole.text, "duration": round_seconds(whole.duration),
                                        "words": _words(whole)})
                    await ws.close()
                    return
        except WebSocketDisconnect:
            return


def _words(transcript) -> list[dict]:
    return render(transcript, "verbose_json", True, None)[0]["words"]


def _final(final) -> dict:
    """An utterance the stream ended, as its message."""
    return {"type": "final", "text": final.transcript.text, "start": round_seconds(final.start),
            "end": round_seconds(final.end), "words": _words(final.transcript)}


def _rules(query):
    """The endpoint rules a stream asked for in its query (?silence_after_text=1.5 ...), else the defaults;
    ?endpoints=off: none (one utterance, ended by the client's end)."""
    from dataclasses import fields, replace

    from ..stream import EndpointRules

    if query.get("endpoints", "on") == "off":
        return None
    changes = {}
    for f in fields(EndpointRules):
        if f.name in query:
            try:
                changes[f.name] = float(query[f.name])
            except ValueError:
                raise ValueError(f"{f.name} must be a number of seconds, not {query[f.name]!r}") from None
    return replace(EndpointRules(), **changes)


async def _refuse(ws, e: ApiError, code: int = 1003) -> None:
    await ws.send_json({"type": "error", **e.body()})
    await ws.close(code=code)


def _is_end(text: str | None) -> bool:
    if text is None:
        return False
    if text.strip() == "end":
        return True
    try:
        return json.loads(text).get("type") == "end"
    except (ValueError, AttributeError):
        return False
