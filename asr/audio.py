"""Reading audio -> mono float32 at 16 kHz: soundfile's formats (NIST SPHERE, WAV, FLAC, OGG, MP3), and
whatever else FFmpeg decodes (m4a / AAC from phones, webm / Opus from browsers, the audio of mp4 / mkv,
AMR) through PyAV, whose wheels carry FFmpeg."""
from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16_000  # every model in this package works at 16 kHz

AudioInput = str | Path | np.ndarray | torch.Tensor


class AudioError(ValueError):
    """Raised when an audio file cannot be used; the message names the file and the reason."""


class AudioTooLong(AudioError):
    """Raised when audio passes a caller's duration limit: by its header's own length (nothing decoded), or
    while decoding (stopped there, so memory stays bounded by the limit, not by the file)."""

    def __init__(self, source, limit: float, seconds: float | None):
        self.limit, self.seconds = limit, seconds         # seconds: the declared length, or None (more than limit)
        lasts = f"{seconds:.1f} s" if seconds is not None else f"more than {limit:g} s"
        super().__init__(f"{source}: lasts {lasts}; at most {limit:g} s are taken")


BLOCK_SECONDS = 30.0        # audio decoded at a time when a duration limit applies
UNKNOWN_FRAMES = 2 ** 40    # libsndfile's frame count for a stream of unknown length is huge; not a length
DECLARED_MARGIN = 1.25      # a container's declared duration refuses before decoding only when this far past the
#                             limit: some are estimates (MP3 from its bitrate); nearer, the decoded audio decides


@dataclass(frozen=True)
class AudioInfo:
    frames: int          # samples per channel
    samplerate: int
    channels: int
    format: str          # soundfile's format name (WAV, FLAC, NIST...), or FFmpeg's container name

    @property
    def duration(self) -> float:
        return self.frames / self.samplerate


def audio_info(path: str | Path) -> AudioInfo:
    """The file's length, rate and channels: soundfile's header, else PyAV's (decoding when the container's
    header does not say, as browsers' webm files do not). AudioError names the file and both reasons."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
        return AudioInfo(info.frames, info.samplerate, info.channels, info.format)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        first = e
    samples, sr, container = _decode_av(path, None, None, first)
    return AudioInfo(samples.shape[0], sr, samples.shape[1], container)


def read_audio(path: str | Path, start: float | None = None, end: float | None = None,
               max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read a file as it is stored: (samples, channels) float32 in [-1, 1], and its sample rate.

    `start` / `end` (seconds) read only that span (a segment of a longer recording). soundfile reads
    what it can; PyAV (FFmpeg) the rest; when neither can, the AudioError names the file and both reasons.
    `max_seconds`: AudioTooLong once the audio passes it, from the header's length or while decoding.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    try:
        samples, sr = _read_soundfile(str(path), path, start, end, max_seconds)
    except AudioError:
        raise
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        samples, sr, _ = _decode_av(path, start, end, e, max_seconds)
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples")
    return samples, sr


def _read_soundfile(source, name, start: float | None, end: float | None,
                    max_seconds: float | None) -> tuple[np.ndarray, int]:
    """(samples (S, C) float32, rate) through soundfile from a path or a file object; with `max_seconds`, refused
    from the header's length when it says more, else read in blocks and stopped once past it."""
    with sf.SoundFile(source) as f:
        sr = f.samplerate
        first, last = _span(name, f.frames, sr, start, end)
        if max_seconds is None:
            if first:
                f.seek(first)
            return f.read(last - first, dtype="float32", always_2d=True), sr            # (S, C)
        limit, block = int(max_seconds * sr), max(1, int(BLOCK_SECONDS * sr))
        if f.frames < UNKNOWN_FRAMES and last - first > limit:
            raise AudioTooLong(name, max_seconds, (last - first) / sr)
        if f.frames >= UNKNOWN_FRAMES and f.seekable():     # its length unknown: counted first, a block at a time,
            f.seek(first)                                   # so a refusal never holds more than one block
            counted = 0
            while counted <= limit and (n := f.read(block, dtype="float32", always_2d=True).shape[0]):
                counted += n
            if counted > limit:
                raise AudioTooLong(name, max_seconds, None)
        f.seek(first)
        blocks, held = [], 0
        while held < last - first:
            part = f.read(min(block, last - first - held), dtype="float32", always_2d=True)
            if part.shape[0] == 0:
                break
            held += part.shape[0]
            if held > limit:
                raise AudioTooLong(name, max_seconds, None)
            blocks.append(part)
    channels = blocks[0].shape[1] if blocks else 1
    return (np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)), sr


def _decode_av(path: Path, start: float | None, end: float | None, soundfile_error: Exception,
               max_seconds: float | None = None):
    """(samples (S, C) float32, rate, container name) of the first audio stream, decoded by FFmpeg (PyAV).
    `max_seconds`: refused from the container's declared duration when it says more, else stopped once the
    decoded audio passes it."""
    container, stream, fail = _av_open(path, soundfile_error)
    try:
        with container:
            limit = max_seconds if start is None and end is None else None      # a span is checked once cut
            if limit is not None:
                declared = _declared_seconds(container, stream)           # an estimate for some (MP3 by bitrate)
                if declared is not None and declared > DECLARED_MARGIN * limit:
                    raise AudioTooLong(path, limit, declared)
            parts, held = [], 0
            for part, rate in _av_frames(container, stream):              # each (C, n)
                parts.append(part)
                held += part.shape[1]
                if limit is not None and rate and held > limit * rate:
                    raise AudioTooLong(path, max_seconds, None)
            sr, name = stream.codec_context.sample_rate, container.format.name
    except AudioError:
        raise
    except Exception as e:  # av.error.* (InvalidDataError...), ValueError, OSError
        raise fail(f"{type(e).__name__}: {e}") from e
    if not parts or not sr:
        raise fail("no samples decoded")
    samples = np.ascontiguousarray(np.concatenate(parts, axis=1).T, dtype=np.float32)   # (S, C)
    first, last = _span(path, samples.shape[0], sr, start, end)
    if max_seconds is not None and last - first > max_seconds * sr:
        raise AudioTooLong(path, max_seconds, (last - first) / sr)
    return samples[first:last], sr, name


def _av_open(path: Path, soundfile_error: Exception):
    """(container, its first audio stream, fail) through PyAV (FFmpeg); `fail(reason)` is the AudioError that
    names the file and both readers' reasons, raised here when the file does not open or has no audio."""
    def fail(reason: str):
        return AudioError(f"{path}: cannot decode audio (soundfile: {soundfile_error}; FFmpeg: {reason})")

    try:
        import av
    except ImportError:
        raise fail("PyAV is not installed (pip install av)") from soundfile_error
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except Exception as e:  # av.error.* (InvalidDataError...), ValueError, OSError
        raise fail(f"{type(e).__name__}: {e}") from e
    stream = next((s for s in container.streams if s.type == "audio"), None)
    if stream is None:
        container.close()
        raise fail("no audio stream in it")
    return container, stream, fail


def _av_frames(container, stream):
    """The stream decoded: ((C, n) float32 at its own rate and layout, that rate) a frame at a time."""
    import av

    resampler = av.AudioResampler(format="fltp")            # float planar, its own rate and layout
    for packet in container.demux(stream):
        for frame in packet.decode():
            yield from ((f.to_ndarray(), frame.sample_rate) for f in resampler.resample(frame))
    yield from ((f.to_ndarray(), f.sample_rate) for f in resampler.resample(None))


@dataclass(frozen=True)
class AudioWindow:
    start: int              # its first sample's place in the whole file (samples at the requested rate)
    wave: torch.Tensor      # (S,) float32 mono
    last: bool              # nothing of the file follows it


WINDOW_MARGIN = 0.05        # seconds of the file's own samples resampled on each side of a window, then dropped: the
#                             resampling filter's reach (~20 samples), so windows join exactly as one pass would


def audio_windows(path: str | Path, sr: int = SAMPLE_RATE, seconds: float = 300.0):
    """A file as consecutive windows of about `seconds` of (S,) float32 mono at `sr` (AudioWindow), decoded a
    block at a time: a file of any length is read holding one window and one block, never all of it.
    Joined, the windows are load_audio(path, sr) (resampled with a margin on each side that is then dropped)."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    rate, blocks = _mono_blocks(path)
    g = gcd(rate, sr)
    unit = rate // g                            # own samples per resampling period (sr // g samples out)
    size = max(1, round(seconds * rate / unit)) * unit
    margin = -(-int(WINDOW_MARGIN * rate) // unit) * unit if rate != sr else 0

    def out(samples: np.ndarray, left: int, n: int | None) -> torch.Tensor:
        """Resampled (left context, window[, right context]) -> the window's own samples."""
        if not np.isfinite(samples).all():
            raise AudioError(f"{path}: non-finite samples (NaN or infinity)")
        wave = resample(torch.from_numpy(samples), rate, sr)[left // unit * (sr // g):]
        return (wave if n is None else wave[:n // unit * (sr // g)]).contiguous()

    held, first = np.zeros(0, np.float32), 0      # own samples from `first` on
    emitted, done = 0, 0                          # own samples already in windows, and theirs at `sr`
    for block in blocks:
        held = np.concatenate([held, block])
        while first + held.shape[0] > emitted + size + margin:    # (more than a window: one always follows)
            left = emitted - first
            wave = out(held[:left + size + margin], left, size)
            yield AudioWindow(done, wave, False)
            done, emitted = done + wave.shape[0], emitted + size
            keep = emitted - margin - first                 # the next window's left context onwards
            held, first = held[keep:], first + keep
    if first + held.shape[0] == 0:
        raise AudioError(f"{path}: contains no samples")
    yield AudioWindow(done, out(held, emitted - first, None), True)


def _mono_blocks(path: Path, seconds: float = BLOCK_SECONDS):
    """(the file's rate, an iterator of (n,) float32 mono blocks at that rate): soundfile, else FFmpeg (PyAV)."""
    try:
        f = sf.SoundFile(str(path))
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        return _av_mono_blocks(path, e)

    def blocks():
        with f:
            while True:
                try:
                    part = f.read(max(1, int(seconds * f.samplerate)), dtype="float32", always_2d=True)   # (n, C)
                except Exception as e:
                    raise AudioError(f"{path}: cannot read past {f.tell() / f.samplerate:.1f} s: {e}") from e
                if part.shape[0] == 0:
                    return
                yield part[:, 0].copy() if part.shape[1] == 1 else part.mean(axis=1)
    return f.samplerate, blocks()


def _av_mono_blocks(path: Path, soundfile_error: Exception):
    container, stream, fail = _av_open(path, soundfile_error)
    rate = stream.codec_context.sample_rate
    if not rate:
        container.close()
        raise fail("no sample rate")

    def blocks():
        with container:
            try:
                for part, _ in _av_frames(container, stream):
                    yield part.mean(axis=0, dtype=np.float32)                 # (C, n) -> (n,)
            except Exception as e:  # av.error.* (InvalidDataError...), ValueError, OSError
                raise fail(f"{type(e).__name__}: {e}") from e
    return rate, blocks()


def _declared_seconds(container, stream) -> float | None:
    """The audio stream's length as the container declares it (None where it does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000                  # microseconds (av.time_base)
    return None


def _span(path: Path, frames: int, sr: int, start: float | None, end: float | None) -> tuple[int, int]:
    """The sample range [first, last) of the `start`-`end` seconds of a file `frames` long (all of it for None)."""
    first = round((start or 0.0) * sr)
    last = frames if end is None else min(round(end * sr), frames)
    if start is not None and first >= last:
        raise AudioError(f"{path}: segment {start:.2f}-{end:.2f} s is outside its {frames / sr:.2f} s")
    return first, last


def resample(wave: torch.Tensor, orig_sr: int, new_sr: int = SAMPLE_RATE) -> torch.Tensor:
    """Band-limited resampling of (..., S) samples; a no-op when the rates agree."""
    if orig_sr == new_sr:
        return wave
    g = gcd(orig_sr, new_sr)
    return AF.resample(wave, orig_sr // g, new_sr // g)


def load_audio(audio: AudioInput, sr: int = SAMPLE_RATE, start: float | None = None,
               end: float | None = None, max_seconds: float | None = None) -> torch.Tensor:
    """Return (S,) float32 mono samples at `sr` (of a path: only `start`-`end` seconds, when given).

    A path is read with soundfile, downmixed by averaging channels and resampled; an array or
    tensor is taken to be mono (S,) samples already at `sr`. `max_seconds`: see read_audio.
    """
    if isinstance(audio, (str, Path)):
        samples, file_sr = read_audio(audio, start, end, max_seconds)
        return _mono_at(samples, file_sr, sr, audio)
    wave = torch.as_tensor(audio, dtype=torch.float32)
    if wave.dim() != 1:
        raise AudioError(f"in-memory audio must be mono (S,) samples, got shape {tuple(wave.shape)}")
    return wave


def load_audio_bytes(data: bytes, sr: int = SAMPLE_RATE, name: str = "the audio", suffix: str = "",
                     max_seconds: float | None = None) -> torch.Tensor:
    """An encoded file held in memory (an upload, say) -> (S,) float32 mono samples at `sr`.

    soundfile's formats are read from the bytes themselves; anything else goes to FFmpeg through a
    temporary file of its own (`suffix`, e.g. ".m4a", is its hint). AudioError messages call it `name`.
    `max_seconds`: AudioTooLong as soon as the audio is known to pass it (see read_audio).
    """
    try:
        samples, file_sr = _read_soundfile(io.BytesIO(data), name, None, None, max_seconds)   # (S, C)
    except AudioTooLong:
        raise
    except Exception:  # not a soundfile format: FFmpeg, which reads paths
        with tempfile.NamedTemporaryFile(suffix=suffix, prefix="asr-audio-") as f:
            f.write(data)
            f.flush()
            try:
                return load_audio(f.name, sr, max_seconds=max_seconds)
            except AudioTooLong as e:
                raise AudioTooLong(name, e.limit, e.seconds) from None
            except AudioError as e:
                raise AudioError(str(e).replace(f.name, name)) from None
    if samples.shape[0] == 0:
        raise AudioError(f"{name}: contains no samples")
    return _mono_at(samples, file_sr, sr, name)


def _mono_at(samples: np.ndarray, file_sr: int, sr: int, source) -> torch.Tensor:
    """(S, C) samples at `file_sr` -> (S,) contiguous float32, channels averaged, resampled to `sr`."""
    if not np.isfinite(samples).all():
        raise AudioError(f"{source}: non-finite samples (NaN or infinity)")
    wave = torch.from_numpy(samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1))  # (S,)
    return resample(wave, file_sr, sr).contiguous()


def audio_duration(path: str | Path) -> float:
    """Duration in seconds, from the header where it says (audio_info)."""
    return audio_info(path).duration


def find_pauses(wave: torch.Tensor, sr: int = SAMPLE_RATE, min_pause: float = 0.3, floor_db: float = 35.0,
                frame: float = 0.02) -> list[tuple[int, int]]:
    """(start, end) sample spans of pauses in (S,) audio: runs of at least `min_pause` seconds whose
    20 ms frames are `floor_db` below the loud end (95th percentile) of the file's frame energies."""
    hop = int(frame * sr)
    n = wave.shape[0] // hop
    if n == 0:
        return []
    energy = wave[: n * hop].reshape(n, hop).pow(2).mean(1)                 # (frames,)
    db = 10 * torch.log10(energy + 1e-10)
    quiet = (db < torch.quantile(db, 0.95) - floor_db).tolist()
    pauses, start = [], None
    for i, q in enumerate(quiet + [False]):
        if q and start is None:
            start = i
        elif not q and start is not None:
            if (i - start) * frame >= min_pause:
                pauses.append((start * hop, i * hop))
            start = None
    return pauses


def split_at_pauses(wave: torch.Tensor, sr: int = SAMPLE_RATE, min_pause: float = 0.3) -> list[tuple[int, int]]:
    """(start, end) sample spans of the speech between pauses (each cut in a pause's middle), covering all of `wave`."""
    cuts = [(a + b) // 2 for a, b in find_pauses(wave, sr, min_pause)]
    bounds = [0, *[c for c in cuts if 0 < c < wave.shape[0]], wave.shape[0]]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
