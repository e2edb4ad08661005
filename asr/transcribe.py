"""Transcribing audio with a trained model: `load_model(path).transcribe(file_or_files)`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .audio import AudioInput, load_audio
from .data import FRAMES_PER_SECOND, length_batches, pad_waves
from .decode import DecodingOptions, greedy_decode
from .features import FeatureExtractor
from .model import AcousticModel
from .text import Vocabulary


@dataclass(frozen=True)
class Transcript:
    text: str
    duration: float             # seconds of audio
    path: str | None = None     # the file, when the input was one


class Transcriber:
    """A model ready to transcribe: feature extractor (with its normalisation), acoustic model, vocabulary."""

    def __init__(self, model: AcousticModel, extractor: FeatureExtractor, vocab: Vocabulary,
                 device: str | torch.device = "cpu", options: DecodingOptions = DecodingOptions()):
        self.model, self.extractor, self.vocab = model, extractor, vocab
        self.device = torch.device(device)
        self.options = options

    def transcribe(self, audio: AudioInput | list[AudioInput]) -> Transcript | list[Transcript]:
        """One input -> one Transcript; a list -> a list, decoded in length-sorted batches.

        Inputs are paths (any soundfile format, any rate, mono or not) or (S,) 16 kHz samples.
        """
        if isinstance(audio, (list, tuple)):
            return self._transcribe_many(list(audio))
        return self._transcribe_many([audio])[0]

    def _transcribe_many(self, inputs: list[AudioInput]) -> list[Transcript]:
        waves = [load_audio(a, self.extractor.cfg.sample_rate) for a in inputs]
        seconds = [w.shape[0] / self.extractor.cfg.sample_rate for w in waves]
        texts: list[str] = [""] * len(waves)
        for batch in length_batches(seconds, int(self.options.batch_seconds * FRAMES_PER_SECOND)):
            for i, text in zip(batch, self.decode_waves([waves[i] for i in batch])):
                texts[i] = text
        return [Transcript(t, s, str(a) if isinstance(a, (str, Path)) else None)
                for t, s, a in zip(texts, seconds, inputs)]

    @torch.no_grad()
    def decode_waves(self, waves: list[torch.Tensor]) -> list[str]:
        """List of (S_i,) samples -> transcripts, in one padded forward pass."""
        was_training = self.model.training
        self.model.eval()
        padded, lengths = pad_waves(waves)                                 # (N, S), (N,)
        feats, frames = self.extractor(padded.to(self.device), lengths.to(self.device))  # (N, T, F)
        log_probs, out_lengths = self.model(feats, frames)                 # (N, T', V)
        self.model.train(was_training)
        return greedy_decode(log_probs, out_lengths, self.vocab)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Transcriber:
    """A Transcriber rebuilt from a checkpoint file alone (e.g. `data/an4/exp/cpu/best.pt`)."""
    from .train import load_checkpoint

    model, extractor, vocab, _ = load_checkpoint(path, device)
    return Transcriber(model, extractor, vocab, device)
