import pytest
import torch

from asr.model import AcousticModel, ModelConfig, count_parameters


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_shapes_and_lengths(cell, bidirectional):
    cfg = ModelConfig(n_features=40, vocab_size=29, conv_channels=32, cell=cell, hidden=24, layers=2,
                      bidirectional=bidirectional, dropout=0.2)
    model = AcousticModel(cfg).eval()
    x = torch.randn(3, 101, 40)
    lengths = torch.tensor([101, 50, 7])
    log_probs, out_lengths = model(x, lengths)
    assert log_probs.shape == (3, 51, 29)                      # time stride 2
    assert out_lengths.tolist() == [51, 25, 4]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 51), atol=1e-5)
    assert model.rnn.num_layers == 2 and model.rnn.bidirectional == bidirectional  # one multi-layer module


@pytest.mark.parametrize("front_end", ["conv1d", "conv2d"])
def test_padding_does_not_leak_into_valid_frames(front_end):
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(n_features=20, conv_channels=16, hidden=16, layers=2, front_end=front_end,
                                      conv2d_channels=4)).eval()
    lengths = torch.tensor([60, 41, 13])
    x = torch.randn(3, 60, 20) * (torch.arange(60)[None, :, None] < lengths[:, None, None])
    batch, out_lengths = model(x, lengths)
    for i, n in enumerate(lengths):
        alone, m = model(x[i:i + 1, :n], n[None])
        torch.testing.assert_close(batch[i, :m.item()], alone[0], atol=1e-5, rtol=1e-4)
    # without packing the backward direction starts in the padding: the difference is real
    unpacked, _ = model(x, lengths, pack=False)
    assert not torch.allclose(unpacked[2, :7], batch[2, :7], atol=1e-4)


@pytest.mark.parametrize("front_end", ["conv1d", "conv2d"])
@pytest.mark.parametrize("kernel, stride", [(5, 3), (3, 2), (7, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_whole_inputs_padded_in_the_convolutions_give_the_steps_frames(front_end, kernel, stride, dtype):
    """Inference over whole inputs zero-pads each convolution's input within the convolution (AcousticModel._front's
    `whole`); its frames are conv_step's, which training and streaming take, for inputs down to one frame, with the
    1-D convolution in float32 or bfloat16 (precision "bf16")."""
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(n_features=20, conv_channels=16, hidden=16, layers=2, front_end=front_end,
                                      conv2d_channels=4, conv_kernel=kernel, time_stride=stride)).eval()
    model.conv2.to(dtype)
    lengths = torch.tensor([37, 13, 3, 1])
    x = torch.randn(4, 37, 20) * (torch.arange(37)[None, :, None] < lengths[:, None, None])
    out_lengths = model.output_lengths(lengths)
    with torch.no_grad():
        padded, _, mask = model.front_end(x, lengths)                                    # (N, t2, C): whole
        stepped, _, _, _ = model._front(x, model.initial_state(4), True, out_lengths)    # conv_step's
        log_probs, n = model(x, lengths)
        alone, m = model(x[3:, :1], lengths[3:])                                         # one frame, alone
    with torch.enable_grad():                                                            # training's: conv_step
        trained, _ = model(x, lengths)
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.05, rtol=0.02)
    assert padded.shape == stepped.shape and mask.shape == (4, 1, padded.shape[1])
    torch.testing.assert_close(padded, stepped, **tolerance)
    torch.testing.assert_close(log_probs, trained.detach(), **tolerance)
    assert n[3] == m[0] >= 1 and alone.shape[1] == m[0]
    torch.testing.assert_close(alone[0], log_probs[3, :m[0]], **tolerance)



def test_inference_between_fused_optimiser_steps_sees_every_step(products_engine):
    """The operands inference keeps of the model's weights (the loops' kernels': the 2-D convolutions', conv2's tap
    by tap, the output layer stored transposed, the stack's layers) follow a training step whose fused AdamW writes
    in place without counting a version (the dev pass between epochs): the next pass equals torch's own operations
    on the new weights."""
    from asr import native
    if native.compiled_loop() is None:
        pytest.skip("the compiled loops could not be built here")
    native.own_products(True)
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(n_features=20, conv_channels=16, hidden=16, layers=2, front_end="conv2d",
                                      conv2d_channels=4))
    lengths = torch.tensor([37, 37])
    x = torch.randn(2, 37, 20)
    def passed():
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            y = model.eval()(x, lengths)[0]
        return y, {e.name for e in prof.events()}
    before, ops = passed()
    assert {"asr_rnn_loop::front2d_f32", "asr_rnn_loop::conv_frames_f32", "asr_rnn_loop::linear_f32"} <= ops
    model.train()(x, lengths)[0].sum().backward()
    version = model.conv2.weight._version
    torch.optim.AdamW(model.parameters(), lr=0.1, fused=True).step()
    assert model.conv2.weight._version == version                      # (what makes the versions blind to it)
    got, _ = passed()
    native.own_products(False)
    want, ops = passed()
    assert "asr_rnn_loop::conv_frames_f32" not in ops
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, before, atol=1e-3)


def test_config_validation_and_size():
    with pytest.raises(ValueError, match="cell must be one of"):
        ModelConfig(cell="transformer")
    with pytest.raises(ValueError, match="odd"):
        ModelConfig(conv_kernel=4)
    with pytest.raises(ValueError, match="front_end must be one of conv1d, conv2d"):
        ModelConfig(front_end="conv3d")
    assert 3e6 < count_parameters(AcousticModel(ModelConfig())) < 4e6



@pytest.mark.parametrize("n_features", [80, 81])
def test_the_2d_front_end_quarters_the_bins_and_keeps_the_frame_rate(n_features):
    """conv2d: the two time-frequency convolutions quarter the bins (rounding up) and stride time as conv1d
    does, so output lengths (and with them CTC, streaming and the frame rate) are the same."""
    torch.manual_seed(0)
    kw = dict(n_features=n_features, conv_channels=32, hidden=24, layers=1, time_stride=3)
    model = AcousticModel(ModelConfig(**kw, front_end="conv2d", conv2d_channels=4)).eval()
    assert model.cfg.conv2d_bins == -(-n_features // 4) and model.conv2.in_channels == 4 * model.cfg.conv2d_bins
    assert model.conv1.weight.shape == (4, 1, 3, 5)                     # (C2, 1, frequency, time)
    x, lengths = torch.randn(2, 100, n_features), torch.tensor([100, 61])
    log_probs, out_lengths = model(x, lengths)
    assert log_probs.shape == (2, 34, 29) and out_lengths.tolist() == [34, 21]
    _, plain_lengths = AcousticModel(ModelConfig(**kw)).eval()(x, lengths)
    assert torch.equal(out_lengths, plain_lengths)


@pytest.mark.parametrize("stride,padding,dilation", [((2, 3), (1, 0), (1, 1)), ((1, 2), (2, 1), (2, 1)),
                                                     ((3, 1), (0, 2), (1, 2))])
def test_the_one_channel_convolution_has_torchs_gradients(stride, padding, dilation):
    """Training on a CPU, a 2-D convolution of one input channel (conv2d's first) takes its weight gradient from
    asr.model's own backward pass: equal to torch's for the weight, the bias and (when asked) the input."""
    from asr.model import _conv
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 6, (3, 5), stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(4, 1, 23, 41)
    w = torch.randn_like(conv(x))                        # a loss that weighs every output differently
    grads = []
    for f in (conv, lambda v: _conv(conv, v)):
        conv.zero_grad()
        xi = x.clone().requires_grad_()
        y = f(xi)
        (y * w).sum().backward()
        grads.append((y, conv.weight.grad.clone(), conv.bias.grad.clone(), xi.grad))
    assert type(_conv(conv, x).grad_fn).__name__ == "_OneChannelConv2dBackward"   # the path under test ran
    for ours, theirs in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
