"""The order-2 jet of a tanh MLP's hidden layers as one autograd function with a hand-written
backward pass (issue 22: a bp step's ATen ops).

:meth:`pinnbench.maths.model.PINN._hidden_jet` computes, from the first layer's coefficients
z_0 = W0 x + b0 (n, 1, h) and z_1 = W0 v (1, V, h), the jet of N along every direction through
L - 1 hidden layers, each a tanh jet (:func:`pinnbench.maths.jets._tanh_order2`) followed by an
affine map applied coefficient-wise. Autograd records every elementwise op of those jets and
takes their backward op by op (each with its broadcast reductions and views); here the forward
is the same arithmetic under ``no_grad`` (the same numbers, bit for bit: the coefficients
written into one stacked (n, 1 + 2V, h) buffer as :func:`pinnbench.maths.jets.stacked_out`
does) and the backward is written out, layer by layer, on that stacked layout.

Per tanh layer, y_0 = tanh z_0, p_0 = 1 - y_0^2, y_1 = z_1 p_0, q = y_0 y_1,
y_2 = z_2 p_0 - z_1 q (z_2 = 0 in the first layer). Its Jacobian is the jet of tanh' = 1 - tanh^2
along the same directions, P = [p_0, p_1, p_2] with p_1 = -2 y_0 y_1 = -2 q and
p_2 = -(y_1^2 + 2 y_0 y_2):

    dy_0/dz_0 = p_0,   dy_1/dz_0 = p_1,   dy_2/dz_0 = p_2,
    dy_1/dz_1 = p_0,   dy_2/dz_1 = p_1,   dy_2/dz_2 = p_0.

So with cotangents g_k of y_k (stacked as g, (n, 1 + 2V, h)), in one pass:

    G = g p_0                                   (all 1 + 2V rows: g_0 p_0, g_1 p_0, g_2 p_0)
    gz_2 = G_2,   gz_1 = G_1 - 2 g_2 q,
    gz_0 = G_0 - 2 y_0 sum_V (g_1 y_1 + g_2 y_2) - sum_V g_2 y_1^2,

G overwritten in place into the next layer's stacked cotangent [gz_0, gz_1, gz_2]. Per affine
map Z = Y W^T (+ b on the value row), with Y and G as (n (1 + 2V), h) matrices: gY = G W,
gW = G^T Y, gb = the value rows of G summed over the points. Checked against autograd through
the unfused jets by ``torch.autograd.gradcheck`` in float64 (tests/test_tanh_jet.py).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from pinnbench.maths.jets import Jet, stacked_buffer


def hidden_jet2(z0: Tensor, z1: Tensor, params: Sequence[Tensor]) -> Jet:
    """The order-2 jet of the tanh MLP's hidden and output layers ``params`` = (W1, b1, ...,
    WL, bL), 2-D weights, from the first layer's coefficients z0 (n, 1, h) and z1 (1, V, h):
    [N (n, 1), D_v N (n, V), D_v^2 N / 2 (n, V)], as ``PINN._hidden_jet`` computes it."""
    out = _HiddenJet2.apply(z0, z1, *params)
    return Jet(list(out), 2)


def _forward(z0: Tensor, z1: Tensor, params: Sequence[Tensor]):
    """The arithmetic of ``_tanh_order2`` (stacked) and ``_linear_jet``, the same numbers
    (z_1 m = -(z_1 q) exactly, so y_2 = z_2 p_0 - z_1 q is z_2 p_0 + z_1 m bit for bit), and per
    layer what the backward pass needs: the stacked Y as a matrix, y_0, Y's rows 1.. (y_1 and
    y_2), y_1, p_0 and q."""
    z = [z0, z1]
    saved = []
    for layer in range(len(params) // 2):
        w, b = params[2 * layer], params[2 * layer + 1]
        v = z[1].shape[-2]
        y0, y1, y2 = stacked_buffer(z[1], z[0])
        ys = y0._base
        torch.tanh(z[0], out=y0)
        p0 = 1.0 - y0 * y0
        torch.mul(z[1], p0, out=y1)
        q = y0 * y1
        if len(z) < 3:
            torch.mul(z[1], q, out=y2).neg_()
        else:
            torch.sub(z[2] * p0, z[1] * q, out=y2)
        ys2d = ys.view(-1, ys.shape[-1])
        saved += [ys2d, y0, ys.narrow(-2, 1, 2 * v), y1, p0, q]
        out = torch.mm(ys2d, w.t())
        if layer < len(params) // 2 - 1:
            z = list(out.view(*ys.shape[:-1], w.shape[0]).split([1, v, v], dim=-2))
        else:  # the output (width 1): [N (n, 1), D_v N (n, V), D_v^2 N / 2 (n, V)]
            z = list(out.view(*ys.shape[:-2], 1 + 2 * v).split([1, v, v], dim=-1))
        z[0].add_(b)  # in the product's own storage: no new tensor
    return z, saved


def network_jet2(x: Tensor, v: Tensor, params: Sequence[Tensor]) -> Jet:
    """The same jet from the input: the first layer z_0 = x W0^T + b0, z_1 = v W0^T (v the
    (V, D) directions) inside the node too, so that its backward pass writes W0's gradient as
    one matrix, gW0 = (sum_n gz_1)^T v + gz_0^T x, the second product accumulated into the
    first by ``addmm_`` (no second d-sized gradient and no d-sized sum of the two, as
    autograd's accumulation of the two products makes; the same numbers on MKL, where a GEMM
    with beta = 1 adds its finished product to C), and gb0 = sum_n gz_0.
    ``params`` = (W0, b0, W1, b1, ...); x and v must not require a gradient."""
    out = _NetworkJet2.apply(x, v, *params)
    return Jet(list(out), 2)


def _backward_hidden(g0, g1, g2, params: Sequence[Tensor], saved: Sequence[Tensor],
                     need: Sequence[bool], v: int):
    """The cotangents of the hidden layers' inputs (z_0 (n, 1, h) and z_1 (n, V, h), not yet
    summed over the points) and of ``params`` (``need[k]``: whether params[k] needs one), from
    the output's cotangents g_0 (n, 1), g_1 (n, V), g_2 (n, V) (None: an unused coefficient,
    taken as zeros)."""
    ref = next(g for g in (g0, g1, g2) if g is not None)
    n = ref.shape[:-1]
    gs = [torch.zeros(*n, k, dtype=ref.dtype, device=ref.device) if g is None else g
          for g, k in zip((g0, g1, g2), (1, v, v))]
    rows = (*n, 1 + 2 * v)
    gz2d = torch.cat(gs, dim=-1).view(-1, 1)  # (n (1 + 2V), 1): the output's cotangent
    grads = [None] * len(params)
    if need[-1]:
        grads[-1] = gs[0].sum(tuple(range(len(n))))
    for layer in reversed(range(len(params) // 2)):
        w = params[2 * layer]
        ys2d, y0, ysr, y1, p0, q = saved[6 * layer: 6 * layer + 6]
        if layer < len(params) // 2 - 1:
            gz2d = gz.view(-1, gz.shape[-1])
        if need[2 * layer]:
            grads[2 * layer] = torch.mm(gz2d.t(), ys2d)
        gy = torch.mm(gz2d, w).view(*rows, w.shape[1])
        gz = gy * p0
        gz0, gz1, _ = gz.split([1, v, v], dim=-2)
        gyr = gy.narrow(-2, 1, 2 * v)
        gy2 = gyr.narrow(-2, v, v)
        gz1.addcmul_(gy2, q, value=-2.0)
        gz0.addcmul_(y0, (gyr * ysr).sum(-2, True), value=-2.0)
        gz0.sub_((gy2 * (y1 * y1)).sum(-2, True))
        if layer and need[2 * layer - 1]:
            grads[2 * layer - 1] = gz0.sum(tuple(range(gz0.ndim - 1)))
    return gz0, gz1, grads


class _HiddenJet2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z0, z1, *params):
        z, saved = _forward(z0, z1, params)
        ctx.z1_shape = z1.shape
        ctx.n_params = len(params)
        ctx.save_for_backward(*params, *saved)
        return tuple(z)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g0, g1, g2):
        tensors = ctx.saved_tensors
        params, saved = tensors[:ctx.n_params], tensors[ctx.n_params:]
        need = ctx.needs_input_grad
        z1_shape = ctx.z1_shape
        v = z1_shape[-2]
        gz0, gz1, grads = _backward_hidden(g0, g1, g2, params, saved, need[2:], v)
        return (gz0 if need[0] else None, gz1.sum_to_size(z1_shape) if need[1] else None, *grads)


class _NetworkJet2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v, *params):
        w0, b0 = params[0], params[1]
        # the numbers of FirstLayer.points and DenseDirections.apply_weight, bit for bit
        z0 = torch.addmm(b0, x, w0.T).unsqueeze(-2)
        z1 = torch.mm(v, w0.T).unsqueeze(-3)
        z, saved = _forward(z0, z1, params[2:])
        ctx.n_params = len(params)
        ctx.save_for_backward(x, v, *params, *saved)
        return tuple(z)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g0, g1, g2):
        tensors = ctx.saved_tensors
        x, v = tensors[:2]
        params, saved = tensors[2:2 + ctx.n_params], tensors[2 + ctx.n_params:]
        need = ctx.needs_input_grad
        if need[0] or need[1]:
            raise RuntimeError("network_jet2 differentiates the parameters only (x and the "
                               "directions must not require a gradient)")
        k = v.shape[0]
        gz0, gz1, grads = _backward_hidden(g0, g1, g2, params[2:], saved, need[4:], k)
        gw0 = gb0 = None
        gz0 = gz0.squeeze(-2)  # (n, h)
        if need[2]:
            gw0 = torch.mm(gz1.sum(0).t(), v)  # (h, D)
            gw0.addmm_(gz0.t(), x)
        if need[3]:
            gb0 = gz0.sum(0)
        return (None, None, gw0, gb0, *grads)
