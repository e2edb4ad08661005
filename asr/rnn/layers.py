"""asr.rnn's layers: one recurrent layer, both directions, as an autograd.Function each (GRULayer, LSTMLayer,
RNNLayer), with the backward pass written out, and the helpers they share (the input projection of all steps,
the backward direction's reordering, the outputs and their gradients). The loops themselves run compiled
(asr/rnn_loop.cpp, through asr.native) where it could be built, else in Python here (the same maths). The
overview, and `run`, which calls these layer by layer: asr/rnn/stack.py.
"""
from __future__ import annotations

import torch

from ..native import compiled_loop, linear


def reorder(a: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """(T, N, ...) in the backward direction's time order (its own inverse): whole rows taken by index (a gather
    of every element costs 5x more)."""
    if order is None:
        return a.flip(0)
    return a.reshape(order.shape[0], -1).index_select(0, order).view(a.shape)


def _project(x: torch.Tensor, w_ih: torch.Tensor, bias: torch.Tensor, order):
    """(T, N, C) inputs -> (D, T, N, gH) input projections plus `bias`, each direction in its own time order (one
    product per direction, written in place), and the inputs in those orders."""
    t, n, c = x.shape
    d, g = bias.shape                                                   # w_ih: (D, gH, C), or bfloat16 pairs
    xs = [x] + ([reorder(x, order)] if d == 2 else [])
    out = x.new_empty(d, t, n, g)
    for k in range(d):
        if w_ih.dtype == torch.bfloat16:                                # precision "bf16" (asr.rnn.stack.products_in)
            compiled_loop().linear_bf16(out[k].view(t * n, g), bias[k], xs[k].reshape(t * n, c), w_ih[k])
        else:
            linear(xs[k].reshape(t * n, c), w_ih[k], bias[k], out=out[k].view(t * n, g))
    return out, xs


def _outputs(hs: torch.Tensor, order, mask) -> torch.Tensor:
    """(T, D, N, H) states in each direction's order -> (T, N, D * H) outputs in time order, zero past a length
    (masked in place once in time order: a sequence's steps are reversed within its length, so the mask is the
    same in either direction's order)."""
    y = hs[:, 0].clone() if hs.shape[1] == 1 else torch.cat([hs[:, 0], reorder(hs[:, 1], order)], -1)
    return y if mask is None else y.mul_(mask[:, 0])


def _output_grads(dy: torch.Tensor | None, shape, order, mask, stack: int = 1) -> torch.Tensor:
    """(T, N, D * H) output gradients -> (T, D, N, H) (`stack` 0: (D, T, N, H)), each direction in its own order,
    zero past a length."""
    t, d, n, h = shape
    if dy is None:
        return torch.zeros((d, t, n, h) if stack == 0 else shape)
    parts = [dy[..., :h]] + ([reorder(dy[..., h:], order)] if d == 2 else [])
    if mask is not None:
        parts = [p * mask[:, 0] for p in parts]                         # (T, N, H) each
    return torch.stack(parts, stack)


def _input_grads(dg: torch.Tensor, xs: list[torch.Tensor], w_ih: torch.Tensor, order):
    """(T, D, N, gH) gradients of the input projections (each direction in its own order) -> those of the
    (T, N, C) inputs, of w_ih (D, gH, C) and of the input bias (D, gH)."""
    t, d, n, g = dg.shape
    dx, dw = None, []
    for k in range(d):
        dgk = dg[:, k].reshape(t * n, g)
        part = linear(dgk, w_ih[k].t()).view(t, n, -1)                  # (T, N, C) in direction k's order
        part = part if k == 0 else reorder(part, order)
        dx = part if dx is None else dx.add_(part)
        dw.append(dgk.t() @ xs[k].reshape(t * n, -1))                   # (gH, C)
    return dx, torch.stack(dw), dg.sum((0, 2))


def _recurrent_weight_grad(dgh: torch.Tensor, hs: torch.Tensor) -> torch.Tensor:
    """sum over steps of dgh[t]^T @ h[t-1]: (T, D, N, gH), (T, D, N, H) -> (D, gH, H), one product."""
    t, d, n, g = dgh.shape
    return torch.bmm(dgh.permute(1, 3, 0, 2).reshape(d, g, t * n), hs.transpose(0, 1).reshape(d, t * n, -1))


def _steps(a: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(T, ...) -> its T per-step views, made in one call (a loop's per-step indexing costs as much as its maths)."""
    return a.unbind(0)


class NoGraph:
    """The ctx of a layer's forward called as a plain function where no backward pass can follow (inference): what
    the forward keeps for one is dropped."""

    def save_for_backward(self, *tensors: torch.Tensor) -> None:
        pass


class GRULayer(torch.autograd.Function):
    """One GRU layer, both directions: r, z = sigmoid(Wi x + bi + Wh h + bh), n = tanh(Wi_n x + bi_n + r * (Wh_n h
    + bh_n)), h' = (1 - z) n + z h = lerp(n, h, z)."""

    @staticmethod
    def forward(ctx, x, h0, order, mask, active, saved, w_hh_t, w_ih, w_hh, b_ih, b_hh):
        t, n, _ = x.shape
        d, h = w_hh.shape[0], w_hh.shape[2]
        bias = torch.cat([b_ih[:, :2 * h] + b_hh[:, :2 * h], b_ih[:, 2 * h:]], 1)   # r, z take both biases here
        g, xs = _project(x, w_ih, bias, order)                          # (D, T, N, 3H)
        if mask is not None and not active.numel():                     # past a length: z = 1, h' = h exactly
            g[..., h:2 * h].masked_fill_(~mask.transpose(0, 1), float("inf"))
        ctx.order, ctx.mask = order, mask
        if (ops := compiled_loop()) is not None:
            hs, ghn, rz, nn_ = ops.gru_forward(g, w_hh_t, b_hh[:, 2 * h:].contiguous(), h0.contiguous(), active, saved)
            ctx.save_for_backward(w_ih, w_hh, hs, ghn, rz, nn_, *xs)   # direction-major: (D, T + 1, N, H) ...
            ctx.ops, ctx.active = ops, active
            return _outputs(hs[:, 1:].transpose(0, 1), order, mask), hs[:, t].clone()
        ctx.ops = None
        b_hn = b_hh[:, None, 2 * h:]                                     # (D, 1, H): inside r * (.)
        hs = x.new_empty(t + 1, d, n, h)                                # hs[t]: the state before step t
        hs[0] = h0
        gh = x.new_empty(t, d, n, 3 * h)                                # Wh h, + bh_n in the n part
        rz = x.new_empty(t, d, n, 2 * h)
        nn_ = x.new_empty(t, d, n, h)
        g_rz, g_n = _steps(g[..., :2 * h].transpose(0, 1)), _steps(g[..., 2 * h:].transpose(0, 1))
        hs_, gh_, gh_rz, gh_n = _steps(hs), _steps(gh), _steps(gh[..., :2 * h]), _steps(gh[..., 2 * h:])
        rz_, r_, z_, n_ = _steps(rz), _steps(rz[..., :h]), _steps(rz[..., h:]), _steps(nn_)
        for s in range(t):
            torch.bmm(hs_[s], w_hh_t, out=gh_[s])
            torch.add(g_rz[s], gh_rz[s], out=rz_[s]).sigmoid_()
            gh_n[s].add_(b_hn)
            torch.addcmul(g_n[s], r_[s], gh_n[s], out=n_[s]).tanh_()
            torch.lerp(n_[s], hs_[s], z_[s], out=hs_[s + 1])
        ctx.save_for_backward(w_ih, w_hh, hs, gh[..., 2 * h:], rz, nn_, *xs)
        return _outputs(hs[1:], order, mask), hs[t].clone()

    @staticmethod
    def backward(ctx, dy, dh_n):
        w_ih, w_hh, hs, ghn, rz, n, *xs = ctx.saved_tensors
        if ctx.ops is not None:                                         # direction-major: (D, T, N, .)
            d, t, b, h = n.shape
            dys = _output_grads(dy, (t, d, b, h), ctx.order, ctx.mask, stack=0)   # (D, T, N, H)
            dh_n = hs.new_zeros(d, b, h) if dh_n is None else dh_n.contiguous()
            dgi, dgh, dh0 = ctx.ops.gru_backward(dys, dh_n, w_hh.detach().contiguous(), hs, ghn, rz, n,
                                                 ctx.active)
            dx, dw_ih, db_ih = _input_grads(dgi.transpose(0, 1), xs, w_ih, ctx.order)
            dw_hh = torch.bmm(dgh.view(d, t * b, 3 * h).transpose(1, 2), hs[:, :-1].reshape(d, t * b, h))
            return dx, dh0, None, None, None, None, None, dw_ih, dw_hh, db_ih, dgh.sum((1, 2))
        t, d, b, h = n.shape
        r, z = rz[..., :h], rz[..., h:]
        # what each step's gradients are multiplied by, computed for all steps at once
        a = (1 - z) * (1 - n * n)                                       # dn_pre / dh'
        cb = torch.cat([ghn * r * (1 - r), (hs[:-1] - n) * z * (1 - z)], -1)  # dr_pre/dn_pre, dz_pre/dh'
        dys = _steps(_output_grads(dy, n.shape, ctx.order, ctx.mask))   # (T, D, N, H)
        work = hs.new_empty(t + 1, d, b, 2 * h)                         # per step [dn_pre | dh'] (dh': the state's)
        work[t, ..., h:] = 0 if dh_n is None else dh_n
        dgh = hs.new_empty(t, d, b, 3 * h)                              # gradients of Wh h + bh
        work_, dn_, dh_ = _steps(work), _steps(work[..., :h]), _steps(work[..., h:])
        dgh_rz, dgh_n, dgh_ = _steps(dgh[..., :2 * h]), _steps(dgh[..., 2 * h:]), _steps(dgh)
        a_, cb_, r_, z_ = _steps(a), _steps(cb), _steps(r), _steps(z)
        for s in range(t - 1, -1, -1):
            dh = dh_[s + 1].add_(dys[s])
            torch.mul(dh, a_[s], out=dn_[s + 1])
            torch.mul(work_[s + 1], cb_[s], out=dgh_rz[s])
            torch.mul(dn_[s + 1], r_[s], out=dgh_n[s])
            torch.bmm(dgh_[s], w_hh, out=dh_[s]).addcmul_(dh, z_[s])
        dg = torch.cat([dgh[..., :2 * h], work[1:, ..., :h]], -1)       # (T, D, N, 3H) input projections'
        dx, dw_ih, db_ih = _input_grads(dg, xs, w_ih, ctx.order)
        dw_hh = _recurrent_weight_grad(dgh, hs[:-1])
        return dx, work[0, ..., h:].clone(), None, None, None, None, None, dw_ih, dw_hh, db_ih, dgh.sum((0, 2))


class LSTMLayer(torch.autograd.Function):
    """One LSTM layer, both directions: i, f, o = sigmoid(.), g = tanh(.) of Wi x + bi + Wh h + bh, c' = f c + i g,
    h' = o tanh(c')."""

    @staticmethod
    def forward(ctx, x, h0, c0, order, mask, active, saved, w_hh_t, w_ih, w_hh, b_ih, b_hh):
        t, n, _ = x.shape
        d, h = w_hh.shape[0], w_hh.shape[2]
        g, xs = _project(x, w_ih, b_ih + b_hh, order)                   # (D, T, N, 4H), both biases
        if mask is not None and not active.numel():                     # past a length: f = 1, i = 0: c' = c exactly
            g[..., :h].masked_fill_(~mask.transpose(0, 1), -float("inf"))
            g[..., h:2 * h].masked_fill_(~mask.transpose(0, 1), float("inf"))
        ctx.order, ctx.mask = order, mask
        if (ops := compiled_loop()) is not None:                        # direction-major: (D, T + 1, N, H) ...
            hs, cs, q, tc = ops.lstm_forward(g, w_hh_t, h0.contiguous(), c0.contiguous(), active, saved)
            ctx.save_for_backward(w_ih, w_hh, hs, cs, q, tc, *xs)
            ctx.ops, ctx.active = ops, active
            return _outputs(hs[:, 1:].transpose(0, 1), order, mask), hs[:, t].clone(), cs[:, t].clone()
        ctx.ops = None
        hs, cs = x.new_empty(t + 1, d, n, h), x.new_empty(t + 1, d, n, h)
        hs[0], cs[0] = h0, c0
        q = x.new_empty(t, d, n, 4 * h)                                 # i f g o, after their nonlinearity
        tc = x.new_empty(t, d, n, h)                                    # tanh(c')
        g_, hs_, cs_, tc_, q_ = _steps(g.transpose(0, 1)), _steps(hs), _steps(cs), _steps(tc), _steps(q)
        qif, qi, qf, qg, qo = (_steps(q[..., a:b]) for a, b in ((0, 2 * h), (0, h), (h, 2 * h), (2 * h, 3 * h),
                                                               (3 * h, 4 * h)))
        mask_ = _steps(mask) if mask is not None else None
        for s in range(t):
            torch.bmm(hs_[s], w_hh_t, out=q_[s]).add_(g_[s])
            qif[s].sigmoid_()
            qg[s].tanh_()
            qo[s].sigmoid_()
            torch.mul(qf[s], cs_[s], out=cs_[s + 1]).addcmul_(qi[s], qg[s])
            torch.mul(qo[s], torch.tanh(cs_[s + 1], out=tc_[s]), out=hs_[s + 1])
            if mask_ is not None:
                torch.where(mask_[s], hs_[s + 1], hs_[s], out=hs_[s + 1])
        ctx.save_for_backward(w_ih, w_hh, hs, cs, q, tc, *xs)
        return _outputs(hs[1:], order, mask), hs[t].clone(), cs[t].clone()

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n):
        w_ih, w_hh, hs, cs, q, tc, *xs = ctx.saved_tensors
        if ctx.ops is not None:                                         # direction-major: (D, T, N, .)
            d, t, b, h = tc.shape
            dys = _output_grads(dy, (t, d, b, h), ctx.order, ctx.mask, stack=0)   # (D, T, N, H)
            dh_n = hs.new_zeros(d, b, h) if dh_n is None else dh_n.contiguous()
            dc_n = hs.new_zeros(d, b, h) if dc_n is None else dc_n.contiguous()
            dg, dh0, dc0 = ctx.ops.lstm_backward(dys, dh_n, dc_n, w_hh.detach().contiguous(), cs, q, tc, ctx.active)
            dx, dw_ih, db_ih = _input_grads(dg.transpose(0, 1), xs, w_ih, ctx.order)
            dw_hh = torch.bmm(dg.view(d, t * b, 4 * h).transpose(1, 2), hs[:, :-1].reshape(d, t * b, h))
            return dx, dh0, dc0, None, None, None, None, None, dw_ih, dw_hh, db_ih, db_ih.clone()
        t, d, b, h = tc.shape
        i, f, gg, o = q[..., :h], q[..., h:2 * h], q[..., 2 * h:3 * h], q[..., 3 * h:]
        k_c = o * (1 - tc * tc)                                         # dc' / dh'
        k_o = tc * o * (1 - o)                                          # do_pre / dh'
        k_ifg = torch.stack([gg * i * (1 - i), cs[:-1] * f * (1 - f), i * (1 - gg * gg)], 3)  # (T, D, N, 3, H) / dc'
        keep = None
        if ctx.mask is not None:                                        # past a length: nothing moves
            k_c, k_o, k_ifg = k_c * ctx.mask, k_o * ctx.mask, k_ifg * ctx.mask[..., None]
            keep = _steps((~ctx.mask).to(hs.dtype).expand(t, d, b, h))
        dys = _steps(_output_grads(dy, tc.shape, ctx.order, ctx.mask))
        dg = hs.new_empty(t, d, b, 4 * h)                               # gradients of the gates' inputs
        dg_, dg_ifg, dg_o = _steps(dg), _steps(dg[..., :3 * h].view(t, d, b, 3, h)), _steps(dg[..., 3 * h:])
        k_c_, k_o_, k_ifg_, f_ = _steps(k_c), _steps(k_o), _steps(k_ifg), _steps(f)
        dh = torch.zeros_like(hs[0]) if dh_n is None else dh_n.clone()
        dc = torch.zeros_like(cs[0]) if dc_n is None else dc_n.clone()
        for s in range(t - 1, -1, -1):
            dh.add_(dys[s])
            dc.addcmul_(dh, k_c_[s])                                    # the cell state's whole gradient
            torch.mul(dc[..., None, :], k_ifg_[s], out=dg_ifg[s])
            torch.mul(dh, k_o_[s], out=dg_o[s])
            dc.mul_(f_[s])
            if keep is None:
                dh = torch.bmm(dg_[s], w_hh)
            else:
                dh = torch.bmm(dg_[s], w_hh).addcmul_(dh, keep[s])
        dx, dw_ih, db_ih = _input_grads(dg, xs, w_ih, ctx.order)
        dw_hh = _recurrent_weight_grad(dg, hs[:-1])
        return dx, dh, dc, None, None, None, None, None, dw_ih, dw_hh, db_ih, db_ih.clone()


class RNNLayer(torch.autograd.Function):
    """One tanh RNN layer, both directions: h' = tanh(Wi x + bi + Wh h + bh)."""

    @staticmethod
    def forward(ctx, x, h0, order, mask, active, saved, w_hh_t, w_ih, w_hh, b_ih, b_hh):
        t, n, _ = x.shape
        d, h = w_hh.shape[0], w_hh.shape[2]
        g, xs = _project(x, w_ih, b_ih + b_hh, order)                   # (D, T, N, H)
        ctx.order, ctx.mask = order, mask
        if (ops := compiled_loop()) is not None:                        # direction-major: (D, T + 1, N, H)
            hs = ops.rnn_forward(g, w_hh_t, h0.contiguous(), active)
            ctx.save_for_backward(w_ih, w_hh, hs, *xs)
            ctx.ops, ctx.active = ops, active
            return _outputs(hs[:, 1:].transpose(0, 1), order, mask), hs[:, t].clone()
        ctx.ops = None
        hs = x.new_empty(t + 1, d, n, h)
        hs[0] = h0
        g_, hs_ = _steps(g.transpose(0, 1)), _steps(hs)
        mask_ = _steps(mask) if mask is not None else None
        for s in range(t):
            torch.bmm(hs_[s], w_hh_t, out=hs_[s + 1]).add_(g_[s]).tanh_()
            if mask_ is not None:
                torch.where(mask_[s], hs_[s + 1], hs_[s], out=hs_[s + 1])
        ctx.save_for_backward(w_ih, w_hh, hs, *xs)
        return _outputs(hs[1:], order, mask), hs[t].clone()

    @staticmethod
    def backward(ctx, dy, dh_n):
        w_ih, w_hh, hs, *xs = ctx.saved_tensors
        if ctx.ops is not None:                                         # direction-major: (D, T + 1, N, H)
            d, t, b, h = hs.shape[0], hs.shape[1] - 1, hs.shape[2], hs.shape[3]
            dys = _output_grads(dy, (t, d, b, h), ctx.order, ctx.mask, stack=0)
            dh_n = hs.new_zeros(d, b, h) if dh_n is None else dh_n.contiguous()
            dg, dh0 = ctx.ops.rnn_backward(dys, dh_n, w_hh.detach().contiguous(), hs, ctx.active)
            dx, dw_ih, db_ih = _input_grads(dg.transpose(0, 1), xs, w_ih, ctx.order)
            dw_hh = torch.bmm(dg.view(d, t * b, h).transpose(1, 2), hs[:, :-1].reshape(d, t * b, h))
            return dx, dh0, None, None, None, None, None, dw_ih, dw_hh, db_ih, db_ih.clone()
        t, d, b, h = hs.shape[0] - 1, hs.shape[1], hs.shape[2], hs.shape[3]
        k = 1 - hs[1:] * hs[1:]                                         # tanh'
        keep = None
        if ctx.mask is not None:
            k = k * ctx.mask
            keep = _steps((~ctx.mask).to(hs.dtype).expand(t, d, b, h))
        dys = _steps(_output_grads(dy, (t, d, b, h), ctx.order, ctx.mask))
        dg = hs.new_empty(t, d, b, h)
        dg_, k_ = _steps(dg), _steps(k)
        dh = torch.zeros_like(hs[0]) if dh_n is None else dh_n.clone()
        for s in range(t - 1, -1, -1):
            dh.add_(dys[s])
            torch.mul(dh, k_[s], out=dg_[s])
            dh = torch.bmm(dg_[s], w_hh) if keep is None else torch.bmm(dg_[s], w_hh).addcmul_(dh, keep[s])
        dx, dw_ih, db_ih = _input_grads(dg, xs, w_ih, ctx.order)
        return dx, dh, None, None, None, None, None, dw_ih, _recurrent_weight_grad(dg, hs[:-1]), db_ih, db_ih.clone()
