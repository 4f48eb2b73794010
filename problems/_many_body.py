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
    Lap u2      = sum_i c_i [-sin(phi_i)(a_i^2 + b_i^2) + cos(phi_i)(-q cos p - cos q)]  (docs/domain.md §5).
Fourth order (clamped biharmonic): each window depends on its own (p, q) only, so with g the
window function and its partial derivatives from ``TwoBody.window_derivatives``,
    x^T Hess u2 x = sum_i c_i (p^2 g_pp + 2 p q g_pq + q^2 g_qq),
    x . grad Lap u2 = sum_i c_i (p (g_ppp + g_pqq) + q (g_ppq + g_qqq)),
    Lap^2 u2 = sum_i c_i (g_pppp + 2 g_ppqq + g_qqqq).

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

from pinnbench.maths import fused
from pinnbench.maths.fused import Fused
from pinnbench.problems._chunked import column_blocks

#: the compiled block sums, one per body
_FUSED: dict[type, Fused] = {}


class ManyBody:
    """u2 = sum_i c_i g(x_i..x_{i+w-1}); ``sums(x, c, order)`` returns the row sums a source
    needs, each (n,), walking the windows in blocks (``order`` 0: u2 only; 2: + x.grad u2,
    Lap u2; 4: + x^T Hess u2 x, x.grad Lap u2, Lap^2 u2)."""

    window: int = 0
    name: str = ""

    @classmethod
    def n_coefficients(cls, dim: int) -> int:
        return dim - cls.window + 1

    @classmethod
    def sums(cls, x: Tensor, c: Tensor, order: int = 0) -> dict[str, Tensor]:
        keys = cls._keys(order)
        n_windows = c.shape[0]
        if n_windows == 0:
            return {k: torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) for k in keys}
        block = cls.block_function(x.shape[1])
        out: dict[str, Tensor] = {}
        # blocks narrow enough that the ~temporaries(order) block-sized temporaries of one
        # block stay within about BLOCK_ELEMENTS numbers in all on the CPU (compiled, a block
        # holds about one: tests/test_fused.py), a 1/DEVICE_BLOCKS share of them on a GPU
        for a, b in column_blocks(x.shape[0] * cls.temporaries(order), n_windows, x.device):
            sums = block(x[:, a:b + cls.window - 1], c[a:b], order)
            if not out:  # the first block's sums are the accumulators: 0 + v = v, no op
                out = {k: sums[k] for k in keys}
            else:
                for k in keys:
                    out[k].add_(sums[k])
        return out

    @classmethod
    def block_function(cls, n_cols: int):
        """The block sums of :meth:`_block` for a batch of ``n_cols`` coordinates: fused into one
        kernel at large d (:mod:`pinnbench.maths.fused`), eager below."""
        if n_cols < fused.MIN_COLUMNS:
            return cls._block
        if cls not in _FUSED:
            _FUSED[cls] = Fused(cls._block)
        return _FUSED[cls]

    @staticmethod
    def temporaries(order: int) -> int:
        """Rough count of block-sized temporaries a block of ``order`` holds at once, beyond a
        few (the block width is divided by it)."""
        return 1

    @staticmethod
    def _keys(order: int) -> tuple[str, ...]:
        raise NotImplementedError

    @staticmethod
    def _block(xb: Tensor, c: Tensor, order: int) -> dict[str, Tensor]:
        """The row sums of ``sums`` over the windows of one column block ``xb`` (with its
        halo), each (n,)."""
        raise NotImplementedError

    @classmethod
    def local_source_terms(cls, x: Tensor, c: Tensor,
                           index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(d_j u2, d_j Lap u2, d_j (x . grad u2)) for the coordinates j in ``index``, each
        (n, m): only the windows i = j - w + 1 .. j that contain x_j contribute, window i with
        x_j at local position k = j - i:
        d_j u2 = sum g_k,  d_j Lap u2 = sum_i sum_a g_aak,
        d_j X = d_j u2 + sum_i sum_a x_a g_ak   (a over the window's coordinates)."""
        n_windows = c.shape[0]
        w = cls.window
        out = [torch.zeros(x.shape[0], index.shape[0], dtype=x.dtype, device=x.device)
               for _ in range(3)]
        for k in range(w):
            i = index - k
            valid = ((i >= 0) & (i < n_windows)).to(x.dtype)
            i = i.clamp(0, n_windows - 1)
            local = [x[:, i + a] for a in range(w)]
            g, lap, x_mixed = cls._local_derivatives(local, c[i], k)
            out[0] += valid * g
            out[1] += valid * lap
            out[2] += valid * (g + x_mixed)
        return out[0], out[1], out[2]

    @staticmethod
    def _local_derivatives(local: list[Tensor], c: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """For one window function c g(local) and the local coordinate k:
        (g_k, sum_a g_aak, sum_a x_a g_ak)."""
        raise NotImplementedError


class WindowSums:
    """The row sums of :meth:`ManyBody.sums`, fed column block by column block from left to
    right (streamed points, :mod:`pinnbench.maths.streaming`), so the batch is never whole.

    ``add(xb, a)`` takes the columns [a, a + width) of x. The windows that start in
    [a, a + width - w + 1) lie inside the block and go through the same block function as
    ``sums`` (compiled at large d); the w - 1 windows that straddle the previous block and this
    one (starting at a - w + 1 .. a - 1) are summed from the w - 1 columns carried over from
    the previous block and the first w - 1 of this one, eagerly (an (n, 2w - 2) slice). Every
    window is summed exactly once (blocks of any width, also narrower than the halo), so the
    totals equal ``sums`` of the concatenated blocks up to the order of the additions
    (rounding)."""

    def __init__(self, body: type[ManyBody], c: Tensor, order: int, n_rows: int, n_cols: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.body, self.c, self.order = body, c, order
        self.block = body.block_function(n_cols)
        # the first block's sums become the accumulators (0 + s = s: no zeros, no first add)
        self.out: dict[str, Tensor] | None = None
        self._empty = (n_rows, dtype, device)
        self.carry: Tensor | None = None
        self.next_column = 0

    def add(self, xb: Tensor, a: int) -> None:
        halo = self.body.window - 1
        width = xb.shape[1]
        if a != self.next_column:
            raise ValueError(f"blocks must come left to right without gaps: expected column "
                             f"{self.next_column}, got {a}")
        if halo:
            # the windows ending in this block that start before it: from the m <= halo columns
            # carried over and the first min(width, halo) of this block
            pre = self.carry if self.carry is not None else xb[:, :0]
            m = pre.shape[1]
            straddling = m + min(width, halo) - halo
            if straddling > 0:
                joint = torch.cat([pre, xb[:, :halo]], dim=1)
                self._add(self.body._block(joint, self.c[a - m:a - m + straddling], self.order))
        inside = width - halo
        if inside > 0:
            self._add(self.block(xb, self.c[a:a + inside], self.order))
        if halo:
            tail = xb if width >= halo else torch.cat([pre, xb], dim=1)
            self.carry = tail[:, tail.shape[1] - halo:].clone()
        self.next_column = a + width

    def _add(self, part: dict[str, Tensor]) -> None:
        if self.out is None:
            self.out = dict(part)
            return
        for k, v in part.items():
            self.out[k] += v

    def result(self) -> dict[str, Tensor]:
        """The sums over every window (after the last block; zeros if there was none)."""
        if self.out is None:
            n_rows, dtype, device = self._empty
            return {k: torch.zeros(n_rows, dtype=dtype, device=device)
                    for k in self.body._keys(self.order)}
        return self.out


class TwoBody(ManyBody):
    """u2 = sum_{i=1}^{d-1} c_i sin(x_i + cos x_{i+1} + x_{i+1} cos x_i)."""

    window = 2
    name = "two-body"

    @staticmethod
    def temporaries(order: int) -> int:
        return 16 if order == 4 else 1  # window_derivatives(order=4) holds ~40 at once

    @staticmethod
    def _keys(order: int) -> tuple[str, ...]:
        if order not in (0, 2, 4):
            raise ValueError(f"two-body sums exist for order 0, 2 or 4, got {order}")
        return {0: ("u2",), 2: ("u2", "x_grad", "lap"),
                4: ("u2", "x_grad", "lap", "x_hess_x", "x_grad_lap", "bilap")}[order]

    @staticmethod
    def _block(xb: Tensor, c: Tensor, order: int) -> dict[str, Tensor]:
        sx, cx = torch.sin(xb), torch.cos(xb)
        p, q = xb[:, :-1], xb[:, 1:]
        sp, sq, cp, cq = sx[:, :-1], sx[:, 1:], cx[:, :-1], cx[:, 1:]
        phi = p + cq + q * cp
        sphi, cphi = torch.sin(phi), torch.cos(phi)
        del phi
        out = {"u2": sphi @ c}
        if order == 2:
            a = 1.0 - q * sp
            b = cp - sq
            out["x_grad"] = (cphi * (p * a + q * b)) @ c
            out["lap"] = (cphi * (-q * cp - cq) - sphi * (a * a + b * b)) @ c
        elif order == 4:  # every operator acts on a window through its own (p, q) only
            del sphi, cphi
            g = TwoBody.window_derivatives(p, q, 1.0, order=4)
            out["x_grad"] = (p * g["p"] + q * g["q"]) @ c
            out["lap"] = (g["pp"] + g["qq"]) @ c
            out["x_hess_x"] = (p * p * g["pp"] + 2.0 * p * q * g["pq"] + q * q * g["qq"]) @ c
            out["x_grad_lap"] = (p * (g["ppp"] + g["pqq"]) + q * (g["ppq"] + g["qqq"])) @ c
            out["bilap"] = (g["pppp"] + 2.0 * g["ppqq"] + g["qqqq"]) @ c
        return out

    @staticmethod
    def _local_derivatives(local: list[Tensor], c: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        p, q = local
        g = TwoBody.window_derivatives(p, q, c)
        j = "pq"[k]
        lap = g["".join(sorted("pp" + j))] + g["".join(sorted("qq" + j))]
        x_mixed = p * g["".join(sorted("p" + j))] + q * g["".join(sorted("q" + j))]
        return g[j], lap, x_mixed

    @staticmethod
    def window_derivatives(p: Tensor, q: Tensor, c: Tensor | float,
                           order: int = 3) -> dict[str, Tensor]:
        """All partial derivatives of c sin(phi(p, q)) up to ``order`` (3 or 4; keys 'p', 'pq',
        'qqq', 'ppqq'...), by the chain rule (S = sin phi, C = cos phi, sums over the distinct
        splittings of the indices):
        g_a = c C phi_a,  g_ab = c(-S phi_a phi_b + C phi_ab),
        g_abc = c(-C phi_a phi_b phi_c - S (phi_ab phi_c + phi_ac phi_b + phi_bc phi_a) + C phi_abc),
        g_abcd = c(S [phi_a phi_b phi_c phi_d - (phi_ab phi_cd + phi_ac phi_bd + phi_ad phi_bc)
                      - (phi_abc phi_d + phi_abd phi_c + phi_acd phi_b + phi_bcd phi_a)]
                   - C [phi_ab phi_c phi_d + (the 5 other pairs)] + C phi_abcd),
        with phi_pppp = q cos p, phi_pppq = sin p, phi_ppqq = phi_pqqq = 0, phi_qqqq = cos q."""
        sp, cp, sq, cq = torch.sin(p), torch.cos(p), torch.sin(q), torch.cos(q)
        phi = p + cq + q * cp
        s, co = torch.sin(phi) * c, torch.cos(phi) * c
        d = {"p": 1.0 - q * sp, "q": cp - sq, "pp": -q * cp, "pq": -sp, "qq": -cq,
             "ppp": q * sp, "ppq": -cp, "pqq": 0.0, "qqq": sq,
             "pppp": q * cp, "pppq": sp, "ppqq": 0.0, "pqqq": 0.0, "qqqq": cq}

        def f(*idx: str):  # phi_{idx}
            return d["".join(sorted("".join(idx)))]

        out: dict[str, Tensor] = {}
        for a in "pq":
            out[a] = co * d[a]
        for a, b in ("pp", "pq", "qq"):
            out[a + b] = -s * f(a) * f(b) + co * f(a, b)
        for a, b, e in ("ppp", "ppq", "pqq", "qqq"):
            out[a + b + e] = (-co * f(a) * f(b) * f(e)
                              - s * (f(a, b) * f(e) + f(a, e) * f(b) + f(b, e) * f(a))
                              + co * f(a, b, e))
        if order >= 4:
            for a, b, e, h in ("pppp", "pppq", "ppqq", "pqqq", "qqqq"):
                pairs = ((a, b, e, h), (a, e, b, h), (a, h, b, e), (b, e, a, h), (b, h, a, e),
                         (e, h, a, b))
                out[a + b + e + h] = (
                    s * (f(a) * f(b) * f(e) * f(h)
                         - (f(a, b) * f(e, h) + f(a, e) * f(b, h) + f(a, h) * f(b, e))
                         - (f(a, b, e) * f(h) + f(a, b, h) * f(e) + f(a, e, h) * f(b)
                            + f(b, e, h) * f(a)))
                    - co * sum(f(i, j) * f(k) * f(m) for i, j, k, m in pairs)
                    + co * f(a, b, e, h))
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
    def _block(xb: Tensor, c: Tensor, order: int) -> dict[str, Tensor]:
        p, q, r = xb[:, :-2], xb[:, 1:-1], xb[:, 2:]
        psi = p * q * r
        e = torch.exp(psi)
        out = {"u2": e @ c}
        if order == 0:
            return out
        x2 = xb * xb
        p2, q2, r2 = x2[:, :-2], x2[:, 1:-1], x2[:, 2:]
        s2 = q2 * r2 + p2 * r2 + p2 * q2
        e_s2 = e * s2
        out["x_grad"] = 3.0 * ((e * psi) @ c)
        out["lap"] = e_s2 @ c
        if order == 4:
            s1 = p2 + q2 + r2
            out["x_hess_x"] = (e * psi * (9.0 * psi + 6.0)) @ c
            out["x_grad_lap"] = (e_s2 * (3.0 * psi + 4.0)) @ c
            out["bilap"] = (e * (s2 * s2 + (8.0 * psi + 4.0) * s1)) @ c
        return out

    @staticmethod
    def _local_derivatives(local: list[Tensor], c: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """g = c e^psi, psi = p q r: psi_a is the product of the other two coordinates,
        psi_ab (a != b) the third, psi_aa = 0, so g_ak = g (psi_a psi_k + psi_ak) and
        g_aak = g (psi_a^2 psi_k + 2 psi_ak psi_a) (psi_aak = 0)."""
        p, q, r = local
        g = c * torch.exp(p * q * r)
        psi1 = [q * r, p * r, p * q]

        def psi2(a: int, b: int):
            return 0.0 if a == b else local[3 - a - b]

        lap = sum(psi1[a] * psi1[a] * psi1[k] + 2.0 * psi2(a, k) * psi1[a] for a in range(3))
        x_mixed = sum(local[a] * (psi1[a] * psi1[k] + psi2(a, k)) for a in range(3))
        return g * psi1[k], g * lap, g * x_mixed
