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


def test_padding_does_not_leak_into_valid_frames():
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(n_features=20, conv_channels=16, hidden=16, layers=2)).eval()
    lengths = torch.tensor([60, 41, 13])
    x = torch.randn(3, 60, 20) * (torch.arange(60)[None, :, None] < lengths[:, None, None])
    batch, out_lengths = model(x, lengths)
    for i, n in enumerate(lengths):
        alone, m = model(x[i:i + 1, :n], n[None])
        torch.testing.assert_close(batch[i, :m.item()], alone[0], atol=1e-5, rtol=1e-4)
    # without packing the backward direction starts in the padding: the difference is real
    unpacked, _ = model(x, lengths, pack=False)
    assert not torch.allclose(unpacked[2, :7], batch[2, :7], atol=1e-4)


def test_config_validation_and_size():
    with pytest.raises(ValueError, match="cell must be one of"):
        ModelConfig(cell="transformer")
    with pytest.raises(ValueError, match="odd"):
        ModelConfig(conv_kernel=4)
    assert 3e6 < count_parameters(AcousticModel(ModelConfig())) < 4e6
