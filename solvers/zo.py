"""zo: naive zeroth-order PINN training, two-point SPSA with MeZO's in-place seed trick.

Each step draws a seed; z ~ N(0, I_P) over all parameters is regenerated from it tensor by tensor
and column chunk by column chunk (:class:`pinnbench.solvers._zo_perturbations.GaussianMatrix`),
never held whole (Malladi et al., "Fine-tuning language models with just forward passes",
NeurIPS 2023):

    theta += eps z;  L+ = L(theta; omega_1)
    theta -= 2 eps z; L- = L(theta; omega_2)
    theta += eps z                                  (restore; not bit-exact in floating point)
    q = (L+ - L-) / (2 eps);  theta -= lr q z       (averaged over ``q`` perturbations)

with the spatial operator from a forward-only estimator (STDE jets, or finite differences) under
``torch.no_grad()``. By default (``crns=false``) the two evaluations use INDEPENDENT spatial
randomness omega_1, omega_2 (different collocation points and probes): the naive combination of
docs/domain.md §3, whose quotient carries [L(theta; omega_1) - L(theta; omega_2)] / (2 eps) =
O(1/eps) noise, the baseline that sdze's common random numbers fix. ``crns=true`` is MeZO's own
setting (one batch for both evaluations): CRNS without sdze's subspace, so that a comparison
separates what CRNS buys from what the subspace buys. Momentum (``momentum``, heavy ball) is
dense: P numbers when on (``momentum=0``, naive zo's default, keeps only seeds).

Defaults: the committed defaults study (reports/study-defaults; docs/tuning.md), the protocol
every solver is tuned by: naive zo lr 4.39e-2, eps 1.47e-2, q 5, no momentum; MeZO
(``zo[crns=true]``, tuned apart: a ``variant_defaults`` entry) lr 1.75e-3, eps 1.06e-3, q 12,
momentum 0.9; both decay lr linearly over the cell's budget. The seeds, sampling, quotients and update are those of every zeroth-order solver
(:class:`pinnbench.solvers._zo_step.ZerothOrderSolver`, docs/sdze.md); ``zo[...]`` and
``sdze[subspace=false,...]`` with the same parameters take the same steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pinnbench.search_space import BUDGET
from pinnbench.solver import register_solver
from pinnbench.solvers._parameters import zeroth_order_parameters
from pinnbench.solvers._zo_evaluation import centre_model
from pinnbench.solvers._zo_perturbations import perturbation_seed, z0_seed
from pinnbench.solvers._zo_step import ZerothOrderSolver, ZOStep


@register_solver
class ZO(ZerothOrderSolver):
    name = "zo"
    # defaults: the committed defaults study (reports/study-defaults, docs/tuning.md), the same
    # protocol, trials and rule as every other solver's; MeZO (crns=true) is tuned apart there
    parameters = zeroth_order_parameters(lr=4.39e-2, q=5, momentum=0.0, crns=False, eps=1.47e-2,
                                         decay_steps=BUDGET)
    variant_defaults = {"crns=true": {"lr": 1.75e-3, "eps": 1.06e-3, "momentum": 0.9, "q": 12}}

    def step_cost(self, dim: int, width: int, depth: int):
        """2q evaluations of F1 + H; D per draw (one with CRNS, 2q without); W0 perturbed in
        place and restored (+eps, -2eps, +eps: 3 reads and writes), regenerated for the update
        and updated: 10 W per perturbation; a dense momentum reads and writes m: + 2W."""
        from pinnbench.bench import roofline as rf

        n, v, q = self.points, self.probes, self.q
        w = rf.weight_bytes(dim, width)
        draws = 1 if self.crns else 2 * q
        momentum = 2 * w if self.momentum > 0 else 0.0
        return rf.StepCost(flops=2 * q * (rf.first_layer_flops(n, v, dim, width)
                                          + rf.hidden_flops(n, v, width, depth)),
                           bytes=draws * rf.data_bytes(n, v, dim) + 10 * q * w + momentum)

    def own_seeds(self, step_seed: int) -> list[int]:
        """zo's part of a captured step's schedule (:meth:`generator_seeds`): W0's full
        Gaussian z0 of each perturbation, regenerated four times a step (+eps, -2 eps, +eps in
        :meth:`pair_losses`, then the update), so listed four times."""
        return [z0_seed(perturbation_seed(step_seed, k)) for k in range(self.q)] * 4

    def pair_losses(self, step: ZOStep) -> Tensor:
        """Both losses of each perturbation at theta perturbed in place: +eps z, -2 eps z, then
        +eps z back, one evaluation at a time (W0 itself is moved, so nothing is shared between
        them but the sample under common random numbers)."""
        params = self.model.params
        # streamed data is read only through the cache's reductions: the model at the current
        # (perturbed) theta through the cache; else the model itself
        model = self.model if step.cache is None else centre_model(self.model, step.cache)
        losses = []
        for k, z in enumerate(step.perturbations):
            z.add_to_(params, self.eps)
            losses.append(self.residual_loss(self.sample(step, k, True), model))
            z.add_to_(params, -2.0 * self.eps)
            losses.append(self.residual_loss(self.sample(step, k, False), model))
            z.add_to_(params, self.eps)
        return torch.stack(losses).view(-1, 2)

