"""zo: naive zeroth-order PINN training, two-point SPSA with MeZO's in-place seed trick.

Each step draws a seed; z ~ N(0, I_P) over all parameters is regenerated from it tensor by tensor
and column chunk by column chunk (:class:`pinnbench.perturbation.GaussianMatrix`), never held
whole (Malladi et al., "Fine-tuning language models with just forward passes", NeurIPS 2023):

    theta += eps z;  L+ = L(theta; omega_1)
    theta -= 2 eps z; L- = L(theta; omega_2)
    theta += eps z                                  (restore; not bit-exact in floating point)
    q = (L+ - L-) / (2 eps);  theta -= lr q z       (averaged over ``q`` directions)

with the spatial operator from a forward-only estimator (STDE jets, or finite differences) under
``torch.no_grad()``. The two evaluations use INDEPENDENT spatial randomness omega_1, omega_2
(different collocation points and probes): this is the naive combination of DOMAIN.md §3, whose
quotient carries [L(theta; omega_1) - L(theta; omega_2)] / (2 eps) = O(1/eps) noise. It is the
baseline that sdze's common random numbers fix. Optimizer state: one seed per direction.
"""

from __future__ import annotations

import torch

from pinnbench.perturbation import Direction, draw_seed
from pinnbench.solver import Solver, register_solver
from pinnbench.solvers._common import (QuotientScale, estimator_options, residual_loss,
                                       step_size, zeroth_order_parameters)


@register_solver
class ZO(Solver):
    name = "zo"
    parameters = zeroth_order_parameters(lr=1e-3, q=1)

    def setup(self, problem, model, generator: torch.Generator) -> None:
        self.problem, self.model, self.generator = problem, model, generator
        for p in model.params:
            p.requires_grad_(False)
        self.t = 0
        self._scale = QuotientScale() if self.params["normalize"] else None
        self._opts = estimator_options(self.params["dist"])

    def _loss(self) -> float:
        x = self.problem.sample_interior(self.params["points"], self.generator)
        f = self.problem.source(x)
        return float(residual_loss(self.problem, self.model, x, f, self.params["estimator"],
                                   self.generator, self.params["probes"], self._opts))

    @torch.no_grad()
    def step(self) -> float:
        params, eps, nq = self.model.params, self.params["eps"], self.params["q"]
        bases = [None] * len(params)
        dirs, quotients, losses = [], [], []
        for _ in range(nq):
            d = Direction(params, draw_seed(self.generator), bases)
            d.add_to_(params, eps)
            plus = self._loss()
            d.add_to_(params, -2.0 * eps)
            minus = self._loss()
            d.add_to_(params, eps)
            dirs.append(d)
            quotients.append((plus - minus) / (2.0 * eps))
            losses.append(0.5 * (plus + minus))
        if self._scale is not None:
            quotients = self._scale(quotients)
        lr = step_size(self.params["lr"], self.params["decay_steps"], self.t)
        for d, c in zip(dirs, quotients):
            d.add_to_(params, -lr * c / nq)
        self.t += 1
        return sum(losses) / nq
