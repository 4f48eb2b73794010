"""bp: backpropagation with Adam on the PINN residual loss (the STDE / SDGD / HTE baselines).

Each step draws ``points`` collocation points, estimates the operator's linear terms with
``estimator`` (exact autodiff, SDGD dimension sampling, HTE Hutchinson probes, or STDE Taylor
jets, which backprop then differentiates through), forms the residual loss
mean((L_hat u - f)^2) (``loss=unbiased``: the product of two independent estimates,
docs/domain.md §2), and takes one Adam step (Kingma & Ba 2015) with the step size decayed linearly to 0
over ``decay_steps`` steps, the protocol of the published STDE numbers (Shi et al., NeurIPS 2024:
Adam, lr 1e-3, linear decay, 10k steps, 100 points, 16 probes).

Default estimator: ``stde``, the fastest baseline and the one whose published numbers the
benchmark compares with (its forward jets carry no nested autograd graph, so the backward pass
holds one graph of the jets only).
"""

from __future__ import annotations

import torch

from pinnbench.solver import Param, Solver, register_solver
from pinnbench.estimators import exact_unsupported
from pinnbench.solvers._common import (decay_steps_param, DISTS, ESTIMATORS_BP, estimator_options,
                                       lr_param, residual_loss, step_size)


@register_solver
class BP(Solver):
    name = "bp"
    parameters = {
        "lr": lr_param(1e-3),
        "decay_steps": decay_steps_param(10000),
        "estimator": Param("stde", "spatial estimator of the operator's linear terms",
                           choices=ESTIMATORS_BP),
        "dist": Param("default", "probe distribution for stde (default: the estimator's)",
                      choices=DISTS),
        "loss": Param("biased", "squared residual of one estimate, or the product of two "
                      "independent estimates", choices=("biased", "unbiased")),
    }

    def validate(self) -> None:
        est, dist = self.params["estimator"], self.params["dist"]
        allowed = {"stde": DISTS, "hte": ("default", "rademacher", "gaussian")}.get(est, ("default",))
        if dist not in allowed:
            raise ValueError(f"parameter dist={dist!r} with estimator={est!r}: expected one of "
                             f"{'|'.join(allowed)}")

    def skip(self, problem) -> tuple[bool, str]:
        why = exact_unsupported(problem) if self.params["estimator"] == "exact" else ""
        return bool(why), why

    def setup(self, problem, model, generator: torch.Generator) -> None:
        self.problem, self.model, self.generator = problem, model, generator
        for p in model.params:
            p.requires_grad_(True)
        self.optimizer = torch.optim.Adam(model.params, lr=self.params["lr"])
        self.t = 0
        self._opts = estimator_options(self.params["dist"])

    def step(self) -> float:
        lr = step_size(self.params["lr"], self.params["decay_steps"], self.t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = self.problem.sample_interior(self.params["points"], self.generator)
        with torch.no_grad():
            f = self.problem.source(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss = residual_loss(self.problem, self.model, x, f, self.params["estimator"],
                             self.generator, self.params["probes"], self._opts,
                             unbiased=self.params["loss"] == "unbiased")
        loss.backward()
        self.optimizer.step()
        self.t += 1
        return float(loss.detach())
