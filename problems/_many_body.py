"""The two-body and three-body functions u2(x) of the STDE / SDGD / HTE suites, and the sums of
their derivatives that closed-form sources need, computed block by block in O(d) per point.

Sources: Shi et al., "Stochastic Taylor Derivative Estimator", NeurIPS 2024 (STDE) and
Hu et al., "Tackling the curse of dimensionality with physics-informed neural networks"
(SDGD) / "Hutchinson trace estimation for high-dimensional and high-order PINNs" (HTE);
formulas re-derived here and checked against autodiff in tests/test_problems.py.

Both are sums over windows of neighbouring coordinates, u2 = sum_i c_i g(x_i, ..., x_{i+w-1}),
so every quantity below is a sum over windows of a local expression: a block of windows reads
its columns plus a halo of w - 1.

Two-body (w = 2), p = x_i, q = x_{i+1}:
    g = sin(phi), phi = p + cos q + q cos p,
    phi_p = a = 1 - q sin p,  phi_q = b = cos p - sin q,
    phi_pp = -q cos p, phi_pq = -sin p, phi_qq = -cos q,
    phi_ppp = q sin p, phi_ppq = -cos p, phi_pqq = 0, phi_qqq = sin q;
    x . grad u2 = sum_i c_i cos(phi_i) (p a_i + q b_i),
    Lap u2      = sum_i c_i [-sin(phi_i)(a_i^2 + b_i^2) + cos(phi_i)(-q cos p - cos q)]  (DOMAIN.md §5).

Three-body (w = 3), p, q, r = x_i, x_{i+1}, x_{i+2}, psi = pqr, e = exp(psi),
S1 = p^2 + q^2 + r^2, S2 = (qr)^2 + (pr)^2 + (pq)^2. psi is homogeneous of degree 3, so the
Euler operator E = x . grad gives E e = 3 psi e and sum_ab x_a x_b d_ab e = E(E e) - E e:
    x . grad g       = 3 psi e
    Lap g            = S2 e                        (d_aa psi = 0, so d_aa e = psi_a^2 e)
    x^T (Hess g) x   = (9 psi^2 + 6 psi) e
    x . grad Lap g   = (3 psi + 4) S2 e            (S2 is homogeneous of degree 4)
    Lap^2 g          = (S2^2 + 8 psi S1 + 4 S1) e,
the last from d_aa d_bb e = (psi_a^2 psi_b^2 + 4 psi_a psi_b psi_ab + 2 psi_ab^2) e for a != b,
d_aaaa e = psi_a^4 e, and psi_p psi_q psi_pq + psi_p psi_r psi_pr + psi_q psi_r psi_qr = psi S1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pinnbench.problems._chunked import column_blocks


class ManyBody:
    """u2 = sum_i c_i g(x_i..x_{i+w-1}); ``sums(x, c, order)`` returns the row sums a source
    needs, each (n,), walking the windows in blocks (``order`` 0: u2 only; 2: + x.grad u2,
    Lap u2; 4 (three-body only): + x^T Hess u2 x, x.grad Lap u2, Lap^2 u2)."""

    window: int = 0
    name: str = ""

    @classmethod
    def n_coefficients(cls, dim: int) -> int:
        return dim - cls.window + 1

    @classmethod
    def sums(cls, x: Tensor, c: Tensor, order: int = 0) -> dict[str, Tensor]:
        keys = cls._keys(order)
        out = {k: torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) for k in keys}
        n_windows = c.shape[0]
        for a, b in column_blocks(x.shape[0], n_windows):
            cls._block(x[:, a:b + cls.window - 1], c[a:b], order, out)
        return out

    @staticmethod
    def _keys(order: int) -> tuple[str, ...]:
        raise NotImplementedError

    @staticmethod
    def _block(xb: Tensor, c: Tensor, order: int, out: dict[str, Tensor]) -> None:
        raise NotImplementedError


class TwoBody(ManyBody):
    """u2 = sum_{i=1}^{d-1} c_i sin(x_i + cos x_{i+1} + x_{i+1} cos x_i)."""

    window = 2
    name = "two-body"

    @staticmethod
    def _keys(order: int) -> tuple[str, ...]:
        if order not in (0, 2):
            raise ValueError(f"two-body sums exist for order 0 or 2, got {order}")
        return ("u2",) if order == 0 else ("u2", "x_grad", "lap")

    @staticmethod
    def _block(xb: Tensor, c: Tensor, order: int, out: dict[str, Tensor]) -> None:
        sx, cx = torch.sin(xb), torch.cos(xb)
        p, q = xb[:, :-1], xb[:, 1:]
        sp, sq, cp, cq = sx[:, :-1], sx[:, 1:], cx[:, :-1], cx[:, 1:]
        phi = p + cq + q * cp
        sphi, cphi = torch.sin(phi), torch.cos(phi)
        del phi
        out["u2"] += sphi @ c
        if order == 2:
            a = 1.0 - q * sp
            b = cp - sq
            out["x_grad"] += (cphi * (p * a + q * b)) @ c
            out["lap"] += (cphi * (-q * cp - cq) - sphi * (a * a + b * b)) @ c

    @staticmethod
    def window_derivatives(p: Tensor, q: Tensor, c: Tensor) -> dict[str, Tensor]:
        """All partial derivatives of c sin(phi(p, q)) up to order 3 (keys 'p', 'pq', 'qqq'...),
        by the chain rule: g_a = c cos(phi) phi_a, g_ab = c(-sin phi phi_a phi_b + cos phi phi_ab),
        g_abc = c(-cos phi phi_a phi_b phi_c - sin phi (phi_ab phi_c + phi_ac phi_b + phi_bc phi_a)
        + cos phi phi_abc)."""
        sp, cp, sq, cq = torch.sin(p), torch.cos(p), torch.sin(q), torch.cos(q)
        phi = p + cq + q * cp
        s, co = torch.sin(phi) * c, torch.cos(phi) * c
        d1 = {"p": 1.0 - q * sp, "q": cp - sq}
        d2 = {"pp": -q * cp, "pq": -sp, "qq": -cq}
        d3 = {"ppp": q * sp, "ppq": -cp, "pqq": torch.zeros_like(p), "qqq": sq}

        def second(a: str, b: str) -> Tensor:
            return d2["".join(sorted(a + b))]

        out: dict[str, Tensor] = {}
        for a in "pq":
            out[a] = co * d1[a]
        for ab in d2:
            a, b = ab
            out[ab] = -s * d1[a] * d1[b] + co * d2[ab]
        for abc in d3:
            a, b, cc = abc
            out[abc] = (-co * d1[a] * d1[b] * d1[cc]
                        - s * (second(a, b) * d1[cc] + second(a, cc) * d1[b] + second(b, cc) * d1[a])
                        + co * d3[abc])
        return out


class ThreeBody(ManyBody):
    """u2 = sum_{i=1}^{d-2} c_i exp(x_i x_{i+1} x_{i+2})."""

    window = 3
    name = "three-body"

    @staticmethod
    def _keys(order: int) -> tuple[str, ...]:
        if order not in (0, 2, 4):
            raise ValueError(f"three-body sums exist for order 0, 2 or 4, got {order}")
        return {0: ("u2",), 2: ("u2", "x_grad", "lap"),
                4: ("u2", "x_grad", "lap", "x_hess_x", "x_grad_lap", "bilap")}[order]

    @staticmethod
    def _block(xb: Tensor, c: Tensor, order: int, out: dict[str, Tensor]) -> None:
        p, q, r = xb[:, :-2], xb[:, 1:-1], xb[:, 2:]
        psi = p * q * r
        e = torch.exp(psi)
        out["u2"] += e @ c
        if order == 0:
            return
        x2 = xb * xb
        p2, q2, r2 = x2[:, :-2], x2[:, 1:-1], x2[:, 2:]
        s2 = q2 * r2 + p2 * r2 + p2 * q2
        e_s2 = e * s2
        out["x_grad"] += 3.0 * ((e * psi) @ c)
        out["lap"] += e_s2 @ c
        if order == 4:
            s1 = p2 + q2 + r2
            out["x_hess_x"] += (e * psi * (9.0 * psi + 6.0)) @ c
            out["x_grad_lap"] += (e_s2 * (3.0 * psi + 4.0)) @ c
            out["bilap"] += (e * (s2 * s2 + (8.0 * psi + 4.0) * s1)) @ c
