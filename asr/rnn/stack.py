"""The recurrent stack on CPU: torch.nn's GRU, LSTM and RNN maths in fewer, larger operations.

`torch.nn` runs each direction of each layer as its own loop of small operations and records every one of them
for autograd, whose backward pass then replays them one by one (issue 36). Here, for every layer:

- the input projection of all time steps is one matrix product per direction, before the loop;
- both directions advance together: the backward direction's sequences are reversed in time (each within its
  own length) and stacked beside the forward ones, so one batched product per step serves both (two threads
  take one direction each);
- each step writes its gates into preallocated buffers with a handful of fused operations, on per-step views
  made once (asr.rnn.layers), and the backward pass is written out (an autograd.Function) instead of recorded: per
  step one batched product and a few elementwise operations; the recurrent weights' gradient is one large
  product after the loop;
- lengths (packed-sequence semantics: each sequence ends at its own length, padding never reaches a valid
  frame) cost the GRU nothing per step: past a sequence's end its update gate's input is +inf, so z = 1 exactly,
  h' = lerp(n, h, 1) = h exactly, and every gradient there vanishes.

- the loop itself, forward and backward, is compiled (asr/rnn_loop.cpp, built on first use by asr.native): the
  work splits into units, a direction and a range of batch rows, and each unit runs its whole loop on its own
  thread with no synchronisation between steps; each step is one small product and one vectorised pass over the
  gates. Where it cannot be built the Python loop of asr.rnn.layers runs (the same maths).

What is left is mostly the per-step matrix product, whose small shape (batch x hidden) runs below the machine's
large-matrix speed: `asr bench train` / `asr bench decode` print both (asr.bench.rnn), and the Python loop's time.

The weights are the nn module's own (`weight_ih_l0`, `weight_hh_l0_reverse`, ...), so checkpoints and the ONNX
and TorchScript exports are unchanged: `run` reads them, and asr.model runs the module itself wherever this path
does not apply (`supports`: another device or dtype, tracing for export, a quantised module).
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from ..native import bf16_tiles, compiled_loop, own_products
from ..tracing import native
from .layers import GRULayer, LSTMLayer, NoGraph, RNNLayer

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def supports(rnn: nn.Module, x: torch.Tensor) -> bool:
    """Whether `run` computes what `rnn(x)` would: a plain nn.GRU / LSTM / RNN (tanh) with biases on float32 CPU
    tensors, outside tracing and export (which must see the standard module: ONNX's GRU / LSTM / RNN ops), but
    in a graph traced for this process alone (asr.tracing.native)."""
    if type(rnn) not in (nn.GRU, nn.LSTM, nn.RNN) or not rnn.bias or getattr(rnn, "proj_size", 0):
        return False
    if isinstance(rnn, nn.RNN) and rnn.nonlinearity != "tanh":
        return False
    return native() and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


def run(rnn: nn.RNNBase, x: torch.Tensor, h0: Hidden | None = None,
        lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, Hidden]:
    """`rnn` (batch_first) over (N, T, C) inputs -> (N, T, H * dirs) outputs and the final state, as the module
    computes them: on the padded inputs as they are when `lengths` is None, else as on packed sequences of
    those (N,) lengths (outputs past a length are zero, the final state is each sequence's own)."""
    n, t = x.shape[0], x.shape[1]
    dirs, hidden = 2 if rnn.bidirectional else 1, rnn.hidden_size
    lstm = isinstance(rnn, nn.LSTM)
    if h0 is None:
        z = x.new_zeros(rnn.num_layers * dirs, n, hidden)
        h0 = (z, z) if lstm else z
    hs, cs = [], []
    back = None                                                         # the rows' order, where sorted here
    active = torch.empty(0, dtype=torch.long)   # compiled loops: (T,) rows each step is real for (empty: all)
    if lengths is not None and compiled_loop() is not None and not bool((lengths == t).all()):
        lengths, rows = lengths.to(torch.long).cpu().sort(descending=True, stable=True)  # longest first
        active = (lengths[None, :] > torch.arange(t)[:, None]).sum(1)
        if bool((rows != torch.arange(n)).any()):
            back = rows.argsort()
            x = x.index_select(0, rows)
            h0 = tuple(a.index_select(1, rows) for a in h0) if lstm else h0.index_select(1, rows)
    y = x.transpose(0, 1).contiguous()                                  # (T, N, C)
    order, mask = _order(lengths, t, n, dirs)
    # whether a backward pass can follow (else the compiled loops write only the states, not what it reads)
    saved = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in rnn.parameters()))
    for layer in range(rnn.num_layers):
        if layer and rnn.dropout and rnn.training:
            y = dropout(y, rnn.dropout)
        weights, w_hh_t = _layer_weights(rnn, layer, dirs)
        sl = slice(layer * dirs, (layer + 1) * dirs)
        cell = LSTMLayer if lstm else GRULayer if isinstance(rnn, nn.GRU) else RNNLayer
        # where no backward pass can follow, the layer's forward as a plain function: no autograd node, and a
        # trace records its operations instead of a call back into Python
        apply = cell.apply if saved else partial(cell.forward, NoGraph())
        if lstm:
            y, h, c = apply(y, h0[0][sl], h0[1][sl], order, mask, active, saved, w_hh_t, *weights)
            cs.append(c)
        else:
            y, h = apply(y, h0[sl], order, mask, active, saved, w_hh_t, *weights)
        hs.append(h)
    h_n = torch.cat(hs)                                                 # (layers * D, N, H)
    state = (h_n, torch.cat(cs)) if lstm else h_n
    if back is not None:                                                # the caller's order again
        y = y.index_select(1, back)
        state = tuple(a.index_select(1, back) for a in state) if lstm else state.index_select(1, back)
    return y.transpose(0, 1), state


def _layer_weights(rnn: nn.RNNBase, layer: int, dirs: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A layer's w_ih, w_hh, b_ih, b_hh stacked over its directions ((D, gH, C) ... (D, gH)) and w_hh transposed
    (D, H, gH), the loops' operand. Without autograd (inference) they are kept on the module (a copy of the layer's
    weights) until a parameter changes, replaced or written in place: restacking them took 7 % of decoding AN4 test
    file by file; kept where `own_products`, w_ih is stored transposed (the loops' kernel takes one input's
    projections, asr.native.linear) and w_hh_t in the loops' panels (rnn_loop.cpp `panels`: a step's product reads
    each panel as one stream). A call with autograd drops them: the optimiser step it leads to may write in
    place without counting a version (torch's fused AdamW does), so versions alone would miss it."""
    params = [getattr(rnn, f"{kind}_l{layer}{sfx}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
              for sfx in ("", "_reverse")[:dirs]]
    keep = not (torch.is_grad_enabled() and any(p.requires_grad for p in params))
    cache = rnn.__dict__.setdefault("_asr_layer_weights", {})   # layer -> (params, their versions, weights, w_hh_t)
    if not keep:
        cache.pop(layer, None)
    # the versions, and whether the compiled loops run (theirs alone take panels; benchmarks switch them)
    versions = [p._version for p in params] + [compiled_loop() is not None] if keep else None
    if keep and layer in cache:
        was, was_versions, weights, w_hh_t = cache[layer]
        if all(a is b for a, b in zip(was, params)) and was_versions == versions:
            return weights, w_hh_t
    weights = [torch.stack(params[k:k + dirs]) for k in range(0, 4 * dirs, dirs)]
    w_hh_t = weights[1].detach().transpose(1, 2).contiguous()
    if keep and products(rnn) == torch.bfloat16:    # products_in: the loops' two operands
        if _bf16_pairs():
            weights[0], w_hh_t = _pairs(weights[0].detach().transpose(1, 2)), _pairs(w_hh_t)
        else:
            weights[0], w_hh_t = weights[0].detach().to(torch.bfloat16), w_hh_t.to(torch.bfloat16)
    elif keep and own_products() and weights[0].device.type == "cpu":   # w_ih stored transposed: asr.native.linear
        weights[0] = weights[0].detach().transpose(1, 2).contiguous().transpose(1, 2)   # (D, gH, C) held as (D, C, gH)
        if (ops := compiled_loop()) is not None:                         # w_hh in the loops' panels
            w_hh_t = ops.panels(w_hh_t)
    if keep:
        cache[layer] = params, versions, weights, w_hh_t
    return weights, w_hh_t


def products_in(rnn: nn.RNNBase, dtype: torch.dtype) -> bool:
    """Inference's matrix products of `rnn` through `run` in `dtype` from here on: torch.bfloat16 runs the input
    projections and each step's product on bfloat16 operands (the states rounded to it at each step) with float32
    accumulation and results, in the compiled loops: MKL's gemm_bf16bf16f32 on CPUs with AMX tiles, the loops' own
    AVX-512 BF16 kernel (gemm_pairs, rnn_loop.cpp) on CPUs with that but no tiles, where MKL's ran the stack 4x
    slower than float32 (recipes/an4/RESULTS.md), else MKL's. The gates, states and outputs stay float32, and a
    call with autograd (training) keeps float32 products. False (and float32 kept) where the compiled loops or
    both products are missing; torch.float32 goes back."""
    ops = compiled_loop()
    ok = dtype == torch.float32 or (dtype == torch.bfloat16 and ops is not None
                                    and (ops.blas_bf16() or ops.bf16_pairs()))
    if ok:
        rnn.__dict__["_asr_products"] = dtype
        rnn.__dict__.pop("_asr_layer_weights", None)                    # the kept operands, in the old dtype
    return ok


def _bf16_pairs() -> bool:
    """Whether the bfloat16 operands go to the loops' own AVX-512 BF16 kernel (else to MKL's product)."""
    ops = compiled_loop()
    return ops is not None and bool(ops.bf16_pairs()) and not (bf16_tiles() and ops.blas_bf16())


def _pairs(w: torch.Tensor) -> torch.Tensor:
    """(D, K, N) -> (D, ceil(K / 2), N, 2) bfloat16, rows 2i and 2i + 1 interleaved column by column (a zero row
    past an odd K): the operand of the loops' AVX-512 BF16 kernel."""
    w = F.pad(w, (0, 0, 0, w.shape[1] % 2))
    return w.to(torch.bfloat16).view(w.shape[0], -1, 2, w.shape[2]).transpose(2, 3).contiguous()


def products(rnn: nn.RNNBase) -> torch.dtype:
    """The dtype of `rnn`'s inference products through `run` (products_in)."""
    return rnn.__dict__.get("_asr_products", torch.float32)


def _order(lengths: torch.Tensor | None, t: int, n: int, dirs: int):
    """The backward direction's time order and the validity mask: the (T * N,) rows of a (T * N, ...) view that
    reverse each sequence within its length (None: reverse the whole padded axis) and (T, 1, N, 1) True where a
    step is real (None: every step is)."""
    if lengths is None or bool((lengths == t).all()):
        return None, None
    lengths = lengths.to(torch.long).cpu()
    steps = torch.arange(t)[:, None]                                      # (T, 1)
    order = None
    if dirs == 2:
        order = (torch.where(steps < lengths, lengths - 1 - steps, steps) * n + torch.arange(n)).view(-1)
    return order, (steps < lengths)[:, None, :, None]


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout's maths (each element zeroed with probability p, the others scaled by 1 / (1 - p)) with the mask
    drawn 16 bits an element out of 64-bit draws: on CPU torch's per-element Bernoulli draws cost 4x this (8 ms
    against 2 for a (16, 120, 320) batch, more than the products around them). p is rounded to 1/32768."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, True)
    bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_().view(torch.int16)[:x.numel()]
    keep = bits.bitwise_and_(0x7FFF).lt_(round((1 - p) * 32768))        # 1 with probability 1 - p, 15 bits each
    return x * keep.view(x.shape).to(x.dtype).mul_(1 / (1 - p))

