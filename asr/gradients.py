"""How far back in time gradients reach through a model's recurrent stack (the vanishing-gradient story).

For an utterance of T' frames, the recurrent stack's last forward-direction output y_T' is
differentiated with respect to its input x_t at every earlier frame. The norm of that Jacobian,
|| d y_T' / d x_t ||_F, estimated with random projections, is what a loss at frame T' can send
back k = T' - t frames: a vanilla RNN's shrinks geometrically with k, gated cells (LSTM, GRU)
keep it. In a bidirectional stack the path still has to cross k recurrent steps (of the last
layer's forward direction, or of lower layers), so the measure applies to it as well.

    reach = gradient_reach(model, extractor, waves, max_distance=100)   # (max_distance + 1,) log10 norms
"""
from __future__ import annotations

import torch

from .features import FeatureExtractor
from .model import AcousticModel, eval_mode


def gradient_reach(model: AcousticModel, extractor: FeatureExtractor, waves: list[torch.Tensor],
                   max_distance: int = 100, projections: int = 4, seed: int = 0) -> torch.Tensor:
    """Mean over `waves` (1-D float tensors at the extractor's rate) of log10 || d y_T' / d x_{T'-k} ||_F
    for k = 0 .. max_distance (NaN where no utterance is that long) -> (max_distance + 1,).

    The model runs in eval mode (no dropout), one utterance at a time, unpacked (exact for a single
    utterance). The Frobenius norm is estimated as the root mean square of || J^T v || over
    `projections` random Gaussian vectors v (E ||J^T v||^2 = ||J||_F^2).
    """
    generator = torch.Generator().manual_seed(seed)
    hidden = model.cfg.hidden
    total = torch.zeros(max_distance + 1, dtype=torch.float64)
    count = torch.zeros(max_distance + 1, dtype=torch.float64)
    with eval_mode(model):
        for wave in waves:
            with torch.no_grad():
                feats, frames = extractor(wave[None], torch.tensor([wave.shape[0]]))   # (1, T, F), (1,)
                x, out_lengths, _ = model.front_end(feats, frames)                    # (1, T', C)
            x = x[:, : int(out_lengths[0])].detach().requires_grad_(True)              # (1, T', C)
            y, _ = model.rnn(x)                                                        # (1, T', H * dirs)
            last = y[0, -1, :hidden]                                                   # (H,) forward direction
            squares = torch.zeros(x.shape[1], dtype=torch.float64)                     # (T',)
            for i in range(projections):
                v = torch.randn(hidden, generator=generator)
                (grad,) = torch.autograd.grad(last @ v, x, retain_graph=i < projections - 1)  # (1, T', C)
                squares += grad[0].double().pow(2).sum(-1)
            norms = (squares / projections).sqrt().flip(0)[: max_distance + 1]         # (<= max_distance + 1,) by k
            n = norms.shape[0]
            total[:n] += norms.clamp_min(1e-30).log10()
            count[:n] += 1
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))
