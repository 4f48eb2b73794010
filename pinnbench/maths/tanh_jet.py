"""The order-2 jet of a tanh MLP's hidden layers as one autograd function with a hand-written
backward pass (issue 22: a bp step's ATen ops).

:meth:`pinnbench.maths.model.PINN._hidden_jet` computes, from the first layer's coefficients
z_0 = W0 x + b0 (n, 1, h) and z_1 = W0 v (1, V, h), the jet of N along every direction through
L - 1 hidden layers, each a tanh jet (:func:`pinnbench.maths.jets._tanh_order2`) followed by an
affine map applied coefficient-wise. Autograd records every elementwise op of those jets and
takes their backward op by op (each with its broadcast reductions and views); here the forward
is the same code under ``no_grad`` (the same numbers, bit for bit: the stacked buffer of
:func:`pinnbench.maths.jets.stacked_out` included) and the backward is written out, layer by
layer, with each layer's two products on the stacked coefficients.

Per tanh layer (y_0 = tanh z_0, p_0 = 1 - y_0^2, y_1 = z_1 p_0, m = -y_0 y_1,
y_2 = z_2 p_0 + z_1 m; z_2 = 0 in the first layer), with cotangents g_k of y_k, in reverse:

    g_m = g_2 z_1,  gz_1 = g_2 m,  gz_2 = g_2 p_0,  gp_0 = sum_V g_2 z_2
    g_1 <- g_1 - g_m y_0,  g_0 <- g_0 - sum_V g_m y_1          (m = -y_0 y_1)
    gz_1 <- gz_1 + g_1 p_0,  gp_0 <- gp_0 + sum_V g_1 z_1      (y_1 = z_1 p_0)
    g_0 <- g_0 - 2 y_0 gp_0,  gz_0 = g_0 p_0                   (p_0 = 1 - y_0^2, tanh' = p_0)

and per affine map Z = Y W^T (+ b on the value): gY = G W, gW = G^T Y summed over the points
and coefficients, gb = the value's G summed over the points. Checked against autograd through
the unfused jets by ``torch.autograd.gradcheck`` in float64 (tests/test_tanh_jet.py).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from pinnbench.maths.jets import Jet, stacked_out


def hidden_jet2(z0: Tensor, z1: Tensor, params: Sequence[Tensor]) -> Jet:
    """The order-2 jet of the tanh MLP's hidden and output layers ``params`` = (W1, b1, ...,
    WL, bL), 2-D weights, from the first layer's coefficients z0 (n, 1, h) and z1 (1, V, h):
    [N (n, 1), D_v N (n, V), D_v^2 N / 2 (n, V)], as ``PINN._hidden_jet`` computes it."""
    out = _HiddenJet2.apply(z0, z1, *params)
    return Jet(list(out), 2)


def _forward(z0: Tensor, z1: Tensor, params: Sequence[Tensor]):
    """The arithmetic of ``_tanh_order2`` (stacked) and ``_linear_jet``, op for op, keeping
    what the backward pass needs."""
    z = [z0, z1]
    saved = []
    for layer in range(len(params) // 2):
        w, b = params[2 * layer], params[2 * layer + 1]
        y0 = torch.tanh(z[0])
        p0 = 1.0 - y0 * y0
        y0, y1, y2 = stacked_out(z[1], y0)
        torch.mul(z[1], p0, out=y1)
        m = y1 * -y0
        if len(z) < 3:
            torch.mul(z[1], m, out=y2)
        else:
            torch.add(z[2] * p0, z[1] * m, out=y2)
        ys = y0._base
        saved.append((z[1], z[2] if len(z) > 2 else None, y0, y1, p0, m, ys))
        out = ys @ w.T
        v = z[1].shape[-2]
        z = list(out.split([1, v, v], dim=-2))
        z[0] = z[0] + b
    return [c.squeeze(-1) for c in z], saved


class _HiddenJet2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z0, z1, *params):
        out, saved = _forward(z0, z1, params)
        ctx.saved = saved
        ctx.shapes = (z0.shape, z1.shape)
        ctx.save_for_backward(*params)
        return tuple(out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g0, g1, g2):
        params = ctx.saved_tensors
        n_layers = len(params) // 2
        v = ctx.saved[0][0].shape[-2]
        grads = [None] * len(params)
        g = [torch.zeros_like(ctx.saved[-1][2][..., :1]) if g0 is None else g0.unsqueeze(-1),
             None if g1 is None else g1.unsqueeze(-1),
             None if g2 is None else g2.unsqueeze(-1)]
        parts = [c if c is not None else torch.zeros(
            g[0].shape[0], v, 1, dtype=g[0].dtype, device=g[0].device) for c in g]
        gz = torch.cat(parts, dim=-2)  # (n, 1 + 2V, h') cotangents of the layer's output
        for layer in reversed(range(n_layers)):
            w = params[2 * layer]
            z1, z2, y0, y1, p0, m, ys = ctx.saved[layer]
            flat = gz.flatten(0, -2)
            grads[2 * layer] = flat.T @ ys.flatten(0, -2)
            grads[2 * layer + 1] = gz[..., 0, :].sum(0)
            gy = gz @ w
            gy0, gy1, gy2 = gy.split([1, v, v], dim=-2)
            gm = gy2 * z1
            gz1 = gy2 * m
            gy1 = gy1 - gm * y0
            gy0 = gy0 - (gm * y1).sum(-2, keepdim=True)
            gz1 = gz1 + gy1 * p0
            gp0 = (gy1 * z1).sum(-2, keepdim=True)
            if z2 is not None:
                gp0 = gp0 + (gy2 * z2).sum(-2, keepdim=True)
            gy0 = gy0 - 2.0 * y0 * gp0
            gz0 = gy0 * p0
            if layer:
                gz = torch.cat([gz0, gz1, gy2 * p0], dim=-2)
        z0_shape, z1_shape = ctx.shapes
        return (gz0.sum_to_size(z0_shape), gz1.sum_to_size(z1_shape), *grads)
