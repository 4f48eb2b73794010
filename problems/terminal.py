"""Terminal-value problems of the SDGD / STDE suites: HJB-Lin and Black-Scholes-Barenblatt.

Both are backward parabolic equations on x in the unit ball B^d, t in [0, T], T = 1, with a
terminal condition u(x, T) = g(x) and a closed-form solution (docs/domain.md §5: the equations,
constants, terminal data and solutions are taken from there; the papers' text was not re-read
here, and the domain is the one of the suite's other time-dependent problems). Points are
(n, d + 1), time last; the sampler is the one of the other time-dependent problems (x
radius-uniform in B^d, x = r g / ||g||, r ~ U[0, 1]; t ~ U[0, 1]). s = ||x||^2, tau = T - t.

HJB-Lin (Hu, Shukla, Karniadakis, Kawaguchi, "Tackling the curse of dimensionality with
physics-informed neural networks", Neural Networks 2024 (SDGD), its HJB equation with a linear
solution; also in Shi et al., "Stochastic Taylor derivative estimator", NeurIPS 2024 (STDE)):

    u_t + Lap u - (1/d) sum_i |du/dx_i|^c = -2,   c = 1.75,   u(x, T) = g(x) = sum_i x_i,
    u* = sum_i x_i + T - t   (u*_t = -1, Lap u* = 0, du*/dx_i = 1, so -1 + 0 - 1 = -2).
    Terms: dt (coef 1), laplacian (coef 1), grad_power_mean (coef -1, c = gradient_exponent);
    f = -2.

Black-Scholes-Barenblatt (SDGD and STDE, after Raissi, "Forward-backward stochastic neural
networks", 2018):

    u_t + (sigma^2 / 2) sum_i x_i^2 d^2u/dx_i^2 - r (u - x . grad u) = 0,   r = 0.05, sigma = 0.4,
    u(x, T) = g(x) = ||x||^2,   u* = exp((r + sigma^2) (T - t)) ||x||^2
    (u*_t = -(r + sigma^2) u*, sum_i x_i^2 d^2u*/dx_i^2 = 2 u*, x . grad u* = 2 u*).
    Terms: dt (coef 1), weighted_laplacian (coef sigma^2/2), drift (coef r); pointwise -r u;
    f = 0.

Hard constraint (both): u = A N + B with A = (T - t)(1 - s): the terminal condition at t = T and
the Dirichlet condition u = u* on the sphere ||x|| = 1 hold exactly for any network N.
- HJB-Lin: B = sum_i x_i + tau s^2 (= g at t = T, = u* on the sphere; u* - B = A (1 + s)).
- BSB: B = s + (e^{k tau} - 1) s^2, k = r + sigma^2 (u* - B = (e^{k tau} - 1) s (1 - s)).

Well-posedness. The published setups impose the terminal condition only (u = (T - t) N + g).
On R^d x [0, T] that determines u (a Cauchy problem with growth conditions), but a PINN samples
a bounded set: on the ball, u* + w with w a solution of the linearised equation with zero
terminal data and any non-zero lateral data has zero residual at every sampled point. With the
lateral Dirichlet condition added here the solution is unique: the difference w of two
solutions satisfies, in reversed time, a linear parabolic equation w_tau = a Lap w + b . grad w
+ c w (HJB-Lin: b bounded because |p|^c is C^1 for c > 1; BSB: the degenerate diffusion
(sigma^2/2) x_i^2, drift r x, c = -r <= 0), with zero data on the whole parabolic boundary, so
w = 0 by the weak maximum principle (which needs only a positive semidefinite diffusion).
Existence: u* is a solution. Hence ``well_posed = True`` with both conditions listed.

Cost: every closed form is a bounded-memory row reduction (:mod:`._chunked`), O(d) per point.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from pinnbench.maths.directions import Directions
from pinnbench.maths.jets import Jet
from pinnbench.maths.problem import LinearTerm, Operator
from pinnbench.maths.problem_registry import register_problem
from pinnbench.problems._chunked import row_sum, spatial_sqnorm_jet, time_jet
from pinnbench.problems.time_dependent import TimeBallProblem

#: terminal time (t is sampled in [0, T])
T_END = 1.0


class TerminalBallProblem(TimeBallProblem):
    """Unit ball x [0, T] with the condition at t = T (backward in time)."""

    condition_time = T_END
    #: not sharded unless the family says so (HJB-Lin does; BSB's drift is reverse mode in x:
    #: pinnbench/cells/sharded_ball.py, docs/sharding.md)
    supports_sharding = False
    domain = "unit ball ||x|| < 1, t in [0, T], T = 1"
    boundary_conditions = ("u = g at t = T (terminal)", "u = u* on the sphere (lateral)")
    well_posed = True
    ill_posed_reason = ""

    def _tau(self, x: Tensor) -> Tensor:
        return T_END - x[:, -1]

    def _a(self, s: Tensor, tau: Tensor) -> Tensor:
        return tau * (1.0 - s)

    def _sq_tau_jets(self, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        s = spatial_sqnorm_jet(x, dirs, order, time_last=True)
        return s, T_END - time_jet(x, dirs, order)


def spatial_sum_jet(x: Tensor, dirs: Directions, order: int, dim: int) -> Jet:
    """Jet of sum_{i < dim} x_i (time last, excluded): [sum x, sum_{i<dim} v_i], (n, 1), (1, V)."""
    total = row_sum(x, lambda c: c, dim).unsqueeze(1)
    ones = torch.ones(1, x.shape[1], dtype=x.dtype, device=x.device)
    slope = dirs.dot(ones) - dirs.component(-1).to(x.dtype).unsqueeze(0)
    return Jet([total, slope], order)


class HJBLin(TerminalBallProblem):
    family = "hjb-lin"
    gradient_exponent = 1.75
    operator = Operator((LinearTerm("dt", 1.0), LinearTerm("laplacian", 1.0),
                         LinearTerm("grad_power_mean", -1.0)))

    def _sum_x(self, x: Tensor) -> Tensor:
        return row_sum(x, lambda c: c, self.dim)

    def exact(self, x: Tensor) -> Tensor:
        return self._sum_x(x) + self._tau(x)

    def source(self, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), -2.0, dtype=x.dtype, device=x.device)

    def ansatz(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, _ = self._s_t(x)
        tau = self._tau(x)
        return self._a(s, tau), self._sum_x(x) + tau * s * s

    def ansatz_jet(self, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        s, tau = self._sq_tau_jets(x, dirs, order)
        return tau * (1.0 - s), spatial_sum_jet(x, dirs, order, self.dim) + tau * s * s

    # -- the closed forms from sums over the coordinates (a sharded cell, docs/sharding.md) -------
    #: its d-sized parts are s, t, sum_i x_i and, in the jets, x . v, ||v||^2, v_t, sum_i v_i;
    #: grad_power_mean takes first derivatives along sampled e_j (jets or reverse mode in the
    #: first layer's pre-activations, never in x), each coordinate owned by one rank
    supports_sharding = True

    def coordinate_sums(self, x: Tensor) -> dict[str, Tensor]:
        return {"x": row_sum(x, lambda c: c)}

    def coordinate_jet_sums(self, x: Tensor, dirs: Directions, order: int,
                            n_cols: int) -> list[Tensor]:
        """[sum_{i < n_cols} v_i] (1, V): the slope of sum_i x_i along each direction."""
        ones = torch.ones(1, x.shape[1], dtype=x.dtype, device=x.device)
        ones[:, n_cols:] = 0.0
        return [dirs.dot(ones)]

    def exact_from(self, s: Tensor, t: Tensor, sums: dict[str, Tensor]) -> Tensor:
        return sums["x"] + (T_END - t)

    def source_from(self, sums: dict[str, Tensor], s: Tensor, t: Tensor) -> Tensor:
        return torch.full_like(t, -2.0)

    def ansatz_from(self, s: Tensor, t: Tensor, sums: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        tau = T_END - t
        return self._a(s, tau), sums["x"] + tau * s * s

    def ansatz_jet_of(self, s: Jet, t: Jet, sums: dict[str, Tensor],
                      jet_sums: Sequence[Tensor], order: int) -> tuple[Jet, Jet]:
        tau = T_END - t
        (slope,) = jet_sums
        return tau * (1.0 - s), Jet([sums["x"].unsqueeze(1), slope], order) + tau * s * s


class BlackScholesBarenblatt(TerminalBallProblem):
    family = "bsb"
    rate = 0.05
    volatility = 0.4
    operator = Operator((LinearTerm("dt", 1.0),
                         LinearTerm("weighted_laplacian", 0.5 * volatility**2),
                         LinearTerm("drift", rate)), pointwise="-r u")

    @property
    def growth(self) -> float:
        """k = r + sigma^2: u* = e^{k (T - t)} ||x||^2."""
        return self.rate + self.volatility**2

    def exact(self, x: Tensor) -> Tensor:
        s, _ = self._s_t(x)
        return torch.exp(self.growth * self._tau(x)) * s

    def source(self, x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def pointwise(self, u: Tensor) -> Tensor:
        return -self.rate * u

    def ansatz(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, _ = self._s_t(x)
        tau = self._tau(x)
        return self._a(s, tau), s + torch.expm1(self.growth * tau) * s * s

    def ansatz_jet(self, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        s, tau = self._sq_tau_jets(x, dirs, order)
        return tau * (1.0 - s), s + ((tau * self.growth).exp() - 1.0) * s * s


register_problem("hjb-lin-v1", HJBLin)
register_problem("bsb-v1", BlackScholesBarenblatt)
