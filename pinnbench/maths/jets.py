"""Truncated Taylor series ("jets") of scalar and vector functions along a direction.

A :class:`Jet` of order K holds the Taylor coefficients ``c[k] = f^(k)(0) / k!`` of
``t -> f(x + t v)`` for k = 0..K. Coefficients are tensors that broadcast against each other,
typically ``(n, 1, ...)`` for what depends on the point only and ``(n, V, ...)`` once a
direction enters. Coefficients beyond ``len(c)`` are exactly zero (an affine input has two), which
keeps the recurrences below from doing work on known zeros.

Composition with an analytic function uses the classical recurrences for Taylor coefficients
(Griewank & Walther, *Evaluating Derivatives*, 2nd ed., §13.2), each O(K^2):

- ``y = exp(z)``:           k y_k = sum_{j=1..k} j z_j y_{k-j}
- ``s, c = sin z, cos z``:   k s_k = sum j z_j c_{k-j},  k c_k = -sum j z_j s_{k-j}
- ``s, c = sinh z, cosh z``: k s_k = sum j z_j c_{k-j},  k c_k =  sum j z_j s_{k-j}
- ``y = tanh(z)``, p = 1 - y^2:  k y_k = sum j z_j p_{k-j},  p_k = [k=0] - sum_{i<=k} y_i y_{k-i}

This is the forward "Taylor mode" that STDE (Shi et al., NeurIPS 2024) uses: the k-th directional
derivative is ``k! * c[k]``, with no autograd graph.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


class Jet:
    """Taylor coefficients ``coeffs[0..]`` of a function along a line, truncated at ``order``."""

    __slots__ = ("coeffs", "order")

    def __init__(self, coeffs: Sequence[Tensor | float], order: int) -> None:
        if order < 0:
            raise ValueError(f"order must be >= 0, got {order}")
        if not coeffs:
            raise ValueError("a jet needs at least its value (coeffs[0])")
        self.coeffs = list(coeffs)[: order + 1]
        self.order = order

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def constant(cls, value: Tensor | float, order: int) -> "Jet":
        return cls([value], order)

    @classmethod
    def line(cls, value: Tensor | float, slope: Tensor | float, order: int) -> "Jet":
        """The jet of an affine function ``value + t * slope``."""
        return cls([value, slope], order)

    # -- access ---------------------------------------------------------------------------------
    def __getitem__(self, k: int):
        return self.coeffs[k] if k < len(self.coeffs) else 0.0

    def derivative(self, k: int) -> Tensor | float:
        """The k-th derivative along the line at t = 0: ``k! * c[k]``."""
        return derivative(self[k], k)

    @property
    def value(self):
        return self.coeffs[0]

    # -- arithmetic -----------------------------------------------------------------------------
    def _coerce(self, other) -> "Jet":
        return other if isinstance(other, Jet) else Jet([other], self.order)

    def __add__(self, other) -> "Jet":
        other = self._coerce(other)
        order = min(self.order, other.order)
        n = min(max(len(self.coeffs), len(other.coeffs)), order + 1)
        return Jet([plus(self[k], other[k]) for k in range(n)], order)

    __radd__ = __add__

    def __neg__(self) -> "Jet":
        return Jet([-c for c in self.coeffs], self.order)

    def __sub__(self, other) -> "Jet":
        return self + (-self._coerce(other))

    def __rsub__(self, other) -> "Jet":
        if isinstance(other, Jet) or (isinstance(other, float) and other == 0.0):
            return (-self) + other
        # a scalar minus the jet: one op for the value (other - c_0 is other + (-c_0) exactly,
        # IEEE subtraction being the addition of the negation), not a negation and an addition
        return Jet([other - self.coeffs[0]] + [-c for c in self.coeffs[1:]], self.order)

    def __mul__(self, other) -> "Jet":
        if not isinstance(other, Jet):
            if isinstance(other, (int, float)) and other == 1.0:
                return Jet(list(self.coeffs), self.order)  # c * 1.0 = c: no op (a radius of 1)
            return Jet([c * other for c in self.coeffs], self.order)
        order = min(self.order, other.order)
        n = min(len(self.coeffs) + len(other.coeffs) - 1, order + 1)
        return Jet([product_coefficient(self, other, k) for k in range(n)], order)

    __rmul__ = __mul__

    def __truediv__(self, scalar: float) -> "Jet":
        return self * (1.0 / scalar)

    def map(self, fn) -> "Jet":
        """Apply a coefficient-wise *linear* map (a matmul, a sum over an axis, a reshape)."""
        return Jet([fn(c) for c in self.coeffs], self.order)

    # -- analytic functions ---------------------------------------------------------------------
    def exp(self) -> "Jet":
        z = self.coeffs
        y = [torch.exp(z[0]) if isinstance(z[0], Tensor) else _math_exp(z[0])]
        for k in range(1, self.order + 1):
            y.append(_divided(_conv_deriv(z, y, k), k))
        return Jet(y, self.order)

    def sin_cos(self) -> tuple["Jet", "Jet"]:
        return self._trig(torch.sin, torch.cos, sign=-1.0)

    def sinh_cosh(self) -> tuple["Jet", "Jet"]:
        return self._trig(torch.sinh, torch.cosh, sign=1.0)

    def sin(self) -> "Jet":
        return self.sin_cos()[0]

    def cos(self) -> "Jet":
        return self.sin_cos()[1]

    def sinh(self) -> "Jet":
        return self.sinh_cosh()[0]

    def cosh(self) -> "Jet":
        return self.sinh_cosh()[1]

    def _trig(self, f, g, sign: float) -> tuple["Jet", "Jet"]:
        z = self.coeffs
        z0 = torch.as_tensor(z[0])
        s, c = [f(z0)], [g(z0)]
        for k in range(1, self.order + 1):
            s.append(_divided(_conv_deriv(z, c, k), k))
            c.append(_divided(sign * _conv_deriv(z, s, k), k))
        return Jet(s, self.order), Jet(c, self.order)

    def tanh(self) -> "Jet":
        z = self.coeffs
        y = [torch.tanh(z[0])]
        p = [1.0 - y[0] * y[0]]
        if self.order == 2 and len(z) > 1:
            return Jet(list(_tanh_order2(z, y[0], p[0])), 2)
        for k in range(1, self.order + 1):
            y.append(_divided(_conv_deriv(z, p, k), k))
            if k == 1 < self.order:  # p_1 = -(y0 y1 + y1 y0) = -2 (y0 y1), the same number
                p.append(y[0] * y[1] * -2.0)
            elif k < self.order:  # p_k is only needed for y_{k+1}
                sq = 0.0
                for i in range(k + 1):
                    sq = plus(sq, y[i] * y[k - i])
                p.append(-sq)
        return Jet(y, self.order)


def _tanh_order2(z: list, y0: Tensor, p0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(y_0, y_1, y_2) of tanh's order-2 jet, the same numbers as the recurrence in fewer passes
    over the (n, V, h) coefficients (each pass a launch and a read and write of them), written
    into one stacked buffer where nothing is differentiated (:func:`stacked_out`).

    The recurrence takes y_1 = z_1 p_0, p_1 = (y_0 y_1) (-2) and
    y_2 = (z_1 p_1 + (2 z_2) p_0) / 2 (the last term only when z_2 exists): 8 operations on
    (n, V, h) tensors. Scaling by a power of two is exact in binary floating point (no
    overflow or subnormals at these magnitudes), so fl(2a) = 2a, fl(2 fl(u)) = fl(2u) and
    fl(2u + 2w) / 2 = fl(u + w); with m = y_1 (-y_0) = -fl(y_0 y_1), this is
    y_2 = fl(fl(z_2 p_0) + fl(z_1 m)), bit for bit, in 5 such operations (3 without z_2, where
    the recurrence took 5)."""
    out = stacked_out(z[1], y0)
    if out is None:
        y1 = z[1] * p0
        m = y1 * -y0  # -y0: (n, 1, h), small
        t = z[1] * m
        return (y0, y1, t) if len(z) < 3 else (y0, y1, z[2] * p0 + t)
    y0, y1, y2 = out
    torch.mul(z[1], p0, out=y1)
    m = y1 * -y0
    if len(z) < 3:
        torch.mul(z[1], m, out=y2)
    else:
        torch.add(z[2] * p0, z[1] * m, out=y2)
    return y0, y1, y2


def stacked_out(z1, y0) -> tuple[Tensor, Tensor, Tensor] | None:
    """Without autograd recording, tanh's order-2 jet writes its coefficients into one buffer,
    (..., n, 1 + 2V, h), as slices along the second-last axis: the next layer's product reads
    that buffer (:func:`pinnbench.maths.model.stacked_base`) instead of concatenating them.
    Returns the three slices, y_0 already copied in (the same elementwise products, written
    elsewhere: the same numbers), or None where autograd records (``out=`` is not
    differentiable) or y_0 is not (..., n, 1, h) (the coefficients broadcast to one shape:
    z_1 of the first hidden layer is W0 v, (..., 1, V, h))."""
    if not (isinstance(z1, Tensor) and isinstance(y0, Tensor)) or not 2 <= z1.ndim == y0.ndim or (
            torch.is_grad_enabled() and (z1.requires_grad or y0.requires_grad)):
        return None
    if y0.shape[-2] != 1:
        return None
    y0_out, y1, y2 = stacked_buffer(z1, y0)
    y0_out.copy_(y0)
    return y0_out, y1, y2


def stacked_buffer(z1: Tensor, y0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """An uninitialised (..., n, 1 + 2V, h) buffer for tanh's order-2 coefficients, y_0 (1 row),
    y_1 and y_2 (V rows each) as slices along the second-last axis, shaped by broadcasting z_1
    (..., V, h) with y_0 (or z_0) (..., n, 1, h): the layout that :func:`stacked_out` and the
    fused node :mod:`pinnbench.maths.tanh_jet` write and the next layer's product reads."""
    shape = torch.broadcast_shapes(z1.shape[:-2], y0.shape[:-2])
    v = z1.shape[-2]
    buf = torch.empty(*shape, 1 + 2 * v, y0.shape[-1], dtype=torch.result_type(z1, y0),
                      device=z1.device)
    return buf.split([1, v, v], dim=-2)


def _conv_deriv(z: list, y: list, k: int):
    """sum_{j=1..min(k, len(z)-1)} j * z_j * y_{k-j}: the convolution in every recurrence above."""
    acc = 0.0
    for j in range(1, min(k, len(z) - 1) + 1):
        acc = plus(acc, (z[j] if j == 1 else j * z[j]) * y[k - j])
    return acc


def product_coefficient(a: Jet, b: Jet, k: int):
    """The k-th coefficient of the product a b, sum_{i=0..k} a_i b_{k-i} (the known zeros beyond
    each jet's coefficients skipped), alone: ``(a * b)[k]`` to the bit without forming the
    product's other coefficients (a residual that reads only D_v^2 u needs no u_0 or u_1)."""
    acc = 0.0
    for i in range(max(0, k - len(b.coeffs) + 1), min(k, len(a.coeffs) - 1) + 1):
        acc = plus(acc, a.coeffs[i] * b.coeffs[k - i])
    return acc


def derivative(c, k: int):
    """The k-th derivative along the line from the Taylor coefficient c_k: ``k! * c_k`` (no op
    for k <= 1)."""
    return c if k <= 1 else _factorial(k) * c


def plus(a, b):
    """a + b, without an op where one side is the exact 0.0 of a coefficient known to vanish
    (each would be one more kernel launch on a GPU, and one more node in a backward pass; the
    sum is the same number, as x + 0.0 = x)."""
    if isinstance(a, float) and a == 0.0:
        return b
    if isinstance(b, float) and b == 0.0:
        return a
    return a + b


def _divided(a, k: int):
    """a / k without an op for k = 1 (exact)."""
    return a if k == 1 else a / k


def _factorial(k: int) -> int:
    out = 1
    for i in range(2, k + 1):
        out *= i
    return out


def _math_exp(v: float) -> float:
    import math

    return math.exp(v)
