"""The eager PyTorch backend: a checkpoint written by training (best.pt), or the live modules of a run."""
from __future__ import annotations

import contextlib
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_checkpoint
from ..features import FeatureExtractor, FeatureState, mostly_padding
from ..model import AcousticModel, ModelState, eval_mode
from ..native import batch_products, compiled_loop
from ..tracing import eager, tracing_in_process
from .base import Backend, StepStream

PIECE_SECONDS = 25.0   # padded audio whose features and convolutions run at once when a CPU decodes a batch
# The most inputs of a mostly-padding batch (a server's requests: 16 at most by default) that go one by one through
# the one-input graph: more, and the module's batched products are faster (AN4 test's 45 shortest files, fill 0.745,
# one thread, float32: 121 against 92 ms; RESULTS.md "Products through oneDNN")
ONE_BY_ONE_MAX = 16


class Recognizer(nn.Module):
    """Waveforms to log-probabilities: the feature extractor and the acoustic model, the unit that is exported.

    (N, S) float samples + (N,) lengths -> (N, T', V) log-probs + (N,) output lengths.
    """

    def __init__(self, extractor: FeatureExtractor, model: AcousticModel, pack: bool = True):
        super().__init__()
        self.extractor, self.model, self.pack = extractor, model, pack

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pieces = []   # a GPU wants the whole batch at once; a trace, a graph that keeps every length dynamic
        if eager() and waves.device.type == "cpu" and not torch.is_grad_enabled():
            pieces = _pieces(lengths.tolist(), PIECE_SECONDS * self.extractor.cfg.sample_rate)
        if len(pieces) > 1:
            return self._in_pieces(waves, lengths, pieces)
        feats, frames = self.extractor(waves, lengths)                 # (N, T, F)
        return self.model(feats, frames, pack=self.pack)               # (N, T', V)

    def whole(self, wave: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """forward() of one whole input, (1, S) samples and (1,) S >= n_fft (FeatureExtractor.whole): a graph
        traced of it keeps every length dynamic."""
        feats, frames = self.extractor.whole(wave, length)            # (1, T, F)
        return self.model(feats, frames, pack=self.pack)               # (1, T', V)

    def _in_pieces(self, waves: torch.Tensor, lengths: torch.Tensor, pieces: list[tuple[int, int]]):
        """forward's result, the features and convolutions run a piece of the batch at a time (their
        temporaries then stay in the caches, where a whole 100 s batch's are written out to memory and
        page-faulted afresh every batch: AN4 test decoded 1.1x faster on one thread), the recurrent stack over
        the whole batch (its products want the rows)."""
        xs, out_lengths = [], []
        for a, b in pieces:
            feats, frames = self.extractor(waves[a:b, :int(lengths[a:b].max())], lengths[a:b])   # (n, T, F)
            x, out, _ = self.model.front_end(feats, frames)                                      # (n, t, C)
            xs.append(x)
            out_lengths.append(out)
        t = max(x.shape[1] for x in xs)
        x = torch.cat([nn.functional.pad(x, (0, 0, 0, t - x.shape[1])) for x in xs])          # (N, T', C)
        out_lengths = torch.cat(out_lengths)                                                      # (N,)
        state = self.model.initial_state(x.shape[0], x.device)
        log_probs, _, _ = self.model.head(x, state, True, out_lengths, pack=self.pack)        # (N, T', V)
        return log_probs, out_lengths


def trace_one_input(network: Recognizer) -> torch.jit.ScriptModule | None:
    """`network` (in eval mode, its weights fixed from here on) traced for one whole input at a time (its `whole`,
    the traced module's too), with this process's own fast paths in it (asr.tracing.native: the compiled loops, the
    FFT), or None where that cannot be made or does not give the module's very log-probs at several lengths.

    Why: a file's forward is ~285 torch calls from Python, each of which lets Python's lock go and takes it back,
    waiting whenever another thread holds it: a served request (the event loop and upload decoders beside it)
    spent ~1.5-2 ms of its 5 so (recipes/an4/RESULTS.md). Traced, they are one call."""
    if compiled_loop() is None:     # the Python loop's steps are no graph of every length: nothing to gain
        return None
    g, rate = torch.Generator().manual_seed(0), network.extractor.cfg.sample_rate
    noise = lambda seconds: torch.randn(1, max(int(seconds * rate), network.extractor.cfg.n_fft), generator=g) * 0.1
    # traced on 1.37 s; checked on the shortest input it takes and odd lengths shorter and longer than 1.37 s
    trace, *checks = [noise(s) for s in (1.37, 0, 0.0331, 0.73, 2.61, 6.05)]                   # (1, S) each
    length = lambda wave: torch.tensor([wave.shape[1]])                                         # (1,)
    try:
        with torch.no_grad(), eval_mode(network), warnings.catch_warnings():
            warnings.simplefilter("ignore")            # the tracer's notes on Python values: the checks decide
            network.whole(trace, length(trace))        # eagerly first: what it keeps (asr.rnn's weights)
            with tracing_in_process():
                graph = torch.jit.trace_module(network, {"whole": (trace, length(trace))}, check_trace=False)
            for wave in checks:
                (want, want_n), (got, got_n) = network(wave, length(wave)), graph.whole(wave, length(wave))
                if not (torch.equal(want, got) and torch.equal(want_n, got_n)):
                    return None
    except Exception:                                  # noqa: BLE001 - any failure: the module runs, as before
        return None
    return graph


_graph_lock = threading.Lock()


def _one_by_one(graph: torch.jit.ScriptModule, waves: torch.Tensor, lengths: torch.Tensor):
    """(N, S) waves of (N,) lengths, each input's own samples through `graph` (trace_one_input) -> (N, T', V)
    log-probs (zero past an input's frames) and (N,) output lengths."""
    outs = [graph.whole(waves[i:i + 1, :n], lengths[i:i + 1]) for i, n in enumerate(lengths.tolist())]
    if len(outs) == 1:
        return outs[0]
    t = max(lp.shape[1] for lp, _ in outs)
    return (torch.cat([nn.functional.pad(lp, (0, 0, 0, t - lp.shape[1])) for lp, _ in outs]),    # (N, T', V)
            torch.cat([n for _, n in outs]))                                                    # (N,)


def _pieces(lengths: list[int], budget: float) -> list[tuple[int, int]]:
    """Runs [a, b) of consecutive inputs whose padded size (inputs x the longest, in samples) stays within
    `budget`, one input at least each."""
    spans, a, longest = [], 0, 0
    for i, n in enumerate(lengths):
        if i > a and (i + 1 - a) * max(longest, n) > budget:
            spans.append((a, i))
            a, longest = i, 0
        longest = max(longest, n)
    return spans + [(a, len(lengths))]


class StreamStep(nn.Module):
    """One streaming step of the feature extractor and a unidirectional model, as a function of tensors
    (the unit exported for streaming): (samples (N, s), final (0-dim bool), *state) -> (log_probs (N, t, V),
    *state). The state, in order: the features' pending samples, start and frame count; the model's three
    convolutions' pending frames; the recurrent h (and, for an LSTM, c)."""

    def __init__(self, extractor: FeatureExtractor, model: AcousticModel):
        super().__init__()
        if model.cfg.bidirectional:
            raise ValueError("streaming needs a unidirectional model (model.bidirectional: false)")
        self.extractor, self.model = extractor, model

    def initial_state(self, n: int = 1) -> tuple[torch.Tensor, ...]:
        f, m = self.extractor.initial_state(n), self.model.initial_state(n, self.extractor.mean.device)
        rnn = self.model.initial_rnn_state(n, self.extractor.mean.device)
        rnn = rnn if isinstance(rnn, tuple) else (rnn,)
        return (f.pending, f.start, f.frames, m.conv1, m.conv2, m.lookahead, *rnn)

    def forward(self, samples: torch.Tensor, final: torch.Tensor, pending, start, frames, conv1, conv2, lookahead,
                *rnn: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats, f = self.extractor.step(samples, FeatureState(pending, start, frames), final)     # (N, t, F)
        state = ModelState(conv1, conv2, rnn if len(rnn) == 2 else rnn[0], lookahead)
        log_probs, m = self.model.step(feats, state, final)                                       # (N, t', V)
        h = m.rnn if isinstance(m.rnn, tuple) else (m.rnn,)
        return (log_probs, f.pending, f.start, f.frames, m.conv1, m.conv2, m.lookahead, *h)


class CheckpointBackend(Backend):
    """An AcousticModel and its FeatureExtractor in eager PyTorch, on any device; packed batches are exact."""
    name = "checkpoint"
    precisions = ("fp32", "bf16")   # the checkpoint as trained, or its products in bfloat16 (`load`)
    # Inputs one by one on a CPU (files, a server's requests) through one traced graph of the network
    # (trace_one_input, _one_input_graph): set by `load`, whose weights do not change after; a run's live modules
    # stay eager
    one_input_graph = False
    _calls_for_graph = 0

    def __init__(self, model: AcousticModel, extractor: FeatureExtractor, vocab, device: str | torch.device = "cpu"):
        self.model, self.extractor, self.vocab = model, extractor, vocab
        self.features, self.config, self.device = extractor.cfg, model.cfg, torch.device(device)
        self.network = Recognizer(extractor, model)

    @classmethod
    def accepts(cls, path: Path) -> bool:
        return True   # the fallback: anything else is tried as a checkpoint, whose loader names what is wrong

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu", precision: str = "fp32") -> CheckpointBackend:
        """`precision` "bf16": the 1-D convolution's and the recurrent stack's matrix products on bfloat16 operands
        with float32 accumulation, on CPUs with bfloat16 instructions (AcousticModel.products_in): AN4 test 1.2-1.3x
        faster than fp32 on a Xeon with AMX and 1.3-1.4x on an AMD EPYC with AVX-512 BF16, its WER fp32's
        (recipes/an4/RESULTS.md); "fp32" (the default) runs the checkpoint as trained."""
        cls.check_precision(path, precision)
        model, extractor, vocab, _ = load_checkpoint(path, device)
        if precision == "bf16":
            model.products_in(torch.bfloat16)
        backend = cls(model, extractor, vocab, device)
        backend.precision = precision
        backend.one_input_graph = True        # its weights stay as loaded: a graph of them stays right
        return backend

    @torch.no_grad()
    def log_probs(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        waves, lengths = waves.to(self.device), lengths.to(self.device)
        if (graph := self._one_input_graph(lengths)) is not None:     # traced in eval mode: no modes to set
            log_probs, out_lengths = _one_by_one(graph, waves, lengths)
        else:
            with eval_mode(self.network):     # a run's live model evaluates on dev between epochs
                # a batch's products through oneDNN where it is faster (asr.native.batch_products)
                with batch_products() if waves.shape[0] > 1 else contextlib.nullcontext():
                    log_probs, out_lengths = self.network(waves, lengths)             # (N, T', V)
        return log_probs.float().cpu(), out_lengths.cpu()

    def _one_input_graph(self, lengths: torch.Tensor) -> torch.jit.ScriptModule | None:
        """The network traced for one whole input (trace_one_input), for inputs of these (N,) lengths to take one
        by one: where `one_input_graph`, on a CPU, every input at least n_fft samples long, and one input or a
        batch of at most ONE_BY_ONE_MAX mostly padding (asr.features.mostly_padding: a server's requests of mixed
        lengths, which the graph serves faster one by one, its calls without Python's lock; a length-sorted batch
        is faster in the module); made at the second such call (a single file does not pay the trace). Else, or
        where it cannot be made, None (the module runs)."""
        if not (self.one_input_graph and self.device.type == "cpu"):
            return None
        n = lengths.shape[0]
        few_mixed = n <= ONE_BY_ONE_MAX and mostly_padding(lengths)
        if int(lengths.min()) < self.features.n_fft or (n > 1 and not few_mixed):
            return None
        if "_graph" not in self.__dict__:
            with _graph_lock:
                self._calls_for_graph += 1
                if self._calls_for_graph < 2:
                    return None
                if "_graph" not in self.__dict__:
                    self._graph = trace_one_input(self.network)
        return self._graph

    def stream(self) -> StepStream:
        step = StreamStep(self.extractor, self.model.eval())        # ValueError for a bidirectional model
        return StepStream(torch.no_grad()(step), step.initial_state(1))
