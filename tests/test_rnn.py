"""asr.rnn against torch.nn: the same outputs, final states and gradients (inputs, initial states, every weight)
for each cell, one and two directions, one and two layers, padded and packed (unequal lengths), through
both their compiled loops (asr/rnn_loop.cpp) and the Python ones."""
import itertools
import shutil

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr import rnn as fast
from asr.model import AcousticModel, ModelConfig
from asr.native import compiled_loop


def _nn(module, x, h0, lengths):
    if lengths is None:
        return module(x, h0)
    y, h = module(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), h0)
    return pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])[0], h


def _results(run, module, x, h0, lengths):
    """Outputs, final states and every gradient of a loss that weighs each of them differently."""
    module.zero_grad()
    x = x.detach().requires_grad_()
    h0 = tuple(h.detach().requires_grad_() for h in h0)
    y, h = run(module, x, h0 if len(h0) == 2 else h0[0], lengths)
    h = h if isinstance(h, tuple) else (h,)
    loss = (y * torch.arange(y.numel()).view_as(y).sin()).sum() + sum((a * a.cos()).sum() for a in h)
    loss.backward()
    return [y, *h, x.grad, *(a.grad for a in h0), *(p.grad for p in module.parameters())]


@pytest.fixture
def use_loop():
    """Sets the time loops, compiled (asr/rnn_loop.cpp) or Python, for one test; restored after."""
    def use(which):
        if which == "compiled" and compiled_loop() is None:
            pytest.fail("the compiled loop did not build (see test_the_compiled_loop_builds_here)")
        compiled_loop(which == "compiled")
    yield use
    compiled_loop(True)


def test_the_compiled_loop_builds_here():
    """On an x86 CPU with AVX2 and a C++ compiler (every machine this suite runs on) the loops are compiled, for
    the widest vectors torch found in the CPU: were it not, asr.rnn would quietly run its slower Python loop."""
    capability = torch.backends.cpu.get_cpu_capability()
    assert capability in ("AVX2", "AVX512") and shutil.which("c++")
    assert compiled_loop() is not None
    # for this CPU's vector width (AVX-512's gates: 1.3x AVX2's in a decoding batch's GRU loop on a Xeon)
    assert any(lib.endswith(f"asr_rnn_loop_{capability.lower()}.so") for lib in torch.ops.loaded_libraries)


def test_the_compiled_loop_finds_torchs_sgemm():
    """Each step's product calls the BLAS sgemm torch's CPU products use (MKL's in the x86 wheels) on the loop's
    pointers (faster than at::mm_out's views and dispatch: recipes/an4/RESULTS.md); where it is missing the loop falls
    back to at::mm_out, silently, so this says it is found wherever torch has MKL."""
    if not torch.backends.mkl.is_available():
        pytest.skip("torch without MKL: the loops call at::mm_out")
    assert compiled_loop().blas()


@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM, nn.RNN])
def test_inference_keeps_the_stacked_weights_until_a_parameter_changes(cell):
    """Without autograd asr.rnn keeps each layer's stacked weights on the module: a weight written in place (an
    optimiser step, load_state_dict) or replaced by a new tensor is seen by the next call, as torch.nn sees it."""
    torch.manual_seed(0)
    rnn = cell(12, 10, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 7, 12)
    with torch.no_grad():
        first = fast.run(rnn, x)[0]
        assert torch.equal(fast.run(rnn, x)[0], first)                 # kept: the same result
        rnn.weight_hh_l1_reverse.mul_(0.5)                              # written in place
        torch.testing.assert_close(fast.run(rnn, x)[0], rnn(x)[0])
        new = torch.randn_like(rnn.weight_ih_l0)                       # replaced, by a tensor of the same version
        while new._version < rnn.weight_ih_l0._version:
            new.add_(0)
        rnn.weight_ih_l0 = nn.Parameter(new)
        torch.testing.assert_close(fast.run(rnn, x)[0], rnn(x)[0])
        assert not torch.allclose(fast.run(rnn, x)[0], first)
    y = fast.run(rnn, x.requires_grad_())[0]                            # with autograd: nothing kept, gradients flow
    y.sum().backward()
    assert rnn.weight_ih_l0.grad is not None and rnn.weight_hh_l1_reverse.grad is not None
    # a fused optimiser step writes in place without counting a version: training between two inference passes
    # (the dev pass of every epoch) must still be seen
    with torch.no_grad():
        before = fast.run(rnn, x)[0]
    y = fast.run(rnn, x)[0]
    y.sum().backward()
    version = rnn.weight_ih_l0._version
    torch.optim.AdamW(rnn.parameters(), lr=0.1, fused=True).step()
    assert rnn.weight_ih_l0._version == version                         # (what makes the versions blind to it)
    with torch.no_grad():
        torch.testing.assert_close(fast.run(rnn, x)[0], rnn(x)[0])
        assert not torch.allclose(fast.run(rnn, x)[0], before)


@pytest.mark.parametrize("cell,bidirectional,layers,packed,threads,loop",
                         [(c, b, la, p, 2, "python") for c, b, la, p in itertools.product(
                             [nn.GRU, nn.LSTM, nn.RNN], [True, False], [1, 2], [False, True])]
                         + [(c, b, la, p, t, "compiled") for c, b, la, p, t in itertools.product(
                             [nn.GRU, nn.LSTM, nn.RNN], [True, False], [1, 2], [False, True], [1, 2])])
def test_same_outputs_states_and_gradients_as_torch_nn(cell, bidirectional, layers, packed, threads, loop, use_loop):
    """(With two threads a unidirectional layer's compiled loop splits the batch's rows between them; with one, a
    bidirectional one runs its directions in turn.)"""
    use_loop(loop)
    torch.manual_seed(layers)
    torch.set_num_threads(threads)
    module = cell(7, 5, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    x = torch.randn(4, 9, 7)
    states = layers * (2 if bidirectional else 1)
    h0 = tuple(torch.randn(states, 4, 5) for _ in range(2 if cell is nn.LSTM else 1))
    lengths = torch.tensor([9, 3, 6, 1]) if packed else None
    ours = _results(fast.run, module, x, h0, lengths)
    theirs = _results(_nn, module, x, h0, lengths)
    assert len(ours) == len(theirs) and all(g is not None for g in ours)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)
    if packed:                                     # the packed semantics, not the padded ones
        assert not torch.allclose(theirs[0], _results(_nn, module, x, h0, None)[0])


@pytest.mark.parametrize("onednn", [False, True])
@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM, nn.RNN])
def test_either_products_engine_gives_torch_nns_outputs_and_gradients(cell, onednn, products_engine):
    """The input projections and their input gradients through oneDNN or BLAS (asr.native.linear; a packed batch
    decoding in float32 runs the compiled loops where oneDNN projects: AcousticModel.head)."""
    from asr import native
    products_engine(onednn)
    torch.manual_seed(1)
    module = cell(40, 32, num_layers=2, batch_first=True, bidirectional=True)
    x, lengths = torch.randn(6, 30, 40), torch.tensor([30, 4, 17, 30, 1, 22])
    h0 = tuple(torch.randn(4, 6, 32) for _ in range(2 if cell is nn.LSTM else 1))
    with native.batch_products():                  # as a training step runs it
        ours = _results(fast.run, module, x, h0, lengths)
    for a, b in zip(ours, _results(_nn, module, x, h0, lengths)):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    model = AcousticModel(ModelConfig(n_features=20, conv_channels=16, hidden=16, layers=2, dropout=0.0,
                                      cell=cell.__name__.lower())).eval()
    frames = torch.tensor([60, 41, 13])
    feats = torch.randn(3, 60, 20) * (torch.arange(60) < frames[:, None])[..., None]   # (3, 60, 20), 0 past
    with torch.no_grad(), native.batch_products():   # as a decoding batch runs it
        batch, _ = model(feats, frames, pack=True)
        for i, n in enumerate(frames.tolist()):
            alone, m = model(feats[i:i + 1, :n], frames[i:i + 1])
            torch.testing.assert_close(batch[i:i + 1, :m[0]], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("own", [False, True])
@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM, nn.RNN])
def test_steps_of_many_rows_through_either_kernel_give_torch_nns_results(cell, own, products_engine):
    """Steps of more than 16 rows (a decoding batch's) take torch's sgemm or the loops' own kernel
    (asr.native.own_products); the rows shrink as inputs end, down to the few-row steps, forward and back."""
    from asr import native
    native.own_products(own)
    torch.manual_seed(2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                       # one direction a unit: every row of the batch in each step
    module = cell(24, 40, num_layers=2, batch_first=True, bidirectional=True)
    lengths = torch.randint(1, 25, (40,))
    lengths[:3] = 25
    x, h0 = torch.randn(40, 25, 24), tuple(torch.randn(4, 40, 40) for _ in range(2 if cell is nn.LSTM else 1))
    try:
        ours, theirs = _results(fast.run, module, x, h0, lengths), _results(_nn, module, x, h0, lengths)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("own", [False, True])
@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM, nn.RNN])
def test_inference_through_either_kernel_gives_torch_nns_results(cell, own, products_engine):
    """Without autograd asr.rnn keeps its weights, the input weights stored transposed and the recurrent ones in the
    loops' panels where the loops' own kernel takes one input's projections and every step (asr.native.own_products;
    gate widths that fill a panel and that leave part of one): one input and a packed batch, two layers, both
    directions, give torch.nn's outputs and final states, and so after the choice changes."""
    from asr import native
    if compiled_loop() is None:
        pytest.skip("the compiled loops could not be built here")
    native.own_products(own)
    torch.manual_seed(3)
    module = cell(24, 40, num_layers=2, batch_first=True, bidirectional=True).eval()
    lengths = torch.tensor([31, 7, 19, 31, 2])
    x, h0 = torch.randn(5, 31, 24), tuple(torch.randn(4, 5, 40) for _ in range(2 if cell is nn.LSTM else 1))
    with torch.no_grad():
        for _ in range(2):                              # kept as this choice stores them, then the other's way
            for rows, lens in ((slice(0, 1), None), (slice(None), lengths)):
                h = tuple(a[:, rows] for a in h0)
                ours = fast.run(module, x[rows], h if len(h) == 2 else h[0], lens)
                theirs = _nn(module, x[rows], h if len(h) == 2 else h[0], lens)
                for a, b in zip(_flat(ours), _flat(theirs)):
                    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
            native.own_products(not own)


def _flat(result):
    y, h = result
    return [y, *(h if isinstance(h, tuple) else (h,))]


def test_the_model_trains_and_decodes_the_same_through_either_stack():
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(n_features=20, conv_channels=16, hidden=16, layers=2, front_end="conv2d",
                                      conv2d_channels=4, dropout=0.0))
    x, lengths = torch.randn(3, 60, 20), torch.tensor([60, 41, 13])
    results = []
    for use_fast in (True, False):
        model.fast_rnn = use_fast
        model.zero_grad()
        for pack in (False, True):
            log_probs, _ = model(x, lengths, pack=pack)
            log_probs[:, :4].sum().backward()
        results.append([log_probs.detach()] + [p.grad.clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cell", [nn.GRU, nn.LSTM, nn.RNN])
def test_inference_through_the_compiled_loop_is_torch_nn_packed(cell):
    """Without gradients the compiled loops write only the states (not what a backward pass reads) and, rows
    sorted longest first, run each step over the rows still inside their lengths: a stream's or a file's step
    through asr.rnn, compared with torch.nn's packed sequences on a batch in unsorted order."""
    assert compiled_loop() is not None
    torch.manual_seed(0)
    module = cell(7, 5, num_layers=2, batch_first=True, bidirectional=True)
    x, lengths = torch.randn(5, 9, 7), torch.tensor([4, 9, 1, 6, 9])
    h0 = tuple(torch.randn(4, 5, 5) for _ in range(2 if cell is nn.LSTM else 1))
    with torch.no_grad():
        ours = fast.run(module, x, h0 if cell is nn.LSTM else h0[0], lengths)
        theirs = _nn(module, x, h0 if cell is nn.LSTM else h0[0], lengths)
    for a, b in zip([ours[0], *(ours[1] if cell is nn.LSTM else [ours[1]])],
                    [theirs[0], *(theirs[1] if cell is nn.LSTM else [theirs[1]])]):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("kernel", ["pairs", "mkl"])
@pytest.mark.parametrize("cell, sizes", [(nn.GRU, (40, 32)), (nn.LSTM, (40, 32)), (nn.RNN, (40, 32)),
                                         (nn.GRU, (41, 33))])            # odd: a padded pair, a part vector
def test_inference_products_in_bfloat16_are_torch_nns_to_bfloat16s_precision(cell, sizes, kernel, monkeypatch):
    """products_in(bfloat16) (precision "bf16"): the input projections and each step's product on bfloat16
    operands with float32 accumulation, by either kernel (the loops' own AVX-512 BF16 one, or MKL's
    gemm_bf16bf16f32): torch.nn's packed outputs and final states to within bfloat16's rounding, visibly not
    float32's (it is in use); a call with autograd, and float32 again, float32's exactly."""
    ops = compiled_loop()
    if ops is None or not (ops.bf16_pairs() if kernel == "pairs" else ops.blas_bf16()):
        pytest.skip(f"no {kernel} bfloat16 product here: products_in keeps float32")
    monkeypatch.setattr(fast.stack, "_bf16_pairs", lambda: kernel == "pairs")
    torch.manual_seed(0)
    module = cell(*sizes, num_layers=2, batch_first=True, bidirectional=True)
    x, lengths = torch.randn(6, 30, sizes[0]), torch.tensor([17, 30, 1, 22, 30, 9])
    h0 = tuple(torch.randn(4, 6, sizes[1]) for _ in range(2 if cell is nn.LSTM else 1))
    h0 = h0 if cell is nn.LSTM else h0[0]
    flat = lambda r: [r[0], *(r[1] if isinstance(r[1], tuple) else [r[1]])]
    with torch.no_grad():
        theirs = flat(_nn(module, x, h0, lengths))
        assert fast.products(module) == torch.float32 and fast.products_in(module, torch.bfloat16)
        ours = flat(fast.run(module, x, h0, lengths))
    assert fast.products(module) == torch.bfloat16
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)
        assert (a - b).abs().max() > 1e-5                               # rounded: bfloat16 ran
    trained = fast.run(module, x.requires_grad_(), h0, lengths)[0]      # autograd (training): float32 products
    torch.testing.assert_close(trained, theirs[0], atol=2e-6, rtol=1e-5)
    with torch.no_grad():
        assert fast.products_in(module, torch.float32)
        torch.testing.assert_close(fast.run(module, x, h0, lengths)[0], theirs[0], atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("cell, sizes", [(nn.GRU, (41, 33)), (nn.LSTM, (40, 32)), (nn.RNN, (160, 160))])
def test_the_two_bfloat16_kernels_compute_the_same_maths(cell, sizes, monkeypatch):
    """The loops' own AVX-512 BF16 kernel (pairs) and MKL's gemm_bf16bf16f32 round the same operands and accumulate
    in float32: most outputs alike to float32's precision, the rest where the order of the sums tipped a state's
    rounding to bfloat16 (and the steps after it), while hardly any output is float32's."""
    ops = compiled_loop()
    if ops is None or not (ops.bf16_pairs() and ops.blas_bf16()):
        pytest.skip("needs both bfloat16 kernels: AVX-512 BF16 and MKL's product")
    torch.manual_seed(0)
    module = cell(*sizes, num_layers=2, batch_first=True, bidirectional=True)
    x, lengths = torch.randn(6, 30, sizes[0]), torch.tensor([17, 30, 1, 22, 30, 9])
    outs = {}
    with torch.no_grad():
        fp32 = fast.run(module, x, None, lengths)[0]
        for kernel in ("pairs", "mkl"):
            monkeypatch.setattr(fast.stack, "_bf16_pairs", lambda k=kernel: k == "pairs")
            assert fast.products_in(module, torch.bfloat16)
            outs[kernel] = fast.run(module, x, None, lengths)[0]
    valid = torch.arange(30)[None, :] < lengths[:, None]                # (N, T): outputs past a length are zeros
    same = lambda a, b: ((a - b).abs()[valid] < 1e-5).float().mean()   # the share of outputs alike to 1e-5
    assert same(outs["pairs"], outs["mkl"]) > 0.5 and same(outs["mkl"], fp32) < 0.1
    torch.testing.assert_close(outs["pairs"], outs["mkl"], atol=5e-3, rtol=0)


def test_where_it_does_not_apply_the_module_runs():
    x = torch.randn(1, 5, 7)
    assert fast.supports(nn.GRU(7, 5, batch_first=True), x)
    assert not fast.supports(nn.GRU(7, 5, batch_first=True, bias=False), x)
    assert not fast.supports(nn.RNN(7, 5, nonlinearity="relu"), x)
    assert not fast.supports(nn.LSTM(7, 5, proj_size=3), x)
    assert not fast.supports(nn.GRU(7, 5), x.double())
    quantized = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.GRU(7, 5)), {nn.GRU}, dtype=torch.qint8)[0]
    assert not fast.supports(quantized, x)


def test_dropout_zeroes_a_p_share_and_scales_the_rest():
    torch.manual_seed(0)
    x = torch.rand(64, 100, 160) + 0.5                                  # no zeros of its own
    for p in (0.1, 0.2, 0.5):
        y = fast.dropout(x.requires_grad_(), p)
        kept = y != 0
        assert abs(kept.float().mean().item() - (1 - p)) < 0.003        # 1 M elements: 3 sigma is about 0.0015
        torch.testing.assert_close(y[kept], x[kept] / (1 - p))
        y.sum().backward()
        torch.testing.assert_close(x.grad, kept.float() / (1 - p))
        x.grad = None
    assert fast.dropout(x, 0.0) is x and fast.dropout(x, 0.3, training=False) is x
    torch.manual_seed(1)
    a = fast.dropout(x, 0.2)
    torch.manual_seed(1)
    assert torch.equal(a, fast.dropout(x, 0.2))                         # seeded: a resumed run draws the same masks
