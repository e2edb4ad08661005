"""OpenAI's transcription API, the parts that are its format rather than a server's: its error objects,
its uploads (bytes decoded here, never a path a request names) and its response formats (json, text,
srt, vtt, verbose_json with whisper's segments and words). asr.serve routes requests through them."""
from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ..audio import AudioError, AudioTooLong, load_audio_bytes
from ..transcripts import Transcript, alternatives_json, cue_text, separator_of, subtitle_cues
from ..transcripts import render as render_transcript

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


class ApiError(Exception):
    """An answer in OpenAI's error form: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def check_wav(data: bytes) -> None:
    """A RIFF/WAVE upload whose data chunk is shorter than its header says is truncated (soundfile would
    read what is there without a word). Streaming writers' 0 / 0xFFFFFFFF sizes mean "unknown": accepted."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if chunk == b"data":
            held = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and held < size:
                raise ApiError(400, f"truncated WAV: its header says {size} bytes of samples, the upload holds "
                                    f"{held}", param="file", code="invalid_audio")
            return
        pos += 8 + size + (size & 1)
    raise ApiError(400, "truncated WAV: no data chunk", param="file", code="invalid_audio")


def decode_upload(data: bytes, filename: str, sample_rate: int, max_seconds: float | None = None) -> torch.Tensor:
    """Upload bytes -> (S,) samples at `sample_rate`, from the bytes themselves (soundfile's formats) or a
    temporary file of their own (FFmpeg's), never a path the request names; the file name lends only a
    sanitised suffix, a hint for FFmpeg. Audio past `max_seconds` is refused (413) from its header's length or
    as soon as decoding passes it, so what one upload holds in memory is bounded by the limit, not the file."""
    if not data:
        raise ApiError(400, "the uploaded file is empty", param="file", code="invalid_audio")
    check_wav(data)
    suffix = Path(filename or "").suffix
    suffix = suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix) else ""
    try:
        return load_audio_bytes(data, sample_rate, "the uploaded file", suffix, max_seconds)    # (S,)
    except AudioTooLong as e:
        lasts = f"lasts {e.seconds:.1f} s" if e.seconds is not None else f"lasts more than {e.limit:g} s"
        raise ApiError(413, f"the audio {lasts}; this server takes at most {e.limit:g} s", param="file",
                       code="audio_too_long") from None
    except AudioError as e:
        raise ApiError(400, f"could not decode audio: {e}", param="file", code="invalid_audio") from None


def round_seconds(t: float) -> float:
    """Times as the API gives them: seconds to the millisecond."""
    return round(t, 3)


def segments_of(result: Transcript) -> list[dict]:
    """verbose_json segments: the words grouped as subtitle cues, in whisper's segment fields."""
    out = []
    for k, cue in enumerate(subtitle_cues(result.words)):
        text = cue_text(cue, separator_of(result))
        raw = text.encode()
        out.append({"id": k, "seek": 0, "start": round_seconds(cue[0].start), "end": round_seconds(cue[-1].end),
                    "text": text, "tokens": [], "temperature": 0.0,
                    "avg_logprob": float(np.mean([np.log(max(w.confidence, 1e-10)) for w in cue])),
                    "compression_ratio": len(raw) / max(len(zlib.compress(raw)), 1), "no_speech_prob": 0.0})
    return out


def render(result: Transcript, fmt: str, words: bool, language: str | None):
    """A Transcript in an OpenAI response format -> (body, media type). text, srt and vtt are the transcript
    files asr.transcripts writes; json and verbose_json are OpenAI's own."""
    if fmt in ("text", "srt", "vtt"):
        media = "text/vtt" if fmt == "vtt" else "text/plain"
        return render_transcript(result, "txt" if fmt == "text" else fmt), media
    usage = {"type": "duration", "seconds": round_seconds(result.duration)}
    if fmt == "json":
        return {"text": result.text, "usage": usage}, "application/json"
    body = {"task": "transcribe", "language": language or "english", "duration": round_seconds(result.duration),
            "text": result.text, "segments": segments_of(result), "usage": usage}
    if words:
        body["words"] = [{"word": w.text, "start": round_seconds(w.start), "end": round_seconds(w.end),
                          "confidence": round(w.confidence, 4)} for w in result.words]
    if result.alternatives:                               # nbest > 1: ours, beside OpenAI's fields
        body["alternatives"] = alternatives_json(result)
    return body, "application/json"
