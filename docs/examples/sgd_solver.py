"""example-sgd: plain stochastic gradient descent on the PINN residual loss, with the operator's
linear terms estimated by STDE (Shi et al., NeurIPS 2024), the base's default estimator. A whole
solver plugin in one file:
``pinnbench run --import docs/examples/sgd_solver.py --solvers example-sgd[lr=1e-7]``
(the loss is ~1e7 at d = 100 on poisson-2body-v1: plain SGD needs a tiny step; lr=1e-6 diverges).

The base (pinnbench.solver.Solver) binds the problem, the model and the generator, makes the
parameters trainable, counts the steps, draws the step's points and probes (``self.draw()``,
timed apart) and forms the loss (``self.residual_loss``); a solver only says how it updates."""

import torch

from pinnbench.solver import Param, Solver, register_solver


@register_solver
class SGD(Solver):
    name = "example-sgd"
    parameters = {"lr": Param(1e-7, "step size", check=lambda v: v > 0, check_text="a number > 0")}

    def update(self):
        loss = self.residual_loss(self.draw())  # mean (L_hat u - f)^2 at fresh points
        grads = torch.autograd.grad(loss, self.model.params)
        with torch.no_grad():
            for p, g in zip(self.model.params, grads):
                p.sub_(self.lr * g)
        return float(loss.detach())
