"""Streaming transcription with a unidirectional model: feed audio as it arrives, read partial
transcripts as they firm up, then the final one.

    stream = asr.load_model("stream.pt").stream()
    for chunk in chunks:                       # (S,) float32 samples at 16 kHz, any length
        print(stream.feed(chunk).text)         # what is certain so far
    print(stream.finish().text)                # the same transcript as transcribe() of the whole

Every output frame is computed once, as soon as the audio it depends on has arrived: the feature
window, the convolution front-end's few frames of context, and the model's `lookahead` frames.
The backend's stream (asr.backends: for a checkpoint, the feature extractor's and the model's own
`step`, the offline forward pass's maths) carries the state from chunk to chunk, so the frames
(and the final transcript) are those of a pass over the whole input; a frame's wait is its
algorithmic latency: 25 ms of feature window, 30 ms of front-end context and `lookahead` x 20 ms.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .decode import greedy_paths, words_of
from .transcripts import Transcript


@dataclass(frozen=True)
class Partial:
    text: str              # the transcript of every frame final so far (its last word may still grow)
    seconds: float         # audio received so far
    frames: int            # output frames final so far


class StreamingTranscriber:
    """Incremental greedy transcription by a unidirectional model (`Transcriber.stream()` makes one)."""

    def __init__(self, transcriber):
        self.t = transcriber
        self.stream = transcriber.backend.stream()          # ValueError for a model that cannot stream
        self.samples = 0                                     # received so far
        self.log_probs = torch.zeros(0, len(transcriber.vocab))  # (T', V) final output frames

    @torch.no_grad()
    def feed(self, samples) -> Partial:
        """Add (S,) samples at the model's sample rate; returns the transcript of the frames now final."""
        samples = torch.as_tensor(samples, dtype=torch.float32).flatten()
        self.samples += samples.shape[0]
        self._add(self.stream.feed(samples))
        return Partial(self._text(), self.samples / self.t.sample_rate, self.log_probs.shape[0])

    @torch.no_grad()
    def finish(self) -> Transcript:
        """The end of the input: the last frames (with the padding an offline pass gives them) and the
        final transcript with word times, as `transcribe` gives for the whole input."""
        self._add(self.stream.finish())
        n = self.log_probs.shape[0]
        path = greedy_paths(self.log_probs[None], torch.tensor([n]))[0]
        words = words_of(path, self.log_probs, self.t.vocab, self.t.frame_seconds)
        text = self.t.vocab.separator.join(w.text for w in words)
        return Transcript(text, self.samples / self.t.sample_rate, None, tuple(words))

    def _add(self, log_probs: torch.Tensor) -> None:
        if log_probs.shape[0]:
            self.log_probs = torch.cat([self.log_probs.to(log_probs.dtype), log_probs])  # (T', V)

    def _text(self) -> str:
        if self.log_probs.shape[0] == 0:
            return ""
        path = greedy_paths(self.log_probs[None], torch.tensor([self.log_probs.shape[0]]))[0]
        return self.t.vocab.separator.join(self.t.vocab.decode(path.ids).split())

