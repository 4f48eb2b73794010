"""Time-dependent problems with closed-form solutions: heat (PINNacle) and wave.

Points are (n, d + 1), time last, t in [0, 1], x in the unit ball; the sampler draws x
radius-uniformly (x = r g / ||g||, r ~ U[0, 1], as for the ball problems) and t ~ U[0, 1]
independently. s = ||x||^2 is over the spatial coordinates. The residual is
``sum coef * term + pointwise(u) - f`` (:meth:`pinnbench.maths.problem.Problem.residual`).

Heat (PINNacle, Hao et al. 2023, "high-dimensional heat" HNd; docs/domain.md §5):
    u_t = (1/d) Lap u - (1/d) s e^{s/2 + t},   u* = e^{s/2 + t}
    (Lap u* = (d + s) u*, so u_t - (1/d) Lap u* = -(s/d) u*.)
    Terms: dt (coef 1), laplacian (coef -1/d);  f = -(s/d) e^{s/2 + t}.
    Hard constraint: A = t (1 - s), B = e^{s/2} + e^{1/2}(e^t - 1): B = u* at t = 0 and on
    ||x|| = 1, but B != u* inside, so the network has something to learn.

Wave (docs/domain.md §5): u_tt = Lap u,  u* = cosh(t) sum_i sinh(x_i).
    Terms: dtt (coef 1), laplacian (coef -1);  f = 0.
    Hard constraint: A = t^2 (1 - s), B = (sum_i sinh x_i)(1 + (cosh t - 1) s): B = u* and
    u_t = 0 at t = 0 (A and B_t vanish there), B = u* on ||x|| = 1, B != u* inside.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from pinnbench.maths.directions import Directions
from pinnbench.maths.jets import Jet
from pinnbench.maths.problem import LinearTerm, Operator, Problem, radius_uniform_ball
from pinnbench.maths.problem_registry import register_problem
from pinnbench.problems._chunked import (row_sum, spatial_power_sums, spatial_sqnorm_jet, sqnorm,
                                         time_jet)


class TimeBallProblem(Problem):
    """Space-time cylinder: unit ball x [0, 1], time last."""

    time_dependent = True
    domain = "unit ball ||x|| < 1, t in [0, 1]"
    boundary_conditions = ("u = u* on the sphere", "u = u* at t = 0")
    #: the time slice where the ansatz imposes u = u* (0: initial condition; T: terminal)
    condition_time = 0.0
    well_posed = True
    ill_posed_reason = ""

    def sample_interior(self, n: int, generator: torch.Generator) -> Tensor:
        x = radius_uniform_ball(n, self.dim, generator, dtype=self.dtype, device=self.device)
        t = torch.rand(n, 1, generator=generator, dtype=self.dtype, device=self.device)
        return torch.cat([x, t], dim=1)

    def _s_t(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return sqnorm(x, self.dim), x[:, -1]

    # -- the closed forms from sums over the coordinates (a sharded cell, docs/sharding.md) -------
    #: the family's d-sized parts are s = ||x||^2, t and the sums of ``coordinate_sums``; the
    #: unsharded methods above compute them from x and call the ``*_from`` methods below (the same
    #: operations, so the same numbers), a sharded cell sums them over its ranks first
    supports_sharding = True
    radii = (0.0, 1.0)

    def coordinate_sums(self, x: Tensor) -> dict[str, Tensor]:
        """The family's sums over the spatial coordinates ``x`` (n, k) besides s, each (n,):
        summed over column blocks they give the whole row's."""
        return {}

    def coordinate_jet_sums(self, x: Tensor, dirs: Directions, order: int,
                            n_cols: int) -> list[Tensor]:
        """The family's sums over the first ``n_cols`` (spatial) columns of ``x`` along the
        directions, each (n, V), besides x . v and ||v||^2 (for :meth:`ansatz_jet_of`)."""
        return []

    def ansatz_jet_of(self, s: Jet, t: Jet, sums: dict[str, Tensor],
                      jet_sums: Sequence[Tensor], order: int) -> tuple[Jet, Jet]:
        """(A, B) jets from the jets of s and t and the reduced sums."""
        raise NotImplementedError


class Heat(TimeBallProblem):
    family = "heat"
    # the laplacian coefficient is -1/d: the class attribute shows d = 1, each instance its own d
    operator = Operator((LinearTerm("dt", 1.0), LinearTerm("laplacian", -1.0)))

    def __init__(self, dim: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(dim, *args, **kwargs)
        self.operator = Operator((LinearTerm("dt", 1.0), LinearTerm("laplacian", -1.0 / self.dim)))

    def exact(self, x: Tensor) -> Tensor:
        return self.exact_from(*self._s_t(x), {})

    def source(self, x: Tensor) -> Tensor:
        return self.source_from({}, *self._s_t(x))

    def ansatz(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.ansatz_from(*self._s_t(x), {})

    def ansatz_jet(self, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        s = spatial_sqnorm_jet(x, dirs, order, time_last=True)
        t = time_jet(x, dirs, order)
        return self.ansatz_jet_of(s, t, {}, [], order)

    def exact_from(self, s: Tensor, t: Tensor, sums: dict[str, Tensor]) -> Tensor:
        return torch.exp(0.5 * s + t)

    def source_from(self, sums: dict[str, Tensor], s: Tensor, t: Tensor) -> Tensor:
        return -(s / self.dim) * torch.exp(0.5 * s + t)

    def ansatz_from(self, s: Tensor, t: Tensor, sums: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return t * (1.0 - s), torch.exp(0.5 * s) + math.exp(0.5) * torch.expm1(t)

    def ansatz_jet_of(self, s: Jet, t: Jet, sums: dict[str, Tensor],
                      jet_sums: Sequence[Tensor], order: int) -> tuple[Jet, Jet]:
        return t * (1.0 - s), (s * 0.5).exp() + (t.exp() - 1.0) * math.exp(0.5)


class Wave(TimeBallProblem):
    family = "wave"
    boundary_conditions = TimeBallProblem.boundary_conditions + ("u_t = 0 at t = 0",)
    operator = Operator((LinearTerm("dtt", 1.0), LinearTerm("laplacian", -1.0)))

    def _sum_sinh(self, x: Tensor) -> Tensor:
        return row_sum(x, torch.sinh, self.dim)

    def exact(self, x: Tensor) -> Tensor:
        return self.exact_from(None, x[:, -1], {"sinh": self._sum_sinh(x)})

    def source(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def ansatz(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._s_t(x)
        return self.ansatz_from(s, t, {"sinh": self._sum_sinh(x)})

    def ansatz_jet(self, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        s = spatial_sqnorm_jet(x, dirs, order, time_last=True)
        t = time_jet(x, dirs, order)
        return self.ansatz_jet_of(s, t, {"sinh": self._sum_sinh(x)},
                                  self.coordinate_jet_sums(x, dirs, order, self.dim), order)

    def coordinate_sums(self, x: Tensor) -> dict[str, Tensor]:
        return {"sinh": row_sum(x, torch.sinh)}

    def coordinate_jet_sums(self, x: Tensor, dirs: Directions, order: int,
                            n_cols: int) -> list[Tensor]:
        """sum_{i<n_cols} sinh^(k)(x_i) v_i^k for k = 1..order, with sinh^(k) = sinh for even
        k, cosh for odd k (time excluded), in bounded memory."""
        fns = [torch.cosh if k % 2 else torch.sinh for k in range(1, order + 1)]
        return spatial_power_sums(x, fns, dirs, n_cols)

    def exact_from(self, s: Tensor | None, t: Tensor, sums: dict[str, Tensor]) -> Tensor:
        return torch.cosh(t) * sums["sinh"]

    def source_from(self, sums: dict[str, Tensor], s: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def ansatz_from(self, s: Tensor, t: Tensor, sums: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return t * t * (1.0 - s), sums["sinh"] * (1.0 + (torch.cosh(t) - 1.0) * s)

    def ansatz_jet_of(self, s: Jet, t: Jet, sums: dict[str, Tensor],
                      jet_sums: Sequence[Tensor], order: int) -> tuple[Jet, Jet]:
        """Jet of sum_i sinh(x_i): coefficient k is sum_i sinh^(k)(x_i) v_i^k / k!
        (``jet_sums``, :meth:`coordinate_jet_sums`)."""
        coeffs = [sums["sinh"].unsqueeze(1)]
        coeffs += [y / math.factorial(k) for k, y in enumerate(jet_sums, start=1)]
        return t * t * (1.0 - s), Jet(coeffs, order) * (1.0 + (t.cosh() - 1.0) * s)


register_problem("heat-v1", Heat)
register_problem("wave-v1", Wave)
