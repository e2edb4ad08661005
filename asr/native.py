"""The package's compiled code and this CPU's fast paths: the recurrent layers' time loops (asr/rnn_loop.cpp) and
the features' filterbank step (asr/spectrum.cpp), one extension built with torch's C++ extension tools on first use
and loaded as torch.ops.asr_rnn_loop, which asr.rnn's layers call, and torch.ops.asr_spectrum, which asr.features
calls (None where they cannot be built, and the same maths runs in Python and tensor operations); which engine a batch's
float32 products take (oneDNN or BLAS), and the loops' steps (their own kernel or BLAS); what the CPU computes in
bfloat16.

    ops = compiled_loop()          # torch.ops.asr_rnn_loop, or None
    compiled_spectrum()            # torch.ops.asr_spectrum, or None
    compiled_loop(False)           # this process runs the Python loop (benchmarks time both)
    bf16_instructions(), bf16_tiles()   # what this CPU computes in bfloat16 fast (precision "bf16" asks)
    with batch_products(): linear(x, w, bias)   # a batch's float32 product through the faster engine (oneDNN or BLAS)
    own_products()                 # whether the loops' own kernel takes each step's and one input's products
    linear_layer(layer, x)         # an nn.Linear through linear, its weight kept for that kernel where it takes it
    conv_frames(x, conv, pad, True)  # a 1-D convolution over time-major frames through that kernel (or None)
    front2d(x, conv1, conv1f, pad) # the 2-D front end's two convolutions and GELUs through it (or None)
    keep_freed_memory()            # glibc's malloc keeps a batch's freed blocks for the next (load_model, train)
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from .tracing import eager, native

_SOURCES = [Path(__file__).with_name(name) for name in ("rnn_loop.cpp", "spectrum.cpp")]   # one extension
_loop_lock = threading.Lock()
_loop_state: dict = {}                  # "built": whether the extension was built and loaded; "off": compiled_loop's


def compiled_loop(enable: bool | None = None):
    """The recurrent layers' compiled time loops (asr/rnn_loop.cpp: each direction and range of rows its own whole
    loop on its own thread, the gates one vectorised pass), built with torch's C++ extension tools on first use
    (about 15 s with compiled_spectrum's kernel, `make install` does it once; cached under TORCH_EXTENSIONS_DIR,
    default ~/.cache/torch_extensions) and loaded; None where it cannot be (no compiler, a CPU without AVX2,
    ASR_RNN_LOOP=0), and the Python loop runs. `enable` switches it on or off for this process (benchmarks time
    both)."""
    if enable is not None:
        _loop_state["off"] = not enable
    if _loop_state.get("off", False) or not _extension():
        return None
    return torch.ops.asr_rnn_loop


def compiled_spectrum():
    """The features' compiled step from a spectrum to its filterbank's log energies (asr/spectrum.cpp,
    torch.ops.asr_spectrum.mel_energies), built with the loops; None where they cannot be (asr.features then
    computes it in tensor operations: the same maths)."""
    return torch.ops.asr_spectrum if _extension() else None


def _extension() -> bool:
    """Whether the package's compiled code is built and loaded (once a process; not where ASR_RNN_LOOP=0)."""
    if "built" not in _loop_state:
        with _loop_lock:
            if "built" not in _loop_state:
                built = os.environ.get("ASR_RNN_LOOP", "1") != "0" and _build()
                if built:
                    torch.ops.asr_rnn_loop.own_products(own_products())     # this process's choice, to the loops
                _loop_state["built"] = built
    return _loop_state["built"]


def bf16_instructions() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX tiles): there oneDNN's bfloat16
    convolutions pay; elsewhere bfloat16 is emulated, and slower than float32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def bf16_tiles() -> bool:
    """Whether this CPU has AMX tiles, where MKL's bfloat16 product beats its float32 one at the recurrent stack's
    shapes (a 2-core Xeon: 1.1x a decoding batch's stack). With AVX-512 BF16 alone (a 2-core AMD EPYC, 2026-12-06)
    it ran the stack 4x slower file by file, AN4 test 2.5x slower one file at a time (recipes/an4/RESULTS.md): there
    the loops' own AVX-512 BF16 kernel runs it (asr.rnn.products_in)."""
    return torch.cpu._is_amx_tile_supported()


_products: dict = {}                    # "onednn", "own": onednn_products, own_products, decided once a process
_local = threading.local()              # .batch: within `batch_products` on this thread


def onednn_products(enable: bool | None = None) -> bool:
    """Whether `linear`'s float32 products go through oneDNN (torch's own, the engine of its convolutions) rather
    than torch's BLAS (MKL in the x86 wheels): on AMD's CPUs with AVX-512, where MKL runs its AVX2 kernels and
    oneDNN its AVX-512 ones (a 2-core AMD EPYC, family 26: 250-264 against 104-112 GFLOP/s at the recurrent
    stack's input products, recipes/an4/RESULTS.md); on Intel's, MKL has AVX-512 too, and nothing changes.
    ASR_ONEDNN_PRODUCTS=1 / 0 decides instead; `enable` switches it for this process (benchmarks time both)."""
    if enable is not None:
        _products["onednn"] = enable
    if "onednn" not in _products:
        env = os.environ.get("ASR_ONEDNN_PRODUCTS")
        _products["onednn"] = env == "1" if env in ("0", "1") else _blas_without_avx512()
        _products["onednn"] &= torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    return _products["onednn"]


def own_products(enable: bool | None = None) -> bool:
    """Whether float32 products take the compiled loops' own AVX-512 kernels rather than torch's BLAS: every step's
    product in the loops (else only those of at most 16 rows), and outside a batch one input's products of a weight
    stored transposed (`linear`: the features' mel matrix, and the input weights asr.rnn keeps for inference, which
    it stores so while this holds). Where the BLAS runs AVX2 kernels on a CPU with AVX-512 (a 2-core AMD EPYC,
    family 26: 215-233 against 66-109 GFLOP/s at a step's shapes, 216-230 against 97-99 at a file's projections;
    AN4 test decoded in batches 1.05-1.33x faster, file by file in float32 1.14-1.26x, recipes/an4/RESULTS.md).
    ASR_OWN_PRODUCTS=1 / 0 decides instead; `enable` switches it for this process (and tells the loops, where built;
    weights asr.rnn keeps already stay as stored, the same maths either way)."""
    if enable is not None or "own" not in _products:
        env = os.environ.get("ASR_OWN_PRODUCTS")
        _products["own"] = (enable if enable is not None else env == "1" if env in ("0", "1")
                            else _blas_without_avx512())
        if _loop_state.get("built"):
            torch.ops.asr_rnn_loop.own_products(_products["own"])
    return _products["own"]


def _blas_without_avx512() -> bool:
    """Whether torch's BLAS (MKL in the x86 wheels) runs AVX2 kernels on a CPU with AVX-512: AMD's, where MKL keeps
    AVX-512 for Intel's. Decided by the CPU, not timed, so that every process on a machine computes alike (a
    resumed run's sums in the same order as the first)."""
    return torch.backends.cpu.get_cpu_capability() == "AVX512" and _cpu_vendor() == "AuthenticAMD"


def _cpu_vendor() -> str:
    """The CPU's vendor_id ("GenuineIntel", "AuthenticAMD"), "" where /proc/cpuinfo does not say."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@contextmanager
def batch_products():
    """Within, on this thread: `linear` may take oneDNN (`onednn_products`): a batch's forward in decoding, a
    training step's forward and backward. Outside, and in any traced graph, torch's BLAS: one input's products (a
    file, a request; the checkpoint's one-input graph, which must equal the module bit for bit) gained nothing
    measurable, and oneDNN keeps ~0.7 MB for every row count it has run (a server meets every length)."""
    before = getattr(_local, "batch", False)
    _local.batch = True
    try:
        yield
    finally:
        _local.batch = before


def onednn_active() -> bool:
    """Whether `linear` takes oneDNN here and now (`batch_products` and `onednn_products`)."""
    return getattr(_local, "batch", False) and onednn_products()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3                           # mallopt's parameters (glibc's malloc.h)
_malloc: dict = {}                      # "kept": whether keep_freed_memory set them in this process


def keep_freed_memory() -> bool:
    """Has glibc's malloc keep freed memory for the next batch in this process: blocks up to 32 MB from its heap
    (M_MMAP_THRESHOLD) and up to 64 MB freed at the heap's top kept, not returned (M_TRIM_THRESHOLD). As it
    starts, glibc maps large blocks fresh and returns freed ones readily, so each batch's tensors (MBs each) fault
    their pages in again: ~33,000 minor faults a pass of AN4 test decoded in batches, 1.26x its time on a 2-core
    AMD EPYC, a training step 3-8 % (recipes/an4/RESULTS.md); the peak RSS stays the same. Called by load_model and
    train; once a process; nothing where the C library is not glibc or the user has set its malloc variables
    (MALLOC_*_ or GLIBC_TUNABLES). Returns whether they are set."""
    if "kept" not in _malloc:
        _malloc["kept"] = False
        if not any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ):
            try:
                import ctypes
                import platform
                if platform.libc_ver()[0] == "glibc":
                    libc = ctypes.CDLL("libc.so.6")
                    _malloc["kept"] = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
                                           and libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20))
            except (OSError, AttributeError):
                pass
    return _malloc["kept"]


def bucket_rows(m: int) -> int:
    """m rows rounded up to one of 8 sizes an octave (16 at least apart): the row counts oneDNN is asked for, so that
    a run meets a bounded few of them (each costs ~0.7 MB kept, see `batch_products`) for at most 1/8 more rows."""
    step = max(16, 1 << max(0, m.bit_length() - 4))
    return -(-m // step) * step


def _own_kernels(x: torch.Tensor, *weights: torch.Tensor):
    """The compiled loops (torch.ops.asr_rnn_loop) where a product of x by `weights` takes their own float32 kernels:
    all float32 on a CPU, without autograd, eagerly or in a graph for this process, where `own_products`; else None.
    The one test behind `linear`'s, `conv_frames`' and `front2d`'s choice of them."""
    if (x.dtype == torch.float32 and all(w.dtype == torch.float32 for w in weights) and x.device.type == "cpu"
            and not torch.is_grad_enabled() and native() and own_products()):
        return compiled_loop()
    return None


def linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., K) @ w (N, K)^T + bias (N,) -> (..., N) (written into `out` where given: x 2-D): F.linear, through
    oneDNN where `onednn_active` and the product is float32 on a CPU, eager, outside autograd and autocast (its
    rows padded to `bucket_rows`); else, a float32 w stored transposed (w.t() contiguous: the features' mel matrix,
    the input weights asr.rnn keeps for inference where `own_products`) through the compiled loops' own kernel
    where `own_products`, without autograd, eagerly or in a graph for this process (asr.tracing.native). They all
    agree to float32 rounding."""
    if (x.dtype == w.dtype == torch.float32 and x.device.type == "cpu" and onednn_active() and eager()
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad))
            and not torch.is_autocast_enabled("cpu")):
        rows = x.reshape(-1, x.shape[-1])                                                         # (M, K)
        m, padded = rows.shape[0], bucket_rows(rows.shape[0])
        if padded > m:
            rows = torch.cat([rows, rows.new_zeros(padded - m, rows.shape[1])])
        addend = (bias if bias is not None else w.new_zeros(w.shape[0]))[None]                     # (1, N)
        y = torch.ops.mkldnn._linear_pointwise.binary(rows, addend, w, None, "add")[:m]
        y = y.view(*x.shape[:-1], w.shape[0])                                                       # (..., N)
        return y if out is None else out.copy_(y)
    if w.dim() == 2 and w.t().is_contiguous() and (ops := _own_kernels(x, w)) is not None:
        rows = x.reshape(-1, x.shape[-1]).contiguous()                                            # (M, K)
        y = out if out is not None else x.new_empty(rows.shape[0], w.shape[0])                    # (M, N)
        ops.linear_f32(y, bias, rows, w.t())
        return y if out is not None else y.view(*x.shape[:-1], w.shape[0])
    if out is None:
        return torch.nn.functional.linear(x, w, bias)
    return torch.mm(x, w.t(), out=out) if bias is None else torch.addmm(bias, x, w.t(), out=out)


def linear_layer(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """layer(x) through `linear`, its weight kept stored transposed (`kept_operand`) where linear then takes the
    compiled loops' kernel for it (`own_products`, inference in this process outside a batch's oneDNN): the output
    layer of a request, 320 -> 29 over its ~100 frames, 8 against MKL's 41 us on a 2-core AMD EPYC."""
    w = layer.weight
    own = _own_kernels(x, w) is not None and not onednn_active()
    t = kept_operand(layer, "_asr_weight_t", w, (lambda w: w.t().contiguous().t()) if own else None)
    return linear(x, w if t is None else t, layer.bias)


def conv_frames(x: torch.Tensor, conv: torch.nn.Conv1d, pad: int, time_major: bool) -> torch.Tensor | None:
    """conv(x) of (N, Ci, T) float32 frames held time-major (`time_major`: the caller's word; front2d's output) ->
    (N, Co, T') held time-major too, its time axis zero-padded by `pad` frames at each end (conv's own padding
    included), through the compiled loops' own kernel (rnn_loop.cpp conv_frames_f32: tap by tap, no padded copy).
    None where it does not apply: a convolution of stride, dilation and groups 1, float32, without autograd, on at
    least the kernel's frames once padded (conv's own error stays conv's), where `own_products` (there oneDNN's
    convolution ran below the kernel's speed: one request's conv2, 640 -> 160 over k = 3, 0.42 against 0.25 ms on a
    2-core AMD EPYC, recipes/an4/RESULTS.md), eagerly or in a graph for this process. The kernel's operand, w (k,
    Ci, Co), is kept on the module until its weight changes (`kept_operand`: a call with autograd drops it, so the
    caller calls every pass). Time-major is the caller's word, not read from x's strides: a single frame is
    contiguous either way, and a graph traced on one length must take the same path at every length."""
    w = conv.weight
    applies = (time_major and conv.stride == (1,) and conv.dilation == (1,) and conv.groups == 1
               and conv.padding_mode == "zeros" and x.transpose(1, 2).is_contiguous()
               and x.shape[2] + 2 * pad >= w.shape[2] and (ops := _own_kernels(x, w)) is not None)
    taps = kept_operand(conv, "_asr_frames_weight", w, (lambda w: w.permute(2, 1, 0).contiguous()) if applies
                        else None)                                     # (k, Ci, Co)
    if taps is None:
        return None
    n, t = x.shape[0], x.shape[2] + 2 * pad - w.shape[2] + 1
    out = x.new_empty(n, t, w.shape[0])                                # (N, T', Co)
    ops.conv_frames_f32(out, None if conv.bias is None else conv.bias.detach(), x.transpose(1, 2), taps, pad)
    return out.transpose(1, 2)


def front2d(x: torch.Tensor, conv1: torch.nn.Conv2d, conv1f: torch.nn.Conv2d, pad: int,
            whole: bool = True) -> torch.Tensor | None:
    """The 2-D front end's convolutions over whole inputs: (N, T, F) float32 features -> (N, C2 F2, T1) held
    time-major (the reshape's output, as conv_frames takes it) = gelu(conv1f(gelu(conv1(x)))) flattened channel by
    channel, conv1's time axis zero-padded by `pad` more frames at each end than its own padding, through the
    compiled loops' kernel (rnn_loop.cpp front2d_f32: frame by frame, in L1; 0.37 -> ~0.1 ms of a request on a
    2-core AMD EPYC, recipes/an4/RESULTS.md). None where it does not apply: conv1 of one input channel, conv1f over
    frequency alone (kernel and stride 1 in time, no time padding), both with biases, dilation and groups 1,
    float32 without autograd where `own_products`, eagerly or in a graph for this process, on enough frames; not
    `whole` (a stream's piece). Called by every pass all the same, so that a training step drops the weights it
    keeps (`kept_operand`)."""
    (kf1, kt1), (kf2, kt2) = conv1.kernel_size, conv1f.kernel_size
    (sf1, st1), sf2, pf2 = conv1.stride, conv1f.stride[0], conv1f.padding[0]
    pf1, pt1 = conv1.padding[0], conv1.padding[1] + pad
    f1 = (x.shape[-1] + 2 * pf1 - kf1) // sf1 + 1                      # conv1's frequencies, then conv1f's
    applies = (whole and f1 > 0 and f1 + 2 * pf2 >= kf2 and conv1.in_channels == 1 and kt2 == 1
               and conv1f.stride[1] == 1 and conv1f.padding[1] == 0 and conv1.bias is not None
               and conv1f.bias is not None
               and all(c.dilation == (1, 1) and c.groups == 1 and c.padding_mode == "zeros" for c in (conv1, conv1f))
               and x.is_contiguous() and x.shape[1] + 2 * pt1 >= kt1
               and (ops := _own_kernels(x, conv1.weight, conv1f.weight)) is not None)
    w1 = kept_operand(conv1, "_asr_front_weight", conv1.weight,
                      (lambda w: w[:, 0].permute(1, 2, 0).contiguous()) if applies else None)     # (kf1, kt1, C1)
    w2 = kept_operand(conv1f, "_asr_front_weight", conv1f.weight,
                      (lambda w: w[..., 0].permute(2, 1, 0).contiguous()) if applies else None)   # (kf2, C1, C2)
    if w1 is None or w2 is None:
        return None
    f2 = (f1 + 2 * pf2 - kf2) // sf2 + 1
    out = x.new_empty(x.shape[0], (x.shape[1] + 2 * pt1 - kt1) // st1 + 1, conv1f.out_channels * f2)  # (N, T1, C2 F2)
    ops.front2d_f32(out, x, w1, conv1.bias.detach(), w2, conv1f.bias.detach(), sf1, st1, pf1, pt1, sf2, pf2)
    return out.transpose(1, 2)


def kept_operand(module: torch.nn.Module, key: str, weight: torch.Tensor, make) -> torch.Tensor | None:
    """Inference's operand make(weight) (a kernel's layout of a module's weight), kept on `module` under `key` until
    `weight` is replaced or written in place (its version): remaking it each call cost a copy of the weight a request.
    make None: a call it is not for, None. A call with autograd on `weight` (training) drops it and gives None: the
    optimiser step such a call leads to may write in place without counting a version (torch's fused AdamW on a CPU
    does), so the versions alone would miss it (asr.rnn keeps its layers' weights by the same rule)."""
    if torch.is_grad_enabled() and weight.requires_grad:
        module.__dict__.pop(key, None)
        return None
    if make is None:                                                    # (a call the operand is not for)
        return None
    kept = module.__dict__.get(key)                                     # (weight, its version, the operand)
    if kept is None or kept[0] is not weight or kept[1] != weight._version:
        kept = module.__dict__[key] = weight, weight._version, make(weight.detach())
    return kept[2]


# The vector width the loops' gates are compiled for, by what torch itself found in this CPU: AVX-512's 16 floats
# a vector took the gates' share of a decoding batch's GRU loop from ~8.5 to ~5.5 ms on a 2-core Xeon
# (recipes/an4/RESULTS.md); each build its own name, so a cache built on one CPU is never loaded on another.
_CAPABILITY_FLAGS = {
    "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-DCPU_CAPABILITY=AVX512",
               "-DCPU_CAPABILITY_AVX512"],
}


def _build() -> bool:
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in _CAPABILITY_FLAGS:
        return False
    try:
        import ninja  # torch's builder runs `ninja`: put it on PATH
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)   # "no CUDA runtime": not needed here
        from torch.utils.cpp_extension import load
        load(name=f"asr_rnn_loop_{capability.lower()}", sources=[str(p) for p in _SOURCES], is_python_module=False,
             extra_cflags=["-O3", "-fopenmp", *_CAPABILITY_FLAGS[capability]],
             extra_ldflags=["-ldl"])                                    # dlopen: torch's own sgemm (rnn_loop.cpp)
        return True
    except Exception as e:                                              # noqa: BLE001 - any failure: the Python loop
        warnings.warn(f"asr: the compiled code ({', '.join(p.name for p in _SOURCES)}) could not be built, so the "
                      f"Python loop runs (the same maths, slower): {e}", stacklevel=3)
        return False
