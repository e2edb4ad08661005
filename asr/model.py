"""The acoustic model: strided convolution front-end -> stacked (Bi)RNN -> linear -> CTC log-probs."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass(frozen=True)
class ModelConfig:
    n_features: int = 80
    vocab_size: int = 29          # characters + CTC blank
    conv_channels: int = 256
    conv_kernel: int = 5          # frames seen by the strided convolution (odd)
    cell: str = "gru"             # rnn | lstm | gru
    hidden: int = 256             # per direction
    layers: int = 3
    bidirectional: bool = True
    dropout: float = 0.1          # between recurrent layers and before the output layer
    lookahead: int = 0            # unidirectional models: output frames of future context (a lookahead convolution)

    def __post_init__(self):
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, not {self.cell!r}")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd, not {self.conv_kernel}")
        if self.lookahead and self.bidirectional:
            raise ValueError("lookahead is for unidirectional (streaming) models: set bidirectional: false")


TIME_STRIDE = 2  # the front-end halves the frame rate: 20 ms per output frame


class AcousticModel(nn.Module):
    """(N, T, F) features + (N,) frame counts -> (N, T', V) log-probabilities + (N,) output lengths.

    Output frames past an utterance's length are computed from padding and must be ignored. With
    `pack=True` (the default) the recurrent stack runs on packed sequences, so padding never reaches
    a valid frame and a batch gives each utterance exactly what it gets alone. `pack=False` lets the
    backward direction start in the padding: inexact, but on CPU its backward pass is 2.3x faster,
    and length-bucketed training batches carry only a few padded frames.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        pad = cfg.conv_kernel // 2
        self.conv1 = nn.Conv1d(cfg.n_features, cfg.conv_channels, cfg.conv_kernel, stride=TIME_STRIDE, padding=pad)
        self.conv2 = nn.Conv1d(cfg.conv_channels, cfg.conv_channels, 3, padding=1)
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

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        k, pad = self.cfg.conv_kernel, self.cfg.conv_kernel // 2
        return (lengths + 2 * pad - k) // TIME_STRIDE + 1

    def front_end(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, T, F) features -> (N, T', C) recurrent-stack input, (N,) output lengths, (N, 1, T') validity mask."""
        out_lengths = self.output_lengths(lengths)                        # (N,)
        x = x.transpose(1, 2)                                             # (N, F, T)
        x = nn.functional.gelu(self.conv1(x))                             # (N, C, T')
        mask = (torch.arange(x.shape[2], device=x.device)[None, :] < out_lengths[:, None])[:, None, :]
        x = nn.functional.gelu(self.conv2(x * mask)) * mask               # (N, C, T')
        return x.transpose(1, 2), out_lengths, mask                       # (N, T', C), (N,), (N, 1, T')

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, pack: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        x, out_lengths, mask = self.front_end(x, lengths)                 # (N, T', C), (N,), (N, 1, T')
        if pack:
            packed = pack_padded_sequence(x, out_lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, _ = self.rnn(packed)
            y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])  # (N, T', H*dirs)
        else:
            y, _ = self.rnn(x)                                            # (N, T', H*dirs)
        if self.lookahead is not None:
            y = self.look_ahead(y * mask.transpose(1, 2))                 # padding must not leak back in time
        logits = self.output(self.dropout(y))                             # (N, T', V)
        return logits.float().log_softmax(-1), out_lengths

    def look_ahead(self, y: torch.Tensor) -> torch.Tensor:
        """(N, T', H) recurrent outputs -> (N, T', H): frame t mixes frames t .. t + lookahead (zeros past the end)."""
        y = nn.functional.pad(y.transpose(1, 2), (0, self.cfg.lookahead))  # (N, H, T' + L)
        return self.lookahead(y).transpose(1, 2)                           # (N, T', H)


def init_forget_bias(lstm: nn.LSTM, value: float = 1.0) -> None:
    """Start LSTM forget gates open (Jozefowicz et al., 2015) so early gradients reach back in time."""
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_"):
                h = bias.shape[0] // 4          # gate order: input, forget, cell, output
                bias[h:2 * h].fill_(value if name.startswith("bias_ih") else 0.0)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
