"""The acoustic model: strided convolution front-end -> stacked (Bi)RNN -> linear -> CTC log-probs.

The front end is two convolutions over time (`front_end: conv1d`), or (`conv2d`, DeepSpeech 2's) two
over time and frequency, which see a formant pattern wherever a speaker's voice puts it, then one
over time.

One function holds the maths (`AcousticModel.step`): it takes the frames that have arrived and
the state left by the frames before them, and returns the output frames that are now final.
The offline forward pass is that step over a whole input from the initial state, with the
end of the input marked (at inference each convolution zero-pads that whole input itself: the same
sums, fewer copies); streaming (asr.stream) calls it chunk by chunk, the state carried in a
ModelState. Each convolution keeps its not-yet-consumed input frames as state (`conv_step`),
the recurrent stack keeps its hidden state, so streamed frames equal the offline ones.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .native import bf16_instructions, conv_frames, front2d, linear_layer, onednn_active
from .rnn import dropout as rnn_dropout
from .rnn import products as rnn_products
from .rnn import products_in
from .rnn import run as run_rnn
from .rnn import supports as rnn_supports
from .tracing import eager, native

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
FRONT_ENDS = ("conv1d", "conv2d")


@dataclass(frozen=True)
class ModelConfig:
    n_features: int = 80
    vocab_size: int = 29          # characters + CTC blank
    conv_channels: int = 256
    conv_kernel: int = 5          # frames seen by the strided convolution (odd)
    front_end: str = "conv1d"     # conv1d | conv2d: the strided convolution over time, or over time and frequency
    conv2d_channels: int = 32     # conv2d: channels of the two time-frequency convolutions
    time_stride: int = 2          # feature frames per output frame: 2 halves the rate (10 ms -> 20 ms frames)
    cell: str = "gru"             # rnn | lstm | gru
    hidden: int = 256             # per direction
    layers: int = 3
    bidirectional: bool = True
    dropout: float = 0.1          # between recurrent layers and before the output layer
    lookahead: int = 0            # unidirectional models: output frames of future context (a lookahead convolution)

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, not {self.cell!r}")
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"front_end must be one of {', '.join(FRONT_ENDS)}, not {self.front_end!r}")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, not {self.conv_kernel}")
        if self.time_stride < 1:
            raise ValueError(f"time_stride must be >= 1, not {self.time_stride}")
        if self.lookahead and self.bidirectional:
            raise ValueError("lookahead is for unidirectional (streaming) models: set bidirectional: false")

    def output_frames(self, frames):
        """Output frames for `frames` feature frames (an int or a tensor of them): the strided convolution's
        count, with conv_kernel // 2 frames of zero padding at each end."""
        pad = self.conv_kernel // 2
        return (frames + 2 * pad - self.conv_kernel) // self.time_stride + 1

    @property
    def conv2d_bins(self) -> int:
        """conv2d: frequency bins left after the two time-frequency convolutions (each halves them)."""
        return (self.n_features + 3) // 4


@dataclass
class ModelState:
    """What a streaming pass carries from one chunk to the next, for N streams advancing together:
    each convolution's input frames it has not finished with, and the recurrent state."""
    conv1: torch.Tensor           # (N, F, r1) feature frames, conv2d: (N, 1, F, r1) (at first: the left zero padding)
    conv2: torch.Tensor           # (N, C, r2) front-end frames
    rnn: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None  # h (LSTM: (h, c)), None before the first frame
    lookahead: torch.Tensor       # (N, H, r3) recurrent frames still waiting for their future


def conv_step(conv: nn.Conv1d, pending: torch.Tensor, x: torch.Tensor, right_pad: int,
              final) -> tuple[torch.Tensor, torch.Tensor]:
    """A convolution over a sequence that arrives in pieces: (N, C, r) frames kept from before and (N, C, t)
    new ones -> (N, C', n) outputs whose every input has arrived, and the frames to keep for the next piece.
    Time is the last axis: a 2-D convolution takes (N, C, F, r) and (N, C, F, t) the same way.

    `final` (a bool or a 0-dim tensor): the sequence ends with `x`, followed by `right_pad` zero frames (the
    offline zero padding). The left padding is the initial `pending` frames; `conv` itself pads nothing.
    Tensor arithmetic only (no branch on a length), so a traced graph is right for every length.
    """
    k, s = conv.kernel_size[-1], conv.stride[-1]
    have = pending.shape[-1] + x.shape[-1]                                # real frames (r + t)
    x = torch.cat([pending, x, x.new_zeros(*x.shape[:-1], k)], -1)        # (N, C, r + t + k): never too short
    # outputs now complete: max(0, (have + pad - k) // s + 1), divided only when non-negative (ONNX's integer
    # division truncates towards zero, Python's floors)
    n = torch.clamp(torch.as_tensor(have + right_pad * final - k + s), min=0) // s
    return _conv(conv, x)[..., :n], x[..., n * s:have]


def _conv(conv: nn.Module, x: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """conv(x), its time (last) axis zero-padded by `pad` more frames at each end than conv's own padding, where
    training a 2-D convolution of one input channel on a CPU takes `_OneChannelConv2d`'s weight gradient (the same
    maths, several times faster than oneDNN's), and a convolution with bfloat16 weights
    (AcousticModel.products_in) takes x rounded to bfloat16 and gives float32 again."""
    padding = (*conv.padding[:-1], conv.padding[-1] + pad)
    if conv.weight.dtype == torch.bfloat16 != x.dtype:                    # not autocast's: its weights stay float32
        return _conv_forward(conv, x.to(torch.bfloat16), padding).to(x.dtype)
    if (isinstance(conv, nn.Conv2d) and conv.in_channels == 1 and conv.groups == 1 and x.device.type == "cpu"
            and torch.is_grad_enabled() and conv.weight.requires_grad and conv.padding_mode == "zeros"
            and eager()):
        return _OneChannelConv2d.apply(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation)
    return _conv_forward(conv, x, padding)


def _conv_forward(conv: nn.Module, x: torch.Tensor, padding: tuple) -> torch.Tensor:
    f = nn.functional.conv2d if isinstance(conv, nn.Conv2d) else nn.functional.conv1d
    return f(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)


class _OneChannelConv2d(torch.autograd.Function):
    """F.conv2d of (N, 1, F, T) inputs with its weight gradient as one batched product of the output gradient by
    the input's patches: oneDNN's backward pass over a single input channel runs far below the machine's speed
    (about 20 ms against 2 for conf/cpu.yaml's first convolution at batch 16, 2 threads)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.conf = stride, padding, dilation
        return nn.functional.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):                                               # grad: (N, C, F', T')
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        (kf, kt), n, c = weight.shape[2:], grad.shape[0], grad.shape[1]
        xp = nn.functional.pad(x[:, 0], (padding[1], padding[1], padding[0], padding[0]))      # (N, F + 2p, T + 2p)
        span_f, span_t = dilation[0] * (kf - 1) + 1, dilation[1] * (kt - 1) + 1
        patches = xp.unfold(1, span_f, stride[0]).unfold(2, span_t, stride[1])              # (N, F', T', sf, st)
        patches = patches[..., ::dilation[0], ::dilation[1]].reshape(n, -1, kf * kt)        # (N, F' T', kf kt)
        g = grad.reshape(n, c, -1)                                                          # (N, C, F' T')
        dw = torch.bmm(g, patches).sum(0).view_as(weight) if ctx.needs_input_grad[1] else None
        db = grad.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None
        dx = (torch.nn.grad.conv2d_input(x.shape, weight, grad, stride, padding, dilation)
              if ctx.needs_input_grad[0] else None)
        return dx, dw, db, None, None, None


class AcousticModel(nn.Module):
    """(N, T, F) features + (N,) frame counts -> (N, T', V) log-probabilities + (N,) output lengths.

    Output frames past an utterance's length are computed from padding and must be ignored. With
    `pack=True` (the default) the recurrent stack runs on packed sequences, so padding never reaches
    a valid frame and a batch gives each utterance exactly what it gets alone. `pack=False` lets the
    backward direction start in the padding: inexact, but torch.nn's packed backward pass is 2.3x slower on a
    CPU, and length-bucketed training batches carry only a few padded frames. (asr.rnn, which trains on CPU,
    packs a batch at no extra cost, so conf/cpu.yaml trains packed: `pack_sequences: true`.)
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.front_end == "conv2d":   # over (F, T): strided in both, then in frequency alone (no state)
            c2 = cfg.conv2d_channels
            self.conv1 = nn.Conv2d(1, c2, (3, cfg.conv_kernel), stride=(2, cfg.time_stride), padding=(1, 0))
            self.conv1f = nn.Conv2d(c2, c2, (3, 1), stride=(2, 1), padding=(1, 0))
            conv2_in = c2 * cfg.conv2d_bins
        else:
            self.conv1 = nn.Conv1d(cfg.n_features, cfg.conv_channels, cfg.conv_kernel, stride=cfg.time_stride)
            conv2_in = cfg.conv_channels
        self.conv2 = nn.Conv1d(conv2_in, cfg.conv_channels, 3)
        # One multi-layer call: cuDNN runs the whole stack, far faster than per-layer modules.
        self.rnn = CELLS[cfg.cell](
            cfg.conv_channels, cfg.hidden, num_layers=cfg.layers, batch_first=True,
            bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        if cfg.cell == "lstm":
            init_forget_bias(self.rnn)
        self.dropout = nn.Dropout(cfg.dropout)
        # Lookahead convolution (Wang et al. 2016, in DeepSpeech 2): each frame also sees the next
        # `lookahead` recurrent outputs, per channel; the only future context a streaming model has.
        self.lookahead = (nn.Conv1d(cfg.hidden, cfg.hidden, cfg.lookahead + 1, groups=cfg.hidden, bias=False)
                          if cfg.lookahead else None)
        if self.lookahead is not None:   # start as the identity (no future), let training learn to look ahead
            with torch.no_grad():
                self.lookahead.weight.zero_()[:, 0, 0] = 1.0
        self.output = nn.Linear(cfg.hidden * (2 if cfg.bidirectional else 1), cfg.vocab_size)
        # The recurrent stack through asr.rnn (the same maths in fewer operations) wherever it applies; False runs
        # the nn module itself (benchmarks compare the two)
        self.fast_rnn = True

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.cfg.output_frames(lengths)

    def initial_state(self, n: int, device: torch.device | str | None = None) -> ModelState:
        """The state before the first frame of `n` streams: the convolutions' left zero padding."""
        c = self.cfg
        zeros = lambda channels, frames: torch.zeros(n, channels, frames, device=device)
        conv1 = zeros(c.n_features, c.conv_kernel // 2)
        conv1 = conv1[:, None] if c.front_end == "conv2d" else conv1                     # (N, 1, F, r1)
        conv2 = zeros(c.conv2d_channels * c.conv2d_bins if c.front_end == "conv2d" else c.conv_channels, 1)
        return ModelState(conv1, conv2, None, zeros(c.hidden, 0))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, pack: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole (padded) batch: the step from the initial state with the end of every input marked."""
        out_lengths = self.output_lengths(lengths)                        # (N,)
        state = self.initial_state(x.shape[0], x.device)
        x, mask, _, _ = self._front(x, state, True, out_lengths, whole=_pads_itself(x))  # (N, t2, C), (N, 1, t2)
        log_probs, _, _ = self.head(x, state, True, out_lengths, mask, pack)
        return log_probs, out_lengths

    def initial_rnn_state(self, n: int, device=None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        c = self.cfg
        h = torch.zeros(c.layers * (2 if c.bidirectional else 1), n, c.hidden, device=device)
        return (h, h.clone()) if c.cell == "lstm" else h

    def _stream_rnn(self, x: torch.Tensor, h):
        """The recurrent stack over (N, t, C) new frames of N streams (t may be 0) from state `h`: one frame of
        zeros is appended and the stack run on packed sequences of max(t, 1), the state kept where t is 0."""
        t = torch.as_tensor(x.shape[1])
        h = self.initial_rnn_state(x.shape[0], x.device) if h is None else h
        if self.fast_rnn and rnn_supports(self.rnn, x):
            if x.shape[1] == 0:
                return x.new_zeros(x.shape[0], 0, self.output.in_features), h
            return run_rnn(self.rnn, x, h)
        x = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[2])], 1)         # (N, t + 1, C)
        lengths = torch.clamp(t, min=1).expand(x.shape[0]).cpu()
        y, h_new = self.rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), h)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        keep = lambda new, old: torch.where(t > 0, new, old)
        h_new = tuple(map(keep, h_new, h)) if isinstance(h, tuple) else keep(h_new, h)
        return y[:, :t], h_new

    def products_in(self, dtype: torch.dtype) -> AcousticModel:
        """Inference's largest matrix products in `dtype` from here on, where this CPU runs them faster:
        `torch.bfloat16` (precision "bf16", asr.backends.checkpoint), where the CPU has bfloat16 instructions
        (AVX-512 BF16 or AMX), runs the 1-D convolution (oneDNN) and the recurrent stack's products
        (asr.rnn.products_in: MKL's on AMX, the loops' own AVX-512 BF16 kernel elsewhere) on bfloat16 operands;
        float32 accumulation, and everything between them float32. AN4 test on a Xeon with AMX 1.13-1.32x faster
        than float32 with its WER, on an AMD EPYC with AVX-512 BF16 alone 1.27-1.39x (recipes/an4/RESULTS.md); the
        2-D convolutions in bfloat16 too changed the WER (their input is the features themselves). Inference only:
        training takes float32 weights. `torch.float32` goes back."""
        if dtype == torch.bfloat16 and not bf16_instructions():
            return self                                                    # emulated: slower than float32
        self.conv2.to(dtype)
        products_in(self.rnn, dtype)
        return self

    def front_end(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, T, F) features -> (N, T', C) recurrent-stack input, (N,) output lengths, (N, 1, T') validity mask."""
        out_lengths = self.output_lengths(lengths)
        x, mask, _, _ = self._front(x, self.initial_state(x.shape[0], x.device), True, out_lengths,
                                    whole=_pads_itself(x))
        return x, out_lengths, mask

    def _front(self, x: torch.Tensor, state: ModelState, final: bool, out_lengths: torch.Tensor | None,
               whole: bool = False):
        """The convolutions of `step`: (N, t, F) features -> (N, t2, C), the mask, both convolutions' pending frames.

        `whole`: x is whole inputs from the initial state (final): each convolution then zero-pads its input itself,
        the frames conv_step would join to it (the same sums), and no frames are pending (None)."""
        conv = ((lambda layer, pending, x, pad: (_conv(layer, x, pad), None)) if whole
                else lambda layer, pending, x, pad: conv_step(layer, pending, x, pad, final))
        # the 2-D front end through the loops' kernel where it applies (called by every pass: asr.native.front2d)
        two_d = self.cfg.front_end == "conv2d"
        y = front2d(x, self.conv1, self.conv1f, self.cfg.conv_kernel // 2, whole) if two_d else None
        x = x.transpose(1, 2)                                              # (N, F, t)
        if y is not None:
            x, pending1 = y, None                                          # (N, C2 * F/4, t1), as below
        elif two_d:
            x = x[:, None]                                                 # (N, 1, F, t)
            if native():   # channels-last (for one channel, only strides): oneDNN runs conv1 2.6x faster
                x = x.contiguous(memory_format=torch.channels_last)
            x, pending1 = conv(self.conv1, state.conv1, x, self.cfg.conv_kernel // 2)
            x = nn.functional.gelu(x)
            if native() and x.shape[-1] > 0:   # (a graph for this process takes whole inputs: frames always)
                x = self.conv1f(x)
            else:   # an exported graph must also take a chunk with no new frames, where a convolution over 0
                # frames fails: one zero frame appended (conv1f sees one frame at a time) and its output dropped
                x = self.conv1f(nn.functional.pad(x, (0, 1)))[..., :-1]
            x = nn.functional.gelu(x)                                      # (N, C2, F/4, t1)
            # (N, C2 * F/4, t1), reshaped with time in front and every size given: ONNX's Reshape reads a 0
            # (a chunk with no new frames) as "keep that axis of the input", right only on the time axis itself
            n, t1 = x.shape[0], x.shape[3]
            x = x.permute(0, 3, 1, 2).reshape(n, t1, self.conv2.in_channels).transpose(1, 2)
        else:
            x, pending1 = conv(self.conv1, state.conv1, x, self.cfg.conv_kernel // 2)
            x = nn.functional.gelu(x)                                      # (N, C, t1)
        mask = None
        if out_lengths is not None:                                        # (N, 1, t1): valid output frames
            mask = valid_frames(out_lengths, x.shape[2])
            x = x * mask
        # conv2 over front2d's time-major frames through the loops' kernel (called by every pass, as front2d is; the
        # choice follows front2d's, never the frames' count, so a graph traced on one length is right for all)
        c2 = conv_frames(x, self.conv2, self.conv2.padding[0] + 1, y is not None)
        x, pending2 = (c2, None) if c2 is not None else conv(self.conv2, state.conv2, x, 1)
        x = nn.functional.gelu(x)                                          # (N, C, t2)
        if mask is not None:
            x = x * mask
        x = x.transpose(1, 2)
        return x, mask, pending1, pending2                                 # (N, t2, C)

    def step(self, x: torch.Tensor, state: ModelState, final: bool = False, out_lengths: torch.Tensor | None = None,
             pack: bool = False) -> tuple[torch.Tensor, ModelState]:
        """(N, t, F) feature frames that follow `state` -> (N, t', V) log-probs of the output frames now
        final, and the state after them.

        `final`: the inputs end here. `out_lengths` (with final, for a padded batch): each input's output
        frames; frames past them are zeroed between layers, as padding each input alone would be, and
        with `pack` the recurrent stack runs on packed sequences (streams and single inputs need neither).
        """
        x, mask, pending1, pending2 = self._front(x, state, final, out_lengths)  # (N, t2, C), (N, 1, t2) or None
        log_probs, rnn_state, pending3 = self.head(x, state, final, out_lengths, mask, pack)
        return log_probs, ModelState(pending1, pending2, rnn_state, pending3)

    def head(self, x: torch.Tensor, state: ModelState, final, out_lengths: torch.Tensor | None = None,
             mask: torch.Tensor | None = None, pack: bool = False):
        """The rest of `step` after the convolutions: (N, t2, C) front-end output (`_front`, `front_end`) ->
        (N, t', V) log-probs, the recurrent state and the lookahead's pending frames after them. `mask`
        (N, 1, t2): the valid frames of `out_lengths` (built from them where not given)."""
        if mask is None and out_lengths is not None:
            mask = valid_frames(out_lengths, x.shape[1])
        # asr.rnn where it is faster: training (padded or packed: its backward pass is the gain), inputs of one
        # length (a file, a stream), products in bfloat16 (precision "bf16": its bfloat16 input products make the
        # padding cheap) or through oneDNN (asr.native.onednn_active: 2.3x BLAS's speed). Inference on a packed
        # batch of unequal lengths in float32 through BLAS runs torch.nn's packed kernel: its input products skip
        # the padding, and AN4 test on 1 thread took 0.73-0.74 s that way against 0.76-0.85 s through the compiled
        # loops (which shrink the batch as inputs end too, but project every padded step)
        bf16 = rnn_products(self.rnn) == torch.bfloat16
        fits = out_lengths is not None and (not pack or torch.is_grad_enabled() or bf16 or onednn_active()
                                            or bool((out_lengths == out_lengths[0]).all()))
        if fits and self.fast_rnn and rnn_supports(self.rnn, x):
            y, rnn_state = run_rnn(self.rnn, x, state.rnn, out_lengths if pack else None)
        elif pack and out_lengths is not None:
            packed = pack_padded_sequence(x, out_lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, rnn_state = self.rnn(packed, state.rnn)
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])  # (N, t2, H*dirs)
        elif out_lengths is not None:
            y, rnn_state = self.rnn(x, state.rnn)                         # (N, t2, H*dirs)
        else:
            y, rnn_state = self._stream_rnn(x, state.rnn)
        pending3 = state.lookahead
        if self.lookahead is not None:
            if mask is not None:
                y = y * mask.transpose(1, 2)                               # padding must not leak back in time
            y, pending3 = conv_step(self.lookahead, state.lookahead, y.transpose(1, 2), self.cfg.lookahead, final)
            y = y.transpose(1, 2)                                          # (N, t3, H)
        # asr.native.linear_layer: a decoding batch's product through oneDNN where that is faster (3.3x MKL's at 3348
        # x 320 -> 29, the EPYC), one input's through the loops' kernel; an int8 export's quantised layer computes its
        # own
        y, out = rnn_dropout(y, self.dropout.p, self.training), self.output
        logits = linear_layer(out, y) if type(out) is nn.Linear else out(y)   # (N, t', V)
        return logits.float().log_softmax(-1), rnn_state, pending3


def _pads_itself(x: torch.Tensor) -> bool:
    """Whether the offline pass over (N, T, F) features zero-pads each convolution's input within the convolution
    (AcousticModel._front's `whole`): inference in this process (its eager runs and graphs) on at least one frame.
    There conv_step's joined copies of each input and its cut outputs, whose GELU then runs on rows with gaps, took
    a quarter of the front end's time (AN4 test in batches, one thread, the EPYC: 75 -> ~58 ms in bfloat16). Training
    (its gradients as they were) and exported graphs (which must take inputs of no frames) keep conv_step."""
    return native() and not torch.is_grad_enabled() and x.shape[1] > 0


def valid_frames(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(N,) lengths -> (N, 1, frames) bool: which of a padded batch's frames are real."""
    return (torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None])[:, None, :]


def init_forget_bias(lstm: nn.LSTM, value: float = 1.0) -> None:
    """Start LSTM forget gates open (Jozefowicz et al., 2015) so early gradients reach back in time."""
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_"):
                h = bias.shape[0] // 4          # gate order: input, forget, cell, output
                bias[h:2 * h].fill_(value if name.startswith("bias_ih") else 0.0)


@contextmanager
def eval_mode(module: nn.Module):
    """`module` in eval mode (no dropout) inside the block, each of its modules back in its own mode after: a live
    model scored between epochs goes on training, one frozen in eval stays so. Only the modules in training
    mode are switched (setting every module's mode took 3 % of a short file's request)."""
    training = [m for m in module.modules() if m.training]
    for m in training:
        m.training = False
    try:
        yield module
    finally:
        for m in training:
            m.training = True


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
