"""Transcribing audio with a trained model: `load_model(path).transcribe(file_or_files)`.

The model runs on a backend (asr.backends: a checkpoint, an exported file); everything after its
log-probs is here and the same for all of them. Results carry the text and its words with
start / end times (seconds) and confidences. Inputs longer than `ChunkingOptions.chunk_seconds`
are first cut at their pauses (a model trained on
single utterances decodes each stretch of speech best alone); a stretch still longer is cut
into overlapping chunks whose central frames are kept and joined, so it is decoded as one
sequence of frames (nothing duplicated or dropped at the seams).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

from .audio import AudioError, AudioInput, load_audio, split_at_pauses
from .backends import Backend, load_backend
from .data import length_batches, pad_waves
from .decode import BeamSearch, DecodingOptions, TokenPath, greedy_paths, words_of
from .stream import StreamingTranscriber
from .transcripts import Transcript, Word


@dataclass(frozen=True)
class ChunkingOptions:
    """How inputs are grouped into forward passes and long ones cut (any backend, any search)."""
    batch_seconds: float = 200.0    # padded audio per forward pass when decoding many inputs
    chunk_seconds: float = 30.0     # longer inputs are cut at pauses, then into overlapping chunks of this length
    chunk_overlap: float = 2.0      # seconds of context on each side of a chunk, discarded after the forward pass
    min_pause: float = 0.3          # long inputs are first cut at pauses at least this long (seconds)

    def __post_init__(self):
        if self.chunk_seconds <= 2 * self.chunk_overlap:
            raise ValueError(f"chunk_seconds ({self.chunk_seconds}) must exceed twice chunk_overlap "
                             f"({self.chunk_overlap})")


class Transcriber:
    """A model ready to transcribe: a backend (waveforms -> log-probs), then CTC decoding per `options`,
    long inputs cut and many batched per `chunking`."""

    def __init__(self, backend: Backend, options: DecodingOptions = DecodingOptions(),
                 chunking: ChunkingOptions = ChunkingOptions()):
        self.backend, self.chunking = backend, chunking
        self.vocab = backend.vocab
        self.sample_rate = backend.sample_rate
        self.frame_seconds = backend.frame_seconds
        self.options = options

    @property
    def options(self) -> DecodingOptions:
        return self._options

    @options.setter
    def options(self, options: DecodingOptions) -> None:
        self._options = options
        self._beam = BeamSearch(options, self.vocab) if options.method == "beam" else None

    def with_options(self, **changes) -> Transcriber:
        """The same model with some options changed: decoding ones (method="beam", lm=...) or chunking
        ones (chunk_seconds=20, ...)."""
        chunking = {f.name for f in fields(ChunkingOptions)}
        unknown = set(changes) - chunking - {f.name for f in fields(DecodingOptions)}
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        decoding = {k: v for k, v in changes.items() if k not in chunking}
        return Transcriber(self.backend, replace(self.options, **decoding),
                           replace(self.chunking, **{k: v for k, v in changes.items() if k in chunking}))

    def stream(self) -> StreamingTranscriber:
        """A StreamingTranscriber (asr.stream) for this unidirectional model: feed chunks, read partials."""
        return StreamingTranscriber(self)

    def transcribe(self, audio: AudioInput | list[AudioInput], errors: str = "raise") -> Transcript | list[Transcript]:
        """One input -> one Transcript; a list -> a list, decoded in length-sorted batches.

        Inputs are paths (any soundfile format, any rate, mono or not) or (S,) 16 kHz samples. An
        input that cannot be read raises AudioError naming it; with errors="keep" it gives a
        Transcript with empty text and `error` set instead, and the other inputs are transcribed.
        """
        if errors not in ("raise", "keep"):
            raise ValueError(f"errors must be 'raise' or 'keep', not {errors!r}")
        if isinstance(audio, (list, tuple)):
            return self._transcribe_many(list(audio), errors)
        return self._transcribe_many([audio], errors)[0]

    def _transcribe_many(self, inputs: list[AudioInput], errors: str = "raise") -> list[Transcript]:
        loaded: dict[int, torch.Tensor | str] = {}
        for i, a in enumerate(inputs):
            try:
                loaded[i] = load_audio(a, self.sample_rate)
            except AudioError as e:
                if errors == "raise":
                    raise
                loaded[i] = str(e)
        ok = [i for i in range(len(inputs)) if not isinstance(loaded[i], str)]
        done = dict(zip(ok, self._decode_inputs([inputs[i] for i in ok], [loaded[i] for i in ok])))
        name = lambda a: str(a) if isinstance(a, (str, Path)) else None
        return [done[i] if i in done else Transcript("", 0.0, name(a), (), loaded[i]) for i, a in enumerate(inputs)]

    def _decode_inputs(self, inputs: list[AudioInput], waves: list[torch.Tensor]) -> list[Transcript]:
        pieces, owner, offset = self._segments(waves)
        results: list[list[Word]] = [[] for _ in pieces]
        groups = self._groups(pieces)
        for group in tqdm(groups, desc="decoding", unit="batch", leave=False,
                          disable=len(groups) < 4 or not sys.stderr.isatty()):
            for i, words in zip(group, self.decode_waves([pieces[i] for i in group])):
                results[i] = words
        words: list[list[Word]] = [[] for _ in waves]
        for k, ws in enumerate(results):                                   # segments back into their inputs
            shift = offset[k] / self.sample_rate
            words[owner[k]] += [replace(w, start=w.start + shift, end=w.end + shift) for w in ws]
        return [Transcript(self.vocab.separator.join(w.text for w in ws), wave.shape[0] / self.sample_rate,
                           str(a) if isinstance(a, (str, Path)) else None, tuple(ws))
                for ws, wave, a in zip(words, waves, inputs)]

    def _segments(self, waves: list[torch.Tensor]):
        """Inputs longer than chunk_seconds are cut at their pauses, so each stretch of speech is decoded
        as the model was trained: alone. Returns the pieces, each one's input and start sample."""
        pieces, owner, offset = [], [], []
        for i, wave in enumerate(waves):
            spans = ([(0, wave.shape[0])] if wave.shape[0] <= self.chunking.chunk_seconds * self.sample_rate
                     else split_at_pauses(wave, self.sample_rate, self.chunking.min_pause))
            for a, b in spans:
                pieces.append(wave[a:b])
                owner.append(i)
                offset.append(a)
        return pieces, owner, offset

    def _groups(self, waves: list[torch.Tensor]) -> list[list[int]]:
        if not self.backend.batches:
            return [[i] for i in range(len(waves))]
        long = self.chunking.chunk_seconds * self.sample_rate
        short = [i for i, w in enumerate(waves) if w.shape[0] <= long]
        seconds = [waves[i].shape[0] / self.sample_rate for i in short]
        fps = self.backend.features.frames_per_second
        budget = min(self.chunking.batch_seconds, self.backend.batch_seconds or float("inf"))
        batches = [[short[j] for j in b] for b in length_batches(seconds, int(budget * fps), fps)]
        return batches + [[i] for i, w in enumerate(waves) if w.shape[0] > long]

    def log_probs(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """List of (S_i,) samples -> (N, T', V) CPU log-probs and (N,) lengths, in one padded forward pass
        (one input longer than chunk_seconds is cut into overlapping chunks and its frames joined)."""
        if len(waves) == 1 and waves[0].shape[0] > self.chunking.chunk_seconds * self.sample_rate:
            return self._chunked(waves[0])
        return self._forward(waves)

    def _forward(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.backend.log_probs(*pad_waves(waves))                   # (N, S), (N,) -> (N, T', V), (N,)

    def _chunked(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames of a long (S,) input from overlapping chunks, joined at seams in their overlaps.

        Chunk k covers [k*step - pad, (k+1)*step + pad) samples. Near each nominal seam (within
        half the overlap) the cut goes where both neighbours are most sure of a blank, so no
        character is emitted on both sides of it or on neither.
        """
        frame = self.backend.frame_samples                                  # samples per output frame
        c = self.chunking
        step = int((c.chunk_seconds - 2 * c.chunk_overlap) * self.sample_rate) // frame * frame
        pad = int(c.chunk_overlap * self.sample_rate) // frame * frame
        chunks = []                                                         # (first global frame, (T'_k, V))
        for start in range(0, wave.shape[0], step):
            begin = max(0, start - pad)                                    # a multiple of `frame`: frames line up
            lp, n = self._forward([wave[begin:start + step + pad]])        # (1, T'_k, V)
            chunks.append((begin // frame, lp[0, :n[0]]))
        pieces, cut = [], 0                                                 # cut: next global frame to take
        for k, (first, lp) in enumerate(chunks):
            end = first + lp.shape[0]
            if k + 1 < len(chunks):
                nxt_first, nxt = chunks[k + 1]
                seam, reach = (k + 1) * step // frame, pad // frame // 2
                lo, hi = max(seam - reach, nxt_first, cut), min(seam + reach, end)
                if hi > lo:
                    both = torch.minimum(lp[lo - first:hi - first, 0], nxt[lo - nxt_first:hi - nxt_first, 0])
                    seam = lo + int(both.argmax())                          # the surest shared blank
                pieces.append(lp[cut - first:seam - first])
                cut = seam
            else:
                pieces.append(lp[cut - first:])
        joined = torch.cat(pieces)                                          # (T', V)
        return joined[None], torch.tensor([joined.shape[0]])

    def decode_waves(self, waves: list[torch.Tensor]) -> list[list[Word]]:
        """List of (S_i,) samples -> per input its words (with times and confidences)."""
        log_probs, lengths = self.log_probs(waves)
        paths: list[TokenPath] = (self._beam(log_probs, lengths) if self._beam is not None
                                  else greedy_paths(log_probs, lengths))
        return [words_of(p, log_probs[i, :lengths[i]], self.vocab, self.frame_seconds) for i, p in enumerate(paths)]


def load_model(path: str | Path, device: str | torch.device = "cpu", options: DecodingOptions = DecodingOptions(),
               chunking: ChunkingOptions = ChunkingOptions()) -> Transcriber:
    """A Transcriber rebuilt from a model file alone: a checkpoint (e.g. `data/an4/exp/cpu/best.pt`) or an
    exported model (`asr export`); asr.backends picks the backend that reads it."""
    return Transcriber(load_backend(path, device), options, chunking)


__all__ = ["Transcript", "Transcriber", "ChunkingOptions", "load_model"]
