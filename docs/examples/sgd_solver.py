"""example-sgd: plain stochastic gradient descent on the PINN residual loss, with the operator's
linear terms estimated by STDE (Shi et al., NeurIPS 2024). A whole solver plugin in one file:
``pinnbench run --import docs/examples/sgd_solver.py --solvers example-sgd[lr=1e-7]``
(the loss is ~1e7 at d = 100 on poisson-2body-v1: plain SGD needs a tiny step; lr=1e-6 diverges)."""

import torch

from pinnbench.estimators import estimate_terms
from pinnbench.solver import Param, Solver, register_solver


@register_solver
class SGD(Solver):
    name = "example-sgd"
    parameters = {"lr": Param(1e-7, "step size", check=lambda v: v > 0, check_text="a number > 0")}

    def setup(self, problem, model, generator):
        self.problem, self.model, self.generator = problem, model, generator
        for p in model.params:
            p.requires_grad_(True)

    def step(self):
        x = self.problem.sample_interior(self.params["points"], self.generator)
        u, terms = estimate_terms(self.model, x, "stde", generator=self.generator,
                                  probes=self.params["probes"])
        loss = self.problem.residual(terms, u, x).pow(2).mean()  # mean (L u - f)^2
        grads = torch.autograd.grad(loss, self.model.params)
        with torch.no_grad():
            for p, g in zip(self.model.params, grads):
                p.sub_(self.params["lr"] * g)
        return float(loss.detach())
