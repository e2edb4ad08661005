"""Streaming transcription: feed audio as it arrives, read the utterance so far as it firms up, and a final
result for each utterance as the stream ends it by itself, on silence.

    stream = asr.load_model("stream.pt").stream()
    for chunk in chunks:                       # (S,) float32 samples at 16 kHz, any length
        partial = stream.feed(chunk)
        print(partial.text)                    # the utterance so far
        for final in partial.finals:           # utterances the endpoint rules ended with this chunk
            print(final.start, final.transcript.text)
    print(stream.finish().text)                # the whole input (and stream.utterances, each utterance)

A unidirectional model streams frame by frame (mode "frames"): every output frame is computed once, as soon
as the audio it depends on has arrived (the feature window, the front end's context, `lookahead` frames),
the backend's stream carrying the state from chunk to chunk, so the frames and the whole transcript are
those of a pass over the whole input; a frame's wait is its algorithmic latency. A bidirectional model
(mode "redecode") decodes the utterance so far again every `every` seconds of audio, offline, as partials.

Endpoints (EndpointRules, sherpa-onnx's three rules): an utterance ends after `silence_after_text` seconds
of trailing silence once it has text, after `silence_without_text` seconds when it has none (then nothing
is emitted), or at `max_utterance` seconds; silence is output frames since the last character the
model emitted (mode "frames"), or the audio since the VAD's last speech (mode "redecode"). The next
utterance starts there; a unidirectional model's recurrent state carries on, so the utterances' characters
are still those of one pass over the whole input.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .decode import greedy_paths, words_of
from .transcripts import Transcript

STREAM_MODES = ("auto", "frames", "redecode")


@dataclass(frozen=True)
class EndpointRules:
    """When a stream ends an utterance by itself (sherpa-onnx's endpoint rules 1-3); see the module doc."""
    silence_after_text: float = 1.2     # seconds of trailing silence that end an utterance with text
    silence_without_text: float = 2.4   # ... and one with none yet (nothing is emitted)
    max_utterance: float = 20.0         # seconds: an utterance this long ends whatever follows

    def ends(self, has_text: bool, trailing: float, length: float) -> bool:
        """Whether an utterance of `length` seconds, `trailing` of them silence, has ended."""
        return (trailing >= (self.silence_after_text if has_text else self.silence_without_text)
                or length >= self.max_utterance)


@dataclass(frozen=True)
class Final:
    """An utterance a stream ended: its transcript (words timed from the stream's start) and its span."""
    transcript: Transcript
    start: float           # seconds from the stream's start
    end: float


@dataclass(frozen=True)
class Partial:
    text: str              # the utterance so far (its last word may still grow)
    seconds: float         # audio received so far
    frames: int            # output frames final so far
    finals: tuple[Final, ...] = ()   # utterances ended by this feed


class _Endpoints:
    """An utterance's frames (T', V) of log-probs, checked against the rules; what streams share."""

    def __init__(self, transcriber, rules: EndpointRules | None):
        self.t, self.rules = transcriber, rules
        self.utterances: list[Final] = []

    def text(self, log_probs: torch.Tensor) -> str:
        if log_probs.shape[0] == 0:
            return ""
        path = greedy_paths(log_probs[None], torch.tensor([log_probs.shape[0]]))[0]
        return self.t.vocab.separator.join(self.t.vocab.decode(path.ids).split())

    def final(self, log_probs: torch.Tensor, start: float) -> Final:
        """The utterance of these frames, starting `start` seconds into the stream, as a Final."""
        n, fs = log_probs.shape[0], self.t.frame_seconds
        path = greedy_paths(log_probs[None], torch.tensor([n]))[0]
        words = [replace(w, start=w.start + start, end=w.end + start)
                 for w in words_of(path, log_probs, self.t.vocab, fs)]
        text = self.t.vocab.separator.join(w.text for w in words)
        return Final(Transcript(text, n * fs, None, tuple(words)), start, start + n * fs)

    def whole(self) -> Transcript:
        """Every utterance's words, as one transcript of the stream so far."""
        words = tuple(w for u in self.utterances for w in u.transcript.words)
        return Transcript(self.t.vocab.separator.join(w.text for w in words), self.samples / self.t.sample_rate,
                          None, words)

    def ended(self, log_probs: torch.Tensor) -> bool:
        """Whether the rules end an utterance of these frames now."""
        if self.rules is None or log_probs.shape[0] == 0:
            return False
        n, fs = log_probs.shape[0], self.t.frame_seconds
        path = greedy_paths(log_probs[None], torch.tensor([n]))[0]
        trailing = n - (path.frames[-1] + 1) if path.ids else n
        return self.rules.ends(bool(path.ids), trailing * fs, n * fs)


class StreamingTranscriber(_Endpoints):
    """Incremental greedy transcription by a unidirectional model, frame by frame (mode "frames")."""

    mode = "frames"

    def __init__(self, transcriber, endpoints: EndpointRules | None = EndpointRules()):
        super().__init__(transcriber, endpoints)
        self.stream = transcriber.backend.stream()          # ValueError for a model that cannot stream
        self.samples = 0                                     # received so far
        self.log_probs = torch.zeros(0, len(transcriber.vocab))  # (T', V) final output frames, the whole input
        self.begin = 0                                       # the utterance in progress starts at this frame

    @torch.no_grad()
    def feed(self, samples) -> Partial:
        """Add (S,) samples at the model's sample rate; returns the utterance so far (the frames now final) and
        the utterances the endpoint rules ended."""
        samples = torch.as_tensor(samples, dtype=torch.float32).flatten()
        self.samples += samples.shape[0]
        self._add(self.stream.feed(samples))
        current, finals = self.log_probs[self.begin:], ()
        if self.ended(current):
            final = self.final(current, self.begin * self.t.frame_seconds)
            finals = (final,) if final.transcript.text else ()
            self.utterances += finals
            self.begin, current = self.log_probs.shape[0], current[:0]
        return Partial(self.text(current), self.samples / self.t.sample_rate, self.log_probs.shape[0], finals)

    @torch.no_grad()
    def finish(self) -> Transcript:
        """The end of the input: the last frames (with the padding an offline pass gives them), the last
        utterance (in `utterances` when it has text), and every utterance's words as one transcript (without
        endpoints: one utterance, as `transcribe` gives the whole input; an endpoint also ends a word)."""
        self._add(self.stream.finish())
        last = self.final(self.log_probs[self.begin:], self.begin * self.t.frame_seconds)
        if last.transcript.text:
            self.utterances.append(last)
        return self.whole()

    def _add(self, log_probs: torch.Tensor) -> None:
        if log_probs.shape[0]:
            self.log_probs = torch.cat([self.log_probs.to(log_probs.dtype), log_probs])  # (T', V)


class RedecodingTranscriber(_Endpoints):
    """Streaming with a bidirectional model (mode "redecode"): the utterance so far decoded again, offline,
    every `every` seconds of new audio; its endpoint looked for every CHECK seconds (by the VAD, see `ended`),
    and the utterance decoded once more when it ends."""

    mode = "redecode"
    CHECK = 0.25                             # seconds of audio between endpoint checks

    def __init__(self, transcriber, endpoints: EndpointRules | None = EndpointRules(), every: float = 1.0):
        super().__init__(transcriber, endpoints)
        self.every = every
        self.audio = torch.zeros(0)          # (S,) the utterance in progress
        self.begin = 0                       # ... starts at this sample of the stream
        self.samples = self.decoded = self.checked = 0   # received; the utterance's samples at its last decode, check
        self.current = torch.zeros(0, len(transcriber.vocab))   # (T', V) that decode's frames

    @torch.no_grad()
    def feed(self, samples) -> Partial:
        samples = torch.as_tensor(samples, dtype=torch.float32).flatten()
        self.samples += samples.shape[0]
        self.audio = torch.cat([self.audio, samples])
        finals, rate = (), self.t.sample_rate
        if self.audio.shape[0] - self.decoded >= self.every * rate:
            self._decode()
        if self.audio.shape[0] - self.checked >= self.CHECK * rate:
            self.checked = self.audio.shape[0]
            if self.ended(self.current):
                if self.decoded < self.audio.shape[0]:
                    self._decode()
                final = self.final(self.current, self.begin / rate)
                finals = (final,) if final.transcript.text else ()
                self.utterances += finals
                self.begin, self.audio, self.decoded, self.checked = self.samples, self.audio[:0], 0, 0
                self.current = self.current[:0]
        return Partial(self.text(self.current), self.samples / rate, self.current.shape[0], finals)

    @torch.no_grad()
    def finish(self) -> Transcript:
        """The end of the input: the last utterance decoded (in `utterances` when it has text), and every
        utterance's words as one transcript."""
        if self.audio.shape[0]:
            self._decode()
            last = self.final(self.current, self.begin / self.t.sample_rate)
            if last.transcript.text:
                self.utterances.append(last)
        return self.whole()

    def ended(self, log_probs: torch.Tensor) -> bool:
        """Whether the rules end the utterance now. A bidirectional model's last character often comes at
        the utterance's last frame however much silence follows (it has seen the end), so silence is measured
        on the audio by the VAD (asr.vad), in a window just longer than the rule that applies."""
        from .vad import speech_spans

        if self.rules is None or not self.audio.shape[0]:
            return False
        rate, has_text = self.t.sample_rate, bool(self.text(log_probs))
        length = self.audio.shape[0] / rate
        rule = self.rules.silence_after_text if has_text else self.rules.silence_without_text
        if length >= self.rules.max_utterance:
            return True
        window = self.audio[-int((rule + 0.3) * rate):]                  # enough to tell whether the rule is met
        spans = speech_spans(window, rate)
        trailing = (window.shape[0] - (spans[-1][1] if spans else 0)) / rate
        return self.rules.ends(has_text, trailing, length)

    def _decode(self) -> None:
        log_probs, lengths = self.t.log_probs([self.audio])          # (1, T', V), (1,)
        self.current, self.decoded = log_probs[0, :lengths[0]], self.audio.shape[0]
