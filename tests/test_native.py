"""asr.native's float32 products: `linear` through oneDNN or BLAS, the same maths either way; oneDNN only for a
batch (`batch_products`), where autograd does not need the product and outside traced graphs, on a bounded few row
counts; the engine chosen by the CPU."""
import pytest
import torch
from torch import nn

from asr import native
from asr.native import batch_products, bucket_rows, linear
from asr.tracing import tracing_in_process

ONEDNN_OP = "mkldnn::_linear_pointwise"


def _ops(f) -> set[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        f()
    return {e.name for e in prof.events()}


@pytest.mark.parametrize("onednn", [False, True])
@pytest.mark.parametrize("rows, bias, three_d", [(37, True, False), (1, True, False), (0, True, False),
                                                 (40, False, True), (300, True, True)])
def test_linear_is_f_linear_through_either_engine(rows, bias, three_d, onednn, products_engine):
    products_engine(onednn)
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, 19, generator=g)
    x = x.view(2, rows // 2, 19)[:, 1:] if three_d else x               # (2, n, K), not contiguous, or (rows, K)
    w, b = torch.randn(23, 19, generator=g), torch.randn(23, generator=g) if bias else None
    want = nn.functional.linear(x.double(), w.double(), None if b is None else b.double()).float()
    got = []
    assert ONEDNN_OP not in _ops(lambda: got.append(linear(x, w, b)))            # one input's: torch's always
    with batch_products():                                                       # a batch's
        ops = _ops(lambda: got.append(linear(x, w, b)))
        out = torch.full((x.shape[0], 23), float("nan"))
        if not three_d:                                                          # into a given tensor
            assert linear(x, w, b, out=out) is out
            got.append(out)
    for y in got:
        assert y.shape == want.shape
        torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
    assert (ONEDNN_OP in ops) == onednn


def test_a_product_autograd_needs_stays_torchs(products_engine):
    products_engine(True)
    x, w = torch.randn(30, 8, requires_grad=True), torch.randn(5, 8, requires_grad=True)
    with batch_products():
        ops = _ops(lambda: linear(x, w).square().sum().backward())
        assert ONEDNN_OP not in ops
        torch.testing.assert_close(x.grad, 2 * (x @ w.t()) @ w)
        with torch.no_grad():
            assert ONEDNN_OP in _ops(lambda: linear(x, w))


OWN_OP = "asr_rnn_loop::linear_f32"


@pytest.mark.parametrize("own", [False, True])
@pytest.mark.parametrize("rows, n, bias, three_d", [(97, 480, True, False), (1, 480, True, False),
                                                    (6, 80, False, True), (290, 29, True, False), (0, 80, True, False)])
def test_a_weight_stored_transposed_takes_the_loops_kernel_where_own_products(rows, n, bias, three_d, own,
                                                                             products_engine):
    """One input's products of a weight kept transposed (asr.rnn's input weights for inference, the features' mel
    matrix) go through the compiled loops' kernel where `own_products` (every width: whole blocks of vectors and
    masked ones, one row and many, no bias), torch's BLAS elsewhere and for a batch's oneDNN; the same maths."""
    if native.compiled_loop() is None:
        pytest.skip("the compiled loops could not be built here")
    products_engine(True)
    native.own_products(own)
    g = torch.Generator().manual_seed(rows + n)
    x = torch.randn(2 * rows, 70, generator=g)[::2]                          # (rows, K), not contiguous
    x = x.view(2, rows // 2, 70) if three_d else x
    w = torch.randn(70, n, generator=g).t()                                  # (N, K), stored (K, N)
    b = torch.randn(n, generator=g) if bias else None
    want = nn.functional.linear(x.double(), w.double(), None if b is None else b.double()).float()
    with torch.no_grad():
        got = []
        ops = _ops(lambda: got.append(linear(x, w, b)))
        if not three_d:
            out = torch.full((rows, n), float("nan"))
            assert linear(x, w, b, out=out) is out
            got.append(out)
        assert (OWN_OP in ops) == own
        with batch_products():
            assert OWN_OP not in _ops(lambda: got.append(linear(x, w, b)))       # a batch's: oneDNN
        assert OWN_OP not in _ops(lambda: linear(x, w.contiguous(), b))        # a weight as modules keep it
    assert OWN_OP not in _ops(lambda: linear(x, w, b))                         # autograd may need it: torch's
    for y in got:
        assert y.shape == want.shape
        torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 9, 17, 50])
@pytest.mark.parametrize("k, n", [(160, 480), (33, 99)])
def test_the_bfloat16_pairs_kernel_sums_in_float32_at_every_row_count(rows, k, n):
    """The loops' AVX-512 BF16 product (linear_bf16 on weights in pairs: eight rows by three vectors at a time, then
    four, two, one; whole and part vectors; an odd K padded with a zero) gives float32 sums of the operands rounded
    to bfloat16, plus the bias."""
    ops = native.compiled_loop()
    if ops is None or not ops.bf16_pairs():
        pytest.skip("no AVX-512 BF16 here")
    g = torch.Generator().manual_seed(rows * k)
    x, w, b = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    kp = (k + 1) // 2
    pairs = nn.functional.pad(w, (0, 2 * kp - k)).view(n, kp, 2).transpose(0, 1).contiguous().bfloat16()  # (kp, N, 2)
    out = torch.empty(rows, n)
    ops.linear_bf16(out, b, x, pairs)
    want = (x.bfloat16().double() @ w.bfloat16().double().t() + b.double()).float()
    torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-5)


def test_onednn_meets_a_bounded_few_row_counts():
    """oneDNN keeps ~0.7 MB for each row count it has run: every count from 1 to 100 000 rounds up to one of at most
    8 an octave, by at most 1/8 (16 rows at least apart)."""
    counts = {bucket_rows(m) for m in range(100_001)}
    assert len(counts) <= 8 * 17 + 1
    assert all(m <= bucket_rows(m) <= max(m + 15, m * 9 // 8) for m in range(100_001))
    assert bucket_rows(0) == 0 and bucket_rows(1) == 16 and bucket_rows(1000) == 1024


class _Linear(nn.Linear):
    def forward(self, x):
        return linear(x, self.weight, self.bias)


def test_traced_graphs_hold_the_standard_product(products_engine):
    """A trace, for export or for this process alone (asr.tracing.tracing_in_process: the checkpoint backend's
    one-input graph, which must equal the module bit for bit), records F.linear even within a batch's scope."""
    products_engine(True)
    layer = _Linear(8, 5)
    with torch.no_grad(), batch_products():
        for graph in (torch.jit.trace(layer, torch.randn(30, 8)), _in_process(layer)):
            kinds = {n.kind() for n in graph.graph.nodes()}
            assert ONEDNN_OP not in kinds and "aten::linear" in kinds


def _in_process(layer):
    with tracing_in_process():
        return torch.jit.trace(layer, torch.randn(30, 8))


@pytest.mark.parametrize("choose, variable", [("onednn_products", "ASR_ONEDNN_PRODUCTS"),
                                               ("own_products", "ASR_OWN_PRODUCTS")])
def test_each_engine_is_chosen_by_the_cpu_or_by_its_variable(choose, variable, products_engine, monkeypatch):
    """oneDNN for a batch's products, the loops' own kernel for every step's, where MKL lacks the CPU's widest
    instructions (an AMD CPU with AVX-512), BLAS elsewhere, the same in every process on a machine; the variable
    (1 / 0) decides instead; the steps' choice reaches the compiled loops."""
    choose = getattr(native, choose)
    monkeypatch.delenv(variable, raising=False)
    native._products.clear()
    amd512 = torch.backends.cpu.get_cpu_capability() == "AVX512" and native._cpu_vendor() == "AuthenticAMD"
    assert choose() == amd512
    assert native._cpu_vendor() in ("GenuineIntel", "AuthenticAMD")                 # x86, read from /proc/cpuinfo
    for value, want in (("1", True), ("0", False)):
        monkeypatch.setenv(variable, value)
        native._products.clear()
        assert choose() == want
        if choose is native.own_products:                # the loops' flag (own_products returns the last)
            assert native.compiled_loop().own_products(want) == want



_DECODE_TWICE = """
import resource, sys, torch
import asr
from asr import native
torch.set_num_threads(1)
model = asr.load_model(sys.argv[1])
paths = sys.argv[2:]
for _ in range(3):                  # the heap grows to what a pass takes
    model.transcribe(paths)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
model.transcribe(paths)
print(native.keep_freed_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_a_batch_reuses_the_pages_the_last_one_freed_unless_the_user_set_malloc(an4_model, an4_test_utts):
    """asr.native.keep_freed_memory (load_model calls it): transcribing AN4 test in batches a fourth time faults
    hardly a page in (a 2-core AMD EPYC: 0-5 a pass, against 26,000-48,000 where glibc's moving thresholds did not
    settle, and 3 where they did); a user's own glibc malloc variables (here its first thresholds, held) leave
    glibc's settings alone, and the pages fault in again every pass."""
    import os
    import platform
    import subprocess
    import sys
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's mallopt: another C library keeps its own ways")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    paths = [str(u.input) for u in an4_test_utts]
    runs = {}
    # the user's: glibc's first thresholds held fixed (its own moving ones may or may not settle on a batch's sizes)
    users = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    for name, extra in (("kept", {}), ("users", users)):
        out = subprocess.run([sys.executable, "-c", _DECODE_TWICE, str(an4_model), *paths], env={**env, **extra},
                             capture_output=True, text=True, check=True).stdout.split()
        runs[name] = (out[-2] == "True", int(out[-1]))
    assert runs["kept"][0] and not runs["users"][0]
    assert runs["kept"][1] * 10 < runs["users"][1], runs


FRAMES_OP = "asr_rnn_loop::conv_frames_f32"


@pytest.mark.parametrize("frames, channels, kernel, pad, batch, bias", [
    (134, (640, 160), 3, 1, 1, True), (1, (640, 160), 3, 1, 1, True), (2, (33, 29), 5, 2, 3, False),
    (9, (16, 48), 4, 0, 2, True), (3, (8, 80), 5, 0, 1, True), (0, (8, 16), 3, 1, 2, True), (1, (8, 16), 3, 0, 1, True),
    (3, (8, 16), 3, 0, 2, True),
    (40, (7, 17), 1, 0, 1, True), (21, (24, 10), 3, 3, 1, False)])
def test_a_convolution_over_time_major_frames_is_conv1d_where_own_products(frames, channels, kernel, pad, batch,
                                                                          bias, products_engine):
    """conv_frames: a 1-D convolution of time-major float32 frames (the 2-D front end's conv2 in inference) through
    the loops' kernel tap by tap where `own_products`, no padded copy: F.conv1d's sums at every length (one output
    frame, padding wider than the kernel, none at all; too few frames for the kernel left to conv1d's own error),
    batches, widths of whole and part vectors; the weight it keeps follows the module's; None (the caller's
    convolution) where it does not apply."""
    if native.compiled_loop() is None:
        pytest.skip("the compiled loops could not be built here")
    native.own_products(True)
    ci, co = channels
    g = torch.Generator().manual_seed(frames * ci + kernel)
    conv = nn.Conv1d(ci, co, kernel, bias=bias)
    x = torch.randn(batch, frames, ci, generator=g).transpose(1, 2)              # (N, Ci, T) held time-major
    want = lambda: nn.functional.conv1d(x.double(), conv.weight.double(), None if conv.bias is None
                                        else conv.bias.double(), padding=pad).float()
    with torch.no_grad():
        if frames + 2 * pad < kernel:                                            # too short: conv1d's own error
            assert native.conv_frames(x, conv, pad, True) is None
            return
        for _ in range(2):                                                       # then after the weight changes
            got = []
            assert FRAMES_OP in _ops(lambda got=got: got.append(native.conv_frames(x, conv, pad, True)))
            y = got[0]
            assert y.shape == want().shape and y.transpose(1, 2).is_contiguous()
            torch.testing.assert_close(y, want(), atol=1e-4, rtol=1e-5)
            conv.weight.mul_(-0.5)
        assert native.conv_frames(x, conv, pad, False) is None                   # not time-major: the caller's word
        native.own_products(False)
        assert native.conv_frames(x, conv, pad, True) is None
        native.own_products(True)
        assert native.conv_frames(x.double(), conv.double(), pad, True) is None
    assert native.conv_frames(x, conv, pad, True) is None                               # autograd may need it


FRONT_OP = "asr_rnn_loop::front2d_f32"


@pytest.mark.parametrize("frames, features, channels, kernel, stride, pad, batch", [
    (97, 80, (32, 32), (3, 5), (2, 3), 2, 1), (97, 23, (4, 20), (3, 3), (2, 2), 1, 3),
    (5, 40, (40, 8), (5, 7), (3, 1), 3, 2), (1, 20, (16, 16), (3, 5), (2, 3), 2, 1),
    (6, 9, (17, 33), (3, 5), (1, 4), 0, 2), (2, 40, (32, 32), (3, 5), (2, 3), 0, 1)])
def test_the_two_dimensional_front_end_of_whole_inputs_is_the_modules(frames, features, channels, kernel, stride, pad,
                                                                      batch, products_engine):
    """front2d: conv1 (one input channel, any kernel, stride and padding), GELU, conv1f over frequency, GELU and the
    reshape to time-major frames channel by channel, in one pass of the loops' kernel where `own_products`: the
    module's sums at every length the convolutions take (one output frame; too few frames: None, conv2d's own
    error), channel counts of whole and part vectors, batches; None where it does not apply."""
    if native.compiled_loop() is None:
        pytest.skip("the compiled loops could not be built here")
    native.own_products(True)
    c1, c2 = channels
    torch.manual_seed(frames + features)
    conv1 = nn.Conv2d(1, c1, kernel, stride, padding=(kernel[0] // 2, 0))
    conv1f = nn.Conv2d(c1, c2, (3, 1), (2, 1), padding=(1, 0))
    x = torch.randn(batch, frames, features)                                     # (N, T, F)
    def want():
        y = nn.functional.conv2d(x.transpose(1, 2)[:, None].double(), conv1.weight.double(), conv1.bias.double(),
                                 conv1.stride, (conv1.padding[0], pad))
        y = nn.functional.conv2d(nn.functional.gelu(y), conv1f.weight.double(), conv1f.bias.double(), conv1f.stride,
                                 conv1f.padding)
        y = nn.functional.gelu(y)                                                # (N, C2, F2, T1)
        return y.permute(0, 3, 1, 2).reshape(batch, y.shape[3], -1).transpose(1, 2).float()
    with torch.no_grad():
        if frames + 2 * pad < kernel[1]:
            assert native.front2d(x, conv1, conv1f, pad) is None
            return
        got = []
        assert FRONT_OP in _ops(lambda: got.append(native.front2d(x, conv1, conv1f, pad)))
        assert got[0].shape == want().shape and got[0].transpose(1, 2).is_contiguous()
        torch.testing.assert_close(got[0], want(), atol=1e-5, rtol=1e-5)
        assert native.front2d(x, conv1, conv1f, pad, whole=False) is None        # a stream's piece
        native.own_products(False)
        assert native.front2d(x, conv1, conv1f, pad) is None
    assert native.front2d(x, conv1, conv1f, pad) is None                          # autograd may need it
