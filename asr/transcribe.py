"""Transcribing audio with a trained model: `load_model(path).transcribe(file_or_files)`.

The model runs on a backend (asr.backends: a checkpoint, an exported file); everything after its
log-probs is here and the same for all of them. Results carry the text and its words with
start / end times (seconds) and confidences. Inputs longer than `ChunkingOptions.chunk_seconds`
are first cut at their pauses (a model trained on
single utterances decodes each stretch of speech best alone); a stretch still longer is cut
into overlapping chunks whose central frames are kept and joined, so it is decoded as one
sequence of frames (nothing duplicated or dropped at the seams). A file longer than
`ChunkingOptions.window_seconds` is read a window at a time and each window cut so, the speech at
a window's end waiting for the next: an hour-long file holds one window, not the hour.
"""
from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch
from tqdm import tqdm

from .audio import AudioError, AudioInput, audio_windows, load_audio, split_at_pauses
from .backends import Backend, load_backend
from .data import length_batches, pad_waves
from .decode import BeamSearch, DecodingOptions, TokenPath, greedy_paths, words_of
from .native import keep_freed_memory
from .stream import STREAM_MODES, EndpointRules, RedecodingTranscriber, StreamingTranscriber
from .transcripts import Alternative, Transcript, Word
from .vad import VadOptions, speech_regions

VAD_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class ChunkingOptions:
    """How inputs are grouped into forward passes and long ones cut (any backend, any search)."""
    batch_seconds: float = 100.0    # padded audio per forward pass when decoding many inputs: at 100 s a batch's
    #                                 largest tensors (the spectra's frames) stay under glibc's 32 MiB mmap ceiling,
    #                                 so their memory is reused rather than page-faulted anew each batch (AN4 test
    #                                 1.15-1.2x faster than at 200 s on 1 and 2 threads, recipes/an4/RESULTS.md)
    chunk_seconds: float = 30.0     # longer inputs are cut at pauses, then into overlapping chunks of this length
    chunk_overlap: float = 2.0      # seconds of context on each side of a chunk, discarded after the forward pass
    min_pause: float = 0.3          # long inputs are first cut at pauses at least this long (seconds)
    vad: str = "auto"               # where speech is (asr.vad): on | off | auto: for inputs longer than chunk_seconds,
    #                                 whose non-speech is then not decoded at all (else energy pauses cut them)
    vad_min_gap: float = 2.0        # with vad: non-speech this long (seconds) is left out; shorter pauses cut in their
    #                                 middle, as without (recipes/an4/RESULTS.md, "Steering at run time")
    window_seconds: float = 300.0   # a file longer than this (and chunk_seconds) is read and decoded a window at a
    #                                 time (cut at its pauses as above), so an hour-long file holds one window

    def __post_init__(self):
        if self.chunk_seconds <= 2 * self.chunk_overlap:
            raise ValueError(f"chunk_seconds ({self.chunk_seconds}) must exceed twice chunk_overlap "
                             f"({self.chunk_overlap})")
        if self.vad not in VAD_MODES:
            raise ValueError(f"vad must be one of {', '.join(VAD_MODES)}, not {self.vad!r}")

    @property
    def window(self) -> float:
        """Seconds of a long file read at a time: window_seconds, never less than chunk_seconds."""
        return max(self.window_seconds, self.chunk_seconds)


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
        self._beam = BeamSearch(options, self.vocab) if options.searches else None

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

    def stream(self, mode: str = "auto", endpoints: EndpointRules | None = EndpointRules(),
               every: float = 1.0) -> StreamingTranscriber | RedecodingTranscriber:
        """A stream (asr.stream): feed chunks, read partials and each utterance's final. Mode "frames" (a
        unidirectional model: frame by frame, as exact as an offline pass), "redecode" (any model: the utterance
        so far decoded again every `every` seconds) or "auto" (frames where the model can). `endpoints`: the
        rules that end utterances on silence (None: one utterance, ended by finish())."""
        if mode not in STREAM_MODES:
            raise ValueError(f"stream mode must be one of {', '.join(STREAM_MODES)}, not {mode!r}")
        if mode == "frames" or (mode == "auto" and self.backend.streams):
            return StreamingTranscriber(self, endpoints)
        return RedecodingTranscriber(self, endpoints, every)

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
        done: dict[int, Transcript] = {}
        for i, a in enumerate(inputs):
            try:
                if isinstance(a, (str, Path)):                  # a file: whole when short, else window by window
                    windows = audio_windows(a, self.sample_rate, self.chunking.window)
                    first = next(windows)
                    if first.last:
                        loaded[i] = first.wave
                    else:
                        done[i] = self._transcribe_windows(a, itertools.chain([first], windows))
                else:
                    loaded[i] = load_audio(a, self.sample_rate)
            except AudioError as e:
                if errors == "raise":
                    raise
                loaded[i] = str(e)
        ok = [i for i in loaded if not isinstance(loaded[i], str)]
        done.update(zip(ok, self._decode_inputs([inputs[i] for i in ok], [loaded[i] for i in ok])))
        name = lambda a: str(a) if isinstance(a, (str, Path)) else None
        return [done[i] if i in done else Transcript("", 0.0, name(a), (), loaded[i]) for i, a in enumerate(inputs)]

    def _transcribe_windows(self, source: str | Path, windows) -> Transcript:
        """A long file from its consecutive windows (asr.audio.audio_windows), holding one at a time. Each is cut as
        one input is (_spans); its last stretch of speech, which may go on in the next window, waits for it."""
        carry, words, total = torch.zeros(0), [], 0
        most = int(self.chunking.window * self.sample_rate) // 2   # the most carried into the next window
        context = int(self.chunking.vad_min_gap * self.sample_rate)
        for w in windows:
            wave = torch.cat([carry, w.wave])                              # (S,) samples from w.start - len(carry)
            base, total = w.start - carry.shape[0], w.start + w.wave.shape[0]
            spans, carry = self._spans(wave, long=True), wave[:0]
            if not w.last:                     # the last stretch waits, with the pause before it (VAD hears the onset)
                a, b = spans[-1] if spans else (wave.shape[0], wave.shape[0])
                a = max(a - context, spans[-2][1] if len(spans) > 1 else 0)
                keep = a if wave.shape[0] - a <= most else b if wave.shape[0] - b <= most else wave.shape[0]
                carry, spans = wave[keep:], [(x, min(y, keep)) for x, y in spans if x < keep]
            pieces = [wave[a:b] for a, b in spans]
            for (a, _), (ws, _) in zip(spans, self._decode_pieces(pieces)):
                shift = (base + a) / self.sample_rate
                words += [replace(x, start=x.start + shift, end=x.end + shift) for x in ws]
        return Transcript(self.vocab.separator.join(x.text for x in words), total / self.sample_rate, str(source),
                          tuple(words))

    def _decode_pieces(self, pieces: list[torch.Tensor]) -> list[tuple[list[Word], tuple[Alternative, ...]]]:
        """(S_k,) pieces -> each one's words and alternatives, decoded in length-sorted batches."""
        groups = self._groups(pieces)
        if len(groups) >= 4 and sys.stderr.isatty():   # a bar for long jobs; none built for a server's request
            groups = tqdm(groups, desc="decoding", unit="batch", leave=False)
        # each batch's forward pass as its turn comes (a long job holds one batch's log-probs at a time)
        return self._decode_passes(len(pieces), ((g, self.log_probs([pieces[i] for i in g])) for g in groups))

    def _decode_passes(self, n: int, passes) -> list[tuple[list[Word], tuple[Alternative, ...]]]:
        """(group of piece indices, (log_probs, lengths) of its forward pass) pairs -> each of the n pieces' words
        and alternatives."""
        results: list[tuple] = [([], ()) for _ in range(n)]
        for group, (log_probs, lengths) in passes:
            for i, decoded in zip(group, self._decoded(log_probs, lengths)):
                results[i] = decoded
        return results

    def transcribe_later(self, audio: list[AudioInput]) -> Callable[[], list[Transcript]]:
        """transcribe(audio) in two parts: the model's forward passes now (inputs cut as transcribe cuts them), the
        decoding when the returned function is called (where a server's model thread runs the next batch meanwhile:
        asr.serve.batch). Files, which may be read a window at a time, are transcribed whole now."""
        if any(isinstance(a, (str, Path)) for a in audio):
            done = self._transcribe_many(list(audio))
            return lambda: done
        waves = [load_audio(a, self.sample_rate) for a in audio]
        pieces, owner, offset = self._segments(waves)
        passes = [(group, self.log_probs([pieces[i] for i in group])) for group in self._groups(pieces)]
        return lambda: self._transcripts(list(audio), waves, self._decode_passes(len(pieces), passes), owner, offset)

    def _decode_inputs(self, inputs: list[AudioInput], waves: list[torch.Tensor]) -> list[Transcript]:
        pieces, owner, offset = self._segments(waves)
        return self._transcripts(inputs, waves, self._decode_pieces(pieces), owner, offset)

    def _transcripts(self, inputs: list[AudioInput], waves: list[torch.Tensor], results: list[tuple],
                     owner: list[int], offset: list[int]) -> list[Transcript]:
        """Each input's Transcript from its pieces' words and alternatives (piece k: input owner[k] from sample
        offset[k])."""
        words: list[list[Word]] = [[] for _ in waves]
        alternatives: list[tuple] = [() for _ in waves]
        for k, (ws, alts) in enumerate(results):                           # segments back into their inputs
            shift = offset[k] / self.sample_rate
            words[owner[k]] += [replace(w, start=w.start + shift, end=w.end + shift) for w in ws]
            alternatives[owner[k]] = alts if owner.count(owner[k]) == 1 else ()   # n-best of an input in one piece
        return [Transcript(self.vocab.separator.join(w.text for w in ws), wave.shape[0] / self.sample_rate,
                           str(a) if isinstance(a, (str, Path)) else None, tuple(ws), alternatives=alts)
                for ws, alts, wave, a in zip(words, alternatives, waves, inputs)]

    def _segments(self, waves: list[torch.Tensor]):
        """Inputs longer than chunk_seconds are cut at the edges of their speech (VAD: non-speech of vad_min_gap
        seconds or more is not decoded) and at their pauses, so each stretch of speech is decoded as the model
        was trained: alone; with vad "on", every input's speech alone is. Returns the pieces, each one's input and
        start sample."""
        pieces, owner, offset = [], [], []
        for i, wave in enumerate(waves):
            for a, b in self._spans(wave, wave.shape[0] > self.chunking.chunk_seconds * self.sample_rate):
                pieces.append(wave[a:b])
                owner.append(i)
                offset.append(a)
        return pieces, owner, offset

    def _spans(self, wave: torch.Tensor, long: bool) -> list[tuple[int, int]]:
        """The (start, end) sample spans of one (S,) input to decode, each alone (see _segments)."""
        if self.chunking.vad == "on" or (self.chunking.vad == "auto" and long):
            regions = speech_regions(wave, self.sample_rate, self.chunking.vad_min_gap,
                                     VadOptions(min_silence=self.chunking.min_pause))
            return [(a + x, a + y) for a, b in regions
                    for x, y in split_at_pauses(wave[a:b], self.sample_rate, self.chunking.min_pause)]
        if long:
            return split_at_pauses(wave, self.sample_rate, self.chunking.min_pause)
        return [(0, wave.shape[0])]

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

    def decode_waves(self, waves: list[torch.Tensor]) -> list[tuple[list[Word], tuple[Alternative, ...]]]:
        """List of (S_i,) samples -> per input its words (with times and confidences) and, with nbest > 1, its
        n best alternatives (the first is the words')."""
        return self._decoded(*self.log_probs(waves))

    def _decoded(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[tuple[list[Word], tuple]]:
        """decode_waves after the forward pass: (N, T', V) log-probs and (N,) lengths -> each input's words and
        alternatives."""
        nbest: list[list[TokenPath]] = (self._beam.nbest(log_probs, lengths) if self._beam is not None
                                        else [[p] for p in greedy_paths(log_probs, lengths)])
        out = []
        for i, paths in enumerate(nbest):
            lp = log_probs[i, :lengths[i]]
            words = [words_of(p, lp, self.vocab, self.frame_seconds) for p in paths]     # each path's, once
            best = {}                                      # paths that spell the same text: the text once, its best
            for ws, path in zip(words, paths) if len(paths) > 1 else ():
                best.setdefault(self.vocab.separator.join(w.text for w in ws), path.score)
            out.append((words[0], tuple(Alternative(text, score) for text, score in best.items())))
        return out


def load_model(path: str | Path, device: str | torch.device = "cpu", options: DecodingOptions = DecodingOptions(),
               chunking: ChunkingOptions = ChunkingOptions(), precision: str = "fp32") -> Transcriber:
    """A Transcriber rebuilt from a model file alone: a checkpoint (e.g. `data/an4/exp/cpu/best.pt`) or an
    exported model (`asr export`); asr.backends picks the backend that reads it. `precision="bf16"` runs a
    checkpoint's largest products on bfloat16 operands where the CPU runs them faster (AcousticModel.products_in).
    The process's malloc keeps freed memory for the next batch from here on (asr.native.keep_freed_memory)."""
    keep_freed_memory()
    return Transcriber(load_backend(path, device, precision), options, chunking)


__all__ = ["Transcript", "Transcriber", "ChunkingOptions", "load_model"]
