"""Biharmonic equation with the three-body solution on an annulus (HTE's fourth-order suite).

Source: Hu et al., "Hutchinson trace estimation for high-dimensional and high-order
physics-informed neural networks" (HTE, CMAME 2024), DOMAIN.md §5:

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
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from pinnbench.directions import Directions
from pinnbench.jets import Jet
from pinnbench.problem import LinearTerm, Operator, Problem, radius_uniform_ball
from pinnbench.problem_registry import register_problem
from pinnbench.problems._chunked import spatial_sqnorm_jet, sqnorm
from pinnbench.problems._many_body import ThreeBody

R_INNER, R_OUTER = 1.0, 2.0


class BiharmonicThreeBody(Problem):
    family = "biharmonic-3body"
    order = 4
    min_dim = 3
    operator = Operator((LinearTerm("bilaplacian"),))
    domain = "annulus 1 < ||x|| < 2"

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
        return (1.0 - s) * (4.0 - s), Jet([torch.zeros(x.shape[0], 1, dtype=x.dtype,
                                                        device=x.device)], order)

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


register_problem("biharmonic-3body-v1", BiharmonicThreeBody)
