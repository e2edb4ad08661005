"""The recurrent stack's speed against the machine's: asr.rnn and torch.nn on the same inputs, in one run, beside
one large matrix product timed on the same threads (the most this CPU does per second). `asr bench train` and
`asr bench decode` print these rows.

FLOPs are the stack's matrix products, counted once per output frame (multiply and add: 2 each): for every layer
and direction, gates x hidden x (input + hidden) multiply-adds; training counts the backward pass as twice the
forward (the gradients of the inputs and of the weights). The elementwise gate maths is left out of the count,
so the figure is what the products would reach if nothing else took time.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from ..native import batch_products, compiled_loop, linear, onednn_products
from ..rnn import products_in, run

GATES = {nn.GRU: 3, nn.LSTM: 4, nn.RNN: 1}
PEAK_SIZE = 2048  # the timed product: 2048^3 (17 GFLOP), long enough to reach the clock, short enough to repeat


def matmul_peak(threads: int, size: int = PEAK_SIZE, repeats: int = 3, dtype: torch.dtype = torch.float32,
                onednn: bool | None = None) -> float:
    """GFLOP/s of the best of `repeats` (size x size) @ (size x size) products in `dtype` on `threads` threads
    (float32: through oneDNN or BLAS as `onednn` says, else as asr.native.linear chooses)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    chosen = onednn_products()
    if onednn is not None:
        onednn_products(onednn)
    try:
        with torch.no_grad(), batch_products():
            product = (lambda: linear(a, b)) if dtype == torch.float32 else (lambda: a @ b)
            product()
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                product()
                best = min(best, time.perf_counter() - start)
    finally:
        onednn_products(chosen)
    return 2 * size ** 3 / best / 1e9


def float32_peaks(threads: int) -> dict:
    """matmul_peak in float32 through torch's BLAS (`blas_peak_gflops`) and oneDNN (`onednn_peak_gflops`), and
    the faster (`peak_gflops`: the most this CPU does per second; on an AMD EPYC with AVX-512 oneDNN's, 2.3x
    MKL's, asr.native.onednn_products)."""
    peaks = {"blas_peak_gflops": matmul_peak(threads, onednn=False),
             "onednn_peak_gflops": matmul_peak(threads, onednn=True)}
    return {"peak_gflops": max(peaks.values()), **peaks}


def stack_flops(rnn: nn.RNNBase, frames: int, train: bool) -> float:
    """Multiply-add FLOPs of `rnn`'s matrix products over `frames` frames (x3 with the backward pass)."""
    gates, dirs, h = GATES[type(rnn)], 2 if rnn.bidirectional else 1, rnn.hidden_size
    per_frame = sum(2 * gates * h * ((rnn.input_size if layer == 0 else h * dirs) + h) * dirs
                    for layer in range(rnn.num_layers))
    return per_frame * frames * (3 if train else 1)


def _time(fn, repeats: int) -> float:
    fn()                                                               # warm-up: allocations
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_stack(rnn: nn.RNNBase, batches: list[tuple[torch.Tensor, torch.Tensor]], train: bool, threads: int,
                repeats: int = 3) -> dict:
    """asr.rnn and torch.nn over `batches` of (N, T, C) stack inputs and (N,) lengths (packed semantics when
    decoding; padded, as training runs, with the backward pass when `train`): seconds, GFLOP/s and the speed-up,
    with the sgemm peak of the same threads; decoding also asr.rnn's products in bfloat16 (precision "bf16",
    asr.rnn.products_in), where the compiled loops have a bfloat16 kernel here, beside a bfloat16 product's peak."""
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.set_num_threads(threads)
    rnn.train(train)

    def ours():                                   # as a model's batch runs it (asr.native.batch_products)
        for x, n in batches:
            y, _ = run(rnn, x.requires_grad_(train), None, None if train else n)
            if train:
                y.sum().backward()

    def theirs():
        for x, n in batches:
            if train:
                y, _ = rnn(x.requires_grad_())
                y.sum().backward()
            else:
                rnn(pack_padded_sequence(x, n, batch_first=True, enforce_sorted=False))

    compiled = compiled_loop() is not None
    with torch.set_grad_enabled(train), batch_products():
        seconds = {"asr.rnn": _time(ours, repeats), "torch.nn": _time(theirs, repeats)}
        if compiled:                                                    # and asr.rnn with its Python loop
            compiled_loop(False)
            try:
                seconds["python loop"] = _time(ours, repeats)
            finally:
                compiled_loop(True)
        if not train and products_in(rnn, torch.bfloat16):
            try:
                seconds["asr.rnn bf16"] = _time(ours, repeats)
            finally:
                products_in(rnn, torch.float32)
    frames = sum(int(x.shape[0] * x.shape[1]) if train else int(n.sum()) for x, n in batches)
    flops = stack_flops(rnn, frames, train)
    peaks = float32_peaks(threads)
    bf16 = {"bf16_peak_gflops": matmul_peak(threads, dtype=torch.bfloat16)} if "asr.rnn bf16" in seconds else {}
    return {"threads": threads, "train": train, "frames": frames, "gflop": flops / 1e9, **peaks,
            "compiled": compiled, **bf16,
            **{f"{k}_seconds": v for k, v in seconds.items()},
            **{f"{k}_gflops": flops / v / 1e9 for k, v in seconds.items()},
            "speedup": seconds["torch.nn"] / seconds["asr.rnn"]}


def format_stack(r: dict) -> str:
    """One line per implementation and the ratios."""
    what = "forward + backward (training)" if r["train"] else "forward (decoding)"
    bf16 = f"; bfloat16 {PEAK_SIZE}^3: {r['bf16_peak_gflops']:.0f}" if "bf16_peak_gflops" in r else ""
    peak = lambda name: ("bfloat16", r["bf16_peak_gflops"]) if "bf16" in name else ("float32", r["peak_gflops"])
    return "\n".join(
        [f"recurrent stack, {what}, {r['threads']} thread(s), {r['frames']} frames, {r['gflop']:.2f} GFLOP of "
         f"products; float32 {PEAK_SIZE}^3 on the same threads: BLAS {r['blas_peak_gflops']:.0f}, oneDNN "
         f"{r['onednn_peak_gflops']:.0f} GFLOP/s{bf16}"]
        + [f"  {name:<12} {r[f'{name}_seconds']:8.3f} s {r[f'{name}_gflops']:7.1f} GFLOP/s "
           f"({r[f'{name}_gflops'] / peak(name)[1]:.0%} of {peak(name)[0]})"
           for name in ("torch.nn", "python loop", "asr.rnn", "asr.rnn bf16") if f"{name}_seconds" in r]
        + [f"  asr.rnn / torch.nn: {r['speedup']:.2f}x"
           + (" (asr.rnn: the compiled loop, asr/rnn_loop.cpp; python loop: the same without it)"
              if r.get("compiled") else " (asr.rnn's Python loop: the compiled one does not apply or is not built)")])
