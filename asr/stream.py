"""Streaming transcription with a unidirectional model: feed audio as it arrives, read partial
transcripts as they firm up, then the final one.

    stream = asr.load_model("stream.pt").stream()
    for chunk in chunks:                       # (S,) float32 samples at 16 kHz, any length
        print(stream.feed(chunk).text)         # what is certain so far
    print(stream.finish().text)                # the same transcript as transcribe() of the whole

Every output frame is computed once, as soon as the audio it depends on has arrived: the feature
window, the convolution front-end's few frames of context, and the model's `lookahead` frames.
The recurrent state is carried from chunk to chunk, so the frames (and the final transcript) are
those of a forward pass over the whole input; a frame's wait is its algorithmic latency:
25 ms of feature window, 30 ms of front-end context and `lookahead` x 20 ms.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .decode import greedy_paths, words_of
from .model import TIME_STRIDE
from .transcribe import Transcript


@dataclass(frozen=True)
class Partial:
    text: str              # the transcript of every frame final so far (its last word may still grow)
    seconds: float         # audio received so far
    frames: int            # output frames final so far


class StreamingTranscriber:
    """Incremental greedy transcription by a unidirectional model (`Transcriber.stream()` makes one)."""

    def __init__(self, transcriber):
        model, extractor = transcriber.model, transcriber.extractor
        if model.cfg.bidirectional:
            raise ValueError("streaming needs a unidirectional model (model.bidirectional: false)")
        if extractor.cfg.utterance_mean:
            raise ValueError("streaming cannot use features.utterance_mean: it needs the whole utterance")
        self.t, self.model, self.extractor = transcriber, model.eval(), extractor
        self.audio = torch.zeros(0)
        self.feats = torch.zeros(0, extractor.cfg.dim)      # (T, F) normalised features so far
        self.conv1 = torch.zeros(0, model.cfg.conv_channels)  # (T1, C) first convolution, after GELU
        self.conv2 = torch.zeros(0, model.cfg.conv_channels)  # (T2, C) second convolution, after GELU
        self.rnn_out = torch.zeros(0, model.cfg.hidden)      # (T3, H)
        self.state = None                                    # the recurrent state after rnn_out
        self.log_probs = torch.zeros(0, model.cfg.vocab_size)  # (T', V) final output frames

    @torch.no_grad()
    def feed(self, samples) -> Partial:
        """Add (S,) samples at 16 kHz; returns the transcript of the frames now final."""
        samples = torch.as_tensor(samples, dtype=torch.float32).flatten()
        self.audio = torch.cat([self.audio, samples])
        self._advance(end=False)
        return Partial(self._text(), self.audio.shape[0] / self.extractor.cfg.sample_rate, self.log_probs.shape[0])

    @torch.no_grad()
    def finish(self) -> Transcript:
        """The end of the input: the last frames (with the padding an offline pass gives them) and the
        final transcript with word times, as `transcribe` gives for the whole input."""
        self._advance(end=True)
        n = self.log_probs.shape[0]
        path = greedy_paths(self.log_probs[None], torch.tensor([n]))[0]
        words = words_of(path, self.log_probs, self.t.vocab)
        return Transcript(" ".join(w.text for w in words), self.audio.shape[0] / self.extractor.cfg.sample_rate,
                          None, tuple(words))

    def _text(self) -> str:
        if self.log_probs.shape[0] == 0:
            return ""
        path = greedy_paths(self.log_probs[None], torch.tensor([self.log_probs.shape[0]]))[0]
        return " ".join(self.t.vocab.decode(path.ids).split())

    def _advance(self, end: bool) -> None:
        cfg, m = self.extractor.cfg, self.model
        # features: frame i reads samples [i * hop, i * hop + n_fft)
        total = int(cfg.num_frames(torch.tensor(self.audio.shape[0]))) if end else (
            max(0, (self.audio.shape[0] - cfg.n_fft) // cfg.hop_length + 1))
        have = self.feats.shape[0]
        if total > have:
            piece = self.audio[have * cfg.hop_length:(total - 1) * cfg.hop_length + cfg.n_fft]
            x, _ = self.extractor(piece[None], torch.tensor([piece.shape[0]]))       # (1, T, F) normalised
            self.feats = torch.cat([self.feats, x[0, :total - have]])
        T = self.feats.shape[0]
        k, pad = m.cfg.conv_kernel, m.cfg.conv_kernel // 2
        out_len = (T + 2 * pad - k) // TIME_STRIDE + 1                   # frames of the whole input (at the end)
        # conv1 frame j reads feature frames 2j - pad .. 2j + pad: final once 2j + pad < T (or at the end)
        n1 = out_len if end else max(0, (T - 1 - pad) // TIME_STRIDE + 1)
        self.conv1 = torch.cat([self.conv1, self._conv(self.feats, m.conv1, self.conv1.shape[0], n1, TIME_STRIDE, pad)])
        # conv2 frame j reads conv1 frames j - 1 .. j + 1 (zero past out_len, as the offline mask makes them)
        n2 = out_len if end else max(0, self.conv1.shape[0] - 1)
        self.conv2 = torch.cat([self.conv2, self._conv(self.conv1, m.conv2, self.conv2.shape[0], n2, 1, 1)])
        new = self.conv2[self.rnn_out.shape[0]:]                          # (n, C) frames the RNN has not seen
        if new.shape[0]:
            y, self.state = m.rnn(new[None], self.state)                 # (1, n, H): carried state
            self.rnn_out = torch.cat([self.rnn_out, y[0]])
        # lookahead: output frame t reads recurrent frames t .. t + L (zero past the end)
        L, done = m.cfg.lookahead, self.log_probs.shape[0]
        ready = self.rnn_out.shape[0] if end else max(0, self.rnn_out.shape[0] - L)
        if ready > done:
            y = self.rnn_out[done:ready + L]                              # (n + L', H)
            if m.lookahead is not None:
                y = nn.functional.pad(y.T[None], (0, ready + L - done - y.shape[0]))  # (1, H, n + L)
                y = m.lookahead(y)[0].T                                   # (n, H)
            self.log_probs = torch.cat([self.log_probs, m.output(y[:ready - done]).float().log_softmax(-1)])

    @staticmethod
    def _conv(x: torch.Tensor, conv: nn.Conv1d, start: int, stop: int, stride: int, pad: int) -> torch.Tensor:
        """Output frames [start, stop) of GELU(conv) over (T, C) frames `x`, zero-padded outside them."""
        if stop <= start:
            return torch.zeros(0, conv.out_channels)
        k = conv.kernel_size[0]
        first, last = start * stride - pad, (stop - 1) * stride - pad + k            # input frames needed
        window = x[max(first, 0):min(last, x.shape[0])].T[None]                        # (1, C, n)
        window = nn.functional.pad(window, (max(0, -first), max(0, last - x.shape[0])))
        return nn.functional.gelu(nn.functional.conv1d(window, conv.weight, conv.bias, stride=stride))[0].T


def stream_latency(transcriber, utts, chunk_seconds: float = 0.1) -> dict:
    """Stream each utterance in `chunk_seconds` pieces as if live; for every word of the final transcript,
    the latency from its end (CTC time) to the first partial that shows it (and all before it) as in the
    end. Returns WER / CER of the final transcripts, latency mean / median / p90 (seconds) and the RTF."""
    import time

    from .score import score

    sr = transcriber.extractor.cfg.sample_rate
    step = int(chunk_seconds * sr)
    latencies, hyps, busy, audio = [], [], 0.0, 0.0
    for u in utts:
        wave = u.samples()
        stream, partials = transcriber.stream(), []
        started = time.perf_counter()
        for i in range(0, wave.shape[0], step):
            partials.append((min(i + step, wave.shape[0]) / sr, stream.feed(wave[i:i + step]).text.split()))
        final = stream.finish()
        busy += time.perf_counter() - started
        audio += wave.shape[0] / sr
        words = [w.text for w in final.words]
        for k, w in enumerate(final.words):
            shown = next((t for t, p in partials if p[:k + 1] == words[:k + 1]), final.duration)
            latencies.append(shown - w.end)
        hyps.append(final.text)
    s = score([u.text for u in utts], hyps)
    lat = torch.tensor(latencies) if latencies else torch.zeros(1)
    return {"wer": s.wer.rate, "cer": s.cer.rate, "words": len(latencies), "chunk_seconds": chunk_seconds,
            "latency_mean": lat.mean().item(), "latency_median": lat.median().item(),
            "latency_p90": lat.quantile(0.9).item(), "rtf": busy / max(audio, 1e-9)}
