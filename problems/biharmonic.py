"""Biharmonic equation with the three-body solution on an annulus (HTE's fourth-order suite).

Source: Hu et al., "Hutchinson trace estimation for high-dimensional and high-order
physics-informed neural networks" (HTE, CMAME 2024), docs/domain.md §5:

    Lap^2 u = f  on the annulus 1 < ||x|| < 2,   u = 0 on both spheres,
    u* = A(x) u2(x),  A = (1 - s)(4 - s),  s = ||x||^2,  u2 = sum_{i<d-1} c_i exp(x_i x_{i+1} x_{i+2}),

c_i ~ N(0, 1) from the seed. The hard constraint is u = A N (B = 0). Note that it enforces the
Dirichlet condition only: a fourth-order problem needs a second boundary condition (normal
derivative or Laplacian), which this published setting leaves to the residual; u* itself has a
non-zero normal derivative on both spheres, so A^2 would not do.

Closed-form source, O(d) per point. With grad A = (4s - 10) x, Hess A = (4s - 10) I + 8 x x^T,
Lap A = (4d + 8) s - 10d, grad Lap A = (8d + 16) x, Lap^2 A = (8d + 16) d, and the product rule
Lap^2(A u) = A Lap^2 u + 4 grad A . grad Lap u + 2 Lap A Lap u + 4 Hess A : Hess u
             + 4 grad Lap A . grad u + u Lap^2 A:

    f = A Lap^2 u2 + 4(4s - 10) x.grad Lap u2 + 2 Lap A Lap u2
        + 4[(4s - 10) Lap u2 + 8 x^T Hess u2 x] + 4(8d + 16) x.grad u2 + (8d + 16) d u2,

with the three-body sums of :mod:`pinnbench.problems._many_body` (checked against autodiff at
d = 5, 8 in tests/test_problems.py). Sampler: radius-uniform, r ~ U[1, 2], x = r g / ||g||.

**biharmonic-3body-v1 is ill-posed** (``well_posed = False``), kept only to reproduce the
published setup: the ansatz u = A N enforces u = 0 only, and Lap^2 u = f then has a family of
zero-residual solutions u* + alpha w, with w a radial biharmonic function (a combination of
1, r^2, r^(2-d), r^(4-d)) vanishing at r = 1 and r = 2; w / A is bounded, so u* + alpha w is in
the ansatz, and a solver can reach zero loss at any error (docs/problems.md).

**biharmonic-clamped-3body-v1** is the well-posed version: clamped conditions u = du/dn = 0 on
both spheres, exact solution and hard constraint with the square of the same factor,

    u* = A(x)^2 u2(x),   u = A(x)^2 N(x),

so u and its gradient vanish on both spheres for every N; the only radial biharmonic function
with w = w' = 0 at r = 1 and r = 2 is w = 0 (tests/test_problems.py). The source is the product
rule above for a radial factor Q = q(s) (here q = A^2), with grad Q = 2 q1 x,
Hess Q = 2 q1 I + 4 q2 x x^T, Lap Q = h(s) = 2 d q1 + 4 s q2, grad Lap Q = 2 h1 x,
h1 = (2d + 4) q2 + 4 s q3, Lap^2 Q = 2 d h1 + 4 s h2, h2 = (2d + 8) q3 + 4 s q4 (qk, hk: the
k-th derivatives in s):

    f = q Lap^2 u2 + 8 q1 x.grad Lap u2 + (2 h + 8 q1) Lap u2 + 16 q2 x^T Hess u2 x
        + 8 h1 x.grad u2 + (Lap^2 Q) u2

(:func:`radial_product_bilaplacian`; with q = A it is the v1 source above). O(d) per point with
the same blocked three-body sums, so memory stays bounded at d = 10^7.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pinnbench.maths.directions import Directions
from pinnbench.maths.jets import Jet
from pinnbench.maths.problem import LinearTerm, Operator, Problem, radius_uniform_ball
from pinnbench.maths.problem_registry import register_problem
from pinnbench.problems._chunked import spatial_sqnorm_jet, sqnorm
from pinnbench.problems._many_body import ManyBody, ThreeBody, TwoBody
from pinnbench.problems.ball import SQRT_DIM, resolve_radius

R_INNER, R_OUTER = 1.0, 2.0


def radial_product_bilaplacian(q: list, s: Tensor, dim: int, t: dict[str, Tensor]) -> Tensor:
    """Lap^2 (Q g) for a radial factor Q = q(s), from ``q`` = [q, q1, q2, q3, q4] (q and its
    derivatives in s = ||x||^2: tensors (n,) or numbers) and the sums ``t`` of g (the keys of
    ``ManyBody.sums(x, c, 4)``); the formula of the module docstring."""
    q0, q1, q2, q3, q4 = q
    h = 2 * dim * q1 + 4.0 * s * q2
    h1 = (2 * dim + 4) * q2 + 4.0 * s * q3
    h2 = (2 * dim + 8) * q3 + 4.0 * s * q4
    bilap_q = 2 * dim * h1 + 4.0 * s * h2
    return (q0 * t["bilap"] + 8.0 * q1 * t["x_grad_lap"] + (2.0 * h + 8.0 * q1) * t["lap"]
            + 16.0 * q2 * t["x_hess_x"] + 8.0 * h1 * t["x_grad"] + bilap_q * t["u2"])


class BiharmonicThreeBody(Problem):
    """The published (HTE) setup: Lap^2 u = f, u = A N; ill-posed (module docstring)."""

    family = "biharmonic-3body"
    order = 4
    min_dim = 3
    operator = Operator((LinearTerm("bilaplacian"),))
    domain = "annulus 1 < ||x|| < 2"
    annulus = (R_INNER, R_OUTER)
    boundary_conditions = ("u = 0 on both spheres",)
    well_posed = False
    ill_posed_reason = ("the ansatz enforces u = 0 only: u* + alpha w, w radial biharmonic with "
                        "w(1) = w(2) = 0, has zero residual for every alpha (use "
                        "biharmonic-clamped-3body-v1)")

    def __init__(self, dim: int, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", id: str = "", **options: Any) -> None:
        super().__init__(dim, seed, dtype, device, id, **options)
        c = torch.randn(ThreeBody.n_coefficients(self.dim),
                        generator=self.cpu_generator("coefficients"), dtype=torch.float64)
        self.coefficients = c.to(device=self.device, dtype=self.dtype)

    @staticmethod
    def _a(s: Tensor) -> Tensor:
        return (1.0 - s) * (4.0 - s)

    def ansatz(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._a(sqnorm(x)), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def ansatz_jet(self, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        s = spatial_sqnorm_jet(x, dirs, order)
        return (1.0 - s) * (4.0 - s), Jet.constant(0.0, order)

    def exact(self, x: Tensor) -> Tensor:
        return self._a(sqnorm(x)) * ThreeBody.sums(x, self.coefficients, 0)["u2"]

    def source(self, x: Tensor) -> Tensor:
        d = self.dim
        s = sqnorm(x)
        t = ThreeBody.sums(x, self.coefficients, 4)
        lap_a = (4 * d + 8) * s - 10 * d
        return (self._a(s) * t["bilap"] + 4.0 * (4.0 * s - 10.0) * t["x_grad_lap"]
                + 2.0 * lap_a * t["lap"] + 4.0 * ((4.0 * s - 10.0) * t["lap"] + 8.0 * t["x_hess_x"])
                + 4.0 * (8 * d + 16) * t["x_grad"] + float((8 * d + 16) * d) * t["u2"])

    def sample_interior(self, n: int, generator: torch.Generator) -> Tensor:
        return radius_uniform_ball(n, self.dim, generator, r_min=R_INNER, r_max=R_OUTER,
                                   dtype=self.dtype, device=self.device)


class ClampedBiharmonic(Problem):
    """Lap^2 u = f on rho < ||x|| < 2 rho with u = du/dn = 0 on both spheres,
    u* = A^2 u2, u = A^2 N, A = (1 - sigma)(4 - sigma), sigma = ||x||^2 / rho^2
    (option ``radius`` = rho: 1 by default, ``"sqrt-dim"`` for sqrt(d))."""

    body: type[ManyBody] = ManyBody
    order = 4
    operator = Operator((LinearTerm("bilaplacian"),))
    option_names = ("radius",)
    boundary_conditions = ("u = 0 on both spheres", "du/dn = 0 on both spheres")
    well_posed = True
    ill_posed_reason = ""

    def __init__(self, dim: int, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", id: str = "", **options: Any) -> None:
        super().__init__(dim, seed, dtype, device, id, **options)
        self.rho = resolve_radius(options.get("radius", R_INNER), self.dim)
        self.annulus = (self.rho, 2.0 * self.rho)
        scaled = options.get("radius") == SQRT_DIM
        self.domain = (f"annulus {self.rho:g} < ||x|| < {2 * self.rho:g}"
                       + (" (sqrt(d), 2 sqrt(d))" if scaled else ""))
        c = torch.randn(self.body.n_coefficients(self.dim),
                        generator=self.cpu_generator("coefficients"), dtype=torch.float64)
        self.coefficients = c.to(device=self.device, dtype=self.dtype)

    def _q(self, s: Tensor, order: int) -> list:
        """q(s) = A(s / rho^2)^2 and its first ``order`` derivatives in s."""
        sigma = s / self.rho**2
        a, a1 = (1.0 - sigma) * (4.0 - sigma), 2.0 * sigma - 5.0  # A' = 2 sigma - 5, A'' = 2
        q_sigma = [a * a, 2.0 * a * a1, 2.0 * a1 * a1 + 4.0 * a, 12.0 * a1, 24.0][: order + 1]
        return [qk / self.rho ** (2 * k) for k, qk in enumerate(q_sigma)]

    def ansatz(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._q(sqnorm(x), 0)[0], torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def ansatz_jet(self, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        sigma = spatial_sqnorm_jet(x, dirs, order) / self.rho**2
        a = (1.0 - sigma) * (4.0 - sigma)
        return a * a, Jet.constant(0.0, order)

    def exact(self, x: Tensor) -> Tensor:
        return self._q(sqnorm(x), 0)[0] * self.body.sums(x, self.coefficients, 0)["u2"]

    def source(self, x: Tensor) -> Tensor:
        s = sqnorm(x)
        return radial_product_bilaplacian(self._q(s, 4), s, self.dim,
                                          self.body.sums(x, self.coefficients, 4))

    # -- the input dimension sharded (pinnbench.cells.sharded_ball, docs/sharding.md) ------------
    #: A^2, f and u* = A^2 u2 come from s = ||x||^2 and the body's order-4 window sums, which a
    #: sharded cell sums over its ranks
    supports_sharding = True

    @property
    def radii(self) -> tuple[float, float]:
        """The sampler's radius range: r ~ U[rho, 2 rho]."""
        return self.annulus

    def ansatz_from(self, s: Tensor) -> Tensor:
        """The hard-constraint factor q = A^2 from s = ||x||^2."""
        return self._q(s, 0)[0]

    def ansatz_jet_from(self, s: Tensor, xv: Tensor, vsq: Tensor,
                        order: int) -> tuple[Jet, Jet]:
        """:meth:`ansatz_jet` from s = ||x||^2 (n,), x . v (n, V) and ||v||^2 (V,): the jet of
        s is [s, 2 x . v, ||v||^2] (s is quadratic), as ``spatial_sqnorm_jet`` makes it."""
        s_jet = Jet([s.unsqueeze(1), 2.0 * xv, vsq.to(s.dtype).unsqueeze(0)], order)
        sigma = s_jet / self.rho**2
        a = (1.0 - sigma) * (4.0 - sigma)
        return a * a, Jet.constant(0.0, order)

    def source_from(self, t: dict[str, Tensor], s: Tensor) -> Tensor:
        """f from the body's order-4 sums ``t`` and s = ||x||^2 (the product rule of the module
        docstring)."""
        return radial_product_bilaplacian(self._q(s, 4), s, self.dim, t)

    def sample_interior(self, n: int, generator: torch.Generator) -> Tensor:
        return radius_uniform_ball(n, self.dim, generator, r_min=self.rho, r_max=2.0 * self.rho,
                                   dtype=self.dtype, device=self.device)


class ClampedBiharmonicThreeBody(ClampedBiharmonic):
    """Clamped Lap^2 u = f, three-body u2."""

    family = "biharmonic-clamped-3body"
    body = ThreeBody
    min_dim = 3


class ClampedBiharmonicTwoBody(ClampedBiharmonic):
    """Clamped Lap^2 u = f, two-body u2."""

    family = "biharmonic-clamped-2body"
    body = TwoBody
    min_dim = 2


register_problem("biharmonic-3body-v1", BiharmonicThreeBody)
register_problem("biharmonic-clamped-3body-v1", ClampedBiharmonicThreeBody)
register_problem("biharmonic-clamped-2body-v1", ClampedBiharmonicTwoBody)
register_problem("biharmonic-clamped-2body-scaled-v1", ClampedBiharmonicTwoBody, radius=SQRT_DIM)
