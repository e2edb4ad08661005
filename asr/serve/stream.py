"""The server's streaming route, `WS /v1/audio/stream` (asr.serve mounts it): a unidirectional model's
`stream()` behind a WebSocket, 16 kHz PCM in, partial and final transcripts out, its steps run in the
server's model thread between batches."""
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
        self.available = self._can_stream()
        self.open = 0                      # streams now open

    def _can_stream(self) -> bool:
        try:
            self.transcriber.stream()
            return True
        except ValueError:
            return False

    async def serve(self, ws):
        """16 kHz PCM chunks in (binary messages: float32, or int16 with ?encoding=s16), a JSON partial
        ({"type": "partial", "text", "seconds"}) out for each; the text message {"type": "end"} (or "end")
        gets the final transcript ({"type": "final", "text", "duration", "words"}) and closes."""
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
        if not self.available:
            return await _refuse(ws, ApiError(400, "this model cannot stream (it is bidirectional); POST the "
                                                   "file to /v1/audio/transcriptions", code="no_streaming"))
        if self.open >= self.options.max_streams:
            return await _refuse(ws, ApiError(503, "too many streams open", code="streams_full",
                                              kind="server_error"), code=1013)
        self.open += 1
        self.metrics.streams.set(self.open)
        try:
            await self._stream(ws, np.dtype(dtype))
        finally:
            self.open -= 1
            self.metrics.streams.set(self.open)

    async def _stream(self, ws, dtype: np.dtype) -> None:
        from starlette.websockets import WebSocketDisconnect

        stream = self.transcriber.stream()
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
                    await ws.send_json({"type": "partial", "text": partial.text, "seconds": round_seconds(seconds)})
                elif _is_end(message.get("text")):
                    final = await self.batcher.run_model(stream.finish)
                    self.metrics.audio.inc(final.duration)
                    await ws.send_json({"type": "final", "text": final.text, "duration": round_seconds(final.duration),
                                        "words": render(final, "verbose_json", True, None)[0]["words"]})
                    await ws.close()
                    return
        except WebSocketDisconnect:
            return


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
