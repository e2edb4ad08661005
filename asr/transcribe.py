"""Transcribing audio with a trained model: `load_model(path).transcribe(file_or_files)`.

Results carry the text and its words with start / end times (seconds) and confidences. Inputs
longer than `DecodingOptions.chunk_seconds` are first cut at their pauses (a model trained on
single utterances decodes each stretch of speech best alone); a stretch still longer is cut
into overlapping chunks whose central frames are kept and joined, so it is decoded as one
sequence of frames (nothing duplicated or dropped at the seams).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .audio import AudioError, AudioInput, load_audio, split_at_pauses
from .data import FRAMES_PER_SECOND, length_batches, pad_waves
from .decode import FRAME_SECONDS, BeamSearch, DecodingOptions, TokenPath, Word, greedy_paths, words_of
from .features import FeatureExtractor
from .model import TIME_STRIDE, AcousticModel
from .text import Vocabulary


@dataclass(frozen=True)
class Transcript:
    text: str
    duration: float                 # seconds of audio
    path: str | None = None         # the file, when the input was one
    words: tuple[Word, ...] = ()    # each with start, end (seconds) and confidence
    error: str | None = None        # why the input could not be transcribed (transcribe(..., errors="keep"))


class Recognizer(nn.Module):
    """Waveforms to log-probabilities: the feature extractor and the acoustic model, the unit that is exported.

    (N, S) float samples + (N,) lengths -> (N, T', V) log-probs + (N,) output lengths.
    """

    def __init__(self, extractor: FeatureExtractor, model: AcousticModel, pack: bool = True):
        super().__init__()
        self.extractor, self.model, self.pack = extractor, model, pack

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, frames = self.extractor(waves, lengths)                 # (N, T, F)
        return self.model(feats, frames, pack=self.pack)               # (N, T', V)


class Transcriber:
    """A model ready to transcribe: waveforms -> log-probs (`network`), then CTC decoding per `options`."""

    def __init__(self, model: AcousticModel, extractor: FeatureExtractor, vocab: Vocabulary,
                 device: str | torch.device = "cpu", options: DecodingOptions = DecodingOptions(),
                 network: nn.Module | None = None, batch: bool = True):
        self.model, self.extractor, self.vocab = model, extractor, vocab
        self.device = torch.device(device)
        # the wrapper takes the model's train / eval state, which each forward pass restores
        self.network = network if network is not None else Recognizer(extractor, model).train(model.training)
        self.batch = batch  # False: one input per forward pass (exported networks run unpacked)
        self.sample_rate = extractor.cfg.sample_rate
        self.options = options

    @property
    def options(self) -> DecodingOptions:
        return self._options

    @options.setter
    def options(self, options: DecodingOptions) -> None:
        self._options = options
        self._beam = BeamSearch(options, self.vocab) if options.method == "beam" else None

    def with_options(self, **changes) -> "Transcriber":
        """The same model with some decoding options changed (e.g. method="beam", lm=...)."""
        other = Transcriber(self.model, self.extractor, self.vocab, self.device, replace(self.options, **changes),
                            self.network, self.batch)
        return other

    def stream(self):
        """A StreamingTranscriber (asr.stream) for this unidirectional model: feed chunks, read partials."""
        from .stream import StreamingTranscriber

        if not isinstance(self.model, AcousticModel):
            raise ValueError("streaming needs the eager model (a checkpoint), not an exported one")
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
        name = lambda a: str(a) if isinstance(a, (str, Path)) else None  # noqa: E731
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
        return [Transcript(" ".join(w.text for w in ws), wave.shape[0] / self.sample_rate,
                           str(a) if isinstance(a, (str, Path)) else None, tuple(ws))
                for ws, wave, a in zip(words, waves, inputs)]

    def _segments(self, waves: list[torch.Tensor]):
        """Inputs longer than chunk_seconds are cut at their pauses, so each stretch of speech is decoded
        as the model was trained: alone. Returns the pieces, each one's input and start sample."""
        pieces, owner, offset = [], [], []
        for i, wave in enumerate(waves):
            spans = ([(0, wave.shape[0])] if wave.shape[0] <= self.options.chunk_seconds * self.sample_rate
                     else split_at_pauses(wave, self.sample_rate, self.options.min_pause))
            for a, b in spans:
                pieces.append(wave[a:b])
                owner.append(i)
                offset.append(a)
        return pieces, owner, offset

    def _groups(self, waves: list[torch.Tensor]) -> list[list[int]]:
        if not self.batch:
            return [[i] for i in range(len(waves))]
        long = self.options.chunk_seconds * self.sample_rate
        short = [i for i, w in enumerate(waves) if w.shape[0] <= long]
        seconds = [waves[i].shape[0] / self.sample_rate for i in short]
        batches = [[short[j] for j in b] for b in length_batches(seconds, int(self.options.batch_seconds * FRAMES_PER_SECOND))]
        return batches + [[i] for i, w in enumerate(waves) if w.shape[0] > long]

    @torch.no_grad()
    def log_probs(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """List of (S_i,) samples -> (N, T', V) CPU log-probs and (N,) lengths, in one padded forward pass
        (one input longer than chunk_seconds is cut into overlapping chunks and its frames joined)."""
        was_training = self.network.training
        self.network.eval()
        try:
            if len(waves) == 1 and waves[0].shape[0] > self.options.chunk_seconds * self.sample_rate:
                return self._chunked(waves[0])
            return self._forward(waves)
        finally:
            self.network.train(was_training)

    def _forward(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        padded, lengths = pad_waves(waves)                                 # (N, S), (N,)
        log_probs, out_lengths = self.network(padded.to(self.device), lengths.to(self.device))  # (N, T', V)
        return log_probs.float().cpu(), out_lengths.cpu()

    def _chunked(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames of a long (S,) input from overlapping chunks, joined at seams in their overlaps.

        Chunk k covers [k*step - pad, (k+1)*step + pad) samples. Near each nominal seam (within
        half the overlap) the cut goes where both neighbours are most sure of a blank, so no
        character is emitted on both sides of it or on neither.
        """
        frame = self.extractor.cfg.hop_length * TIME_STRIDE                # samples per output frame
        step = int((self.options.chunk_seconds - 2 * self.options.chunk_overlap) * self.sample_rate) // frame * frame
        pad = int(self.options.chunk_overlap * self.sample_rate) // frame * frame
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
        return [words_of(p, log_probs[i, :lengths[i]], self.vocab) for i, p in enumerate(paths)]


def format_srt(words: list[Word] | tuple[Word, ...], max_words: int = 8, max_seconds: float = 5.0,
               pause: float = 0.8) -> str:
    """SubRip subtitles: words grouped into cues, a new cue after a pause, `max_words` or `max_seconds`."""
    cues: list[list[Word]] = []
    for w in words:
        if (not cues or len(cues[-1]) >= max_words or w.start - cues[-1][-1].end > pause
                or w.end - cues[-1][0].start > max_seconds):
            cues.append([])
        cues[-1].append(w)

    def stamp(t: float) -> str:
        ms = round(t * 1000)
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    return "".join(f"{k}\n{stamp(c[0].start)} --> {stamp(c[-1].end)}\n{' '.join(w.text for w in c)}\n\n"
                   for k, c in enumerate(cues, 1))


def load_model(path: str | Path, device: str | torch.device = "cpu",
               options: DecodingOptions = DecodingOptions()) -> Transcriber:
    """A Transcriber rebuilt from a checkpoint file alone (e.g. `data/an4/exp/cpu/best.pt`), or from an
    exported TorchScript file (`asr export`)."""
    from .export import is_exported, load_exported
    from .checkpoint import load_checkpoint

    if is_exported(path):
        return load_exported(path, options)
    model, extractor, vocab, _ = load_checkpoint(path, device)
    return Transcriber(model, extractor, vocab, device, options)


__all__ = ["Transcript", "Transcriber", "Recognizer", "load_model", "format_srt", "FRAME_SECONDS"]
