"""Pieces shared by the solvers: the PINN residual loss, the step-size schedule, parameters.

Loss (DOMAIN.md §2): with the operator's linear terms estimated by a randomized estimator L_hat,

    biased:    mean_x (L_hat u - f)^2          E = (L u - f)^2 + Var(L_hat u)
    unbiased:  mean_x (L_J u - f)(L_K u - f)   two independent estimates (J, K): E = (L u - f)^2

The biased form is what the published STDE/SDGD/HTE experiments train with.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pinnbench.solver import Param, non_negative, positive

ESTIMATORS_BP = ("exact", "sdgd", "hte", "stde")
ESTIMATORS_FORWARD = ("stde", "fd")
DISTS = ("default", "rademacher", "gaussian", "coordinate")

#: D above which the exact operator (D Hessian-vector products per point) is skipped
EXACT_MAX_DIM = 1000


def lr_param(default: float) -> Param:
    return Param(default, "step size (before the schedule)", **positive("a number > 0"))


def decay_steps_param(default: int) -> Param:
    return Param(default, "linear decay of the step size to 0 over this many steps "
                 "(lr_t = lr * max(0, 1 - t / decay_steps)); 0 keeps it constant",
                 **non_negative("an integer >= 0"))


def step_size(lr: float, decay_steps: int, t: int) -> float:
    """lr_t = lr * max(0, 1 - t / decay_steps), a function of the step index t only (0: constant)."""
    if decay_steps <= 0:
        return lr
    return lr * max(0.0, 1.0 - t / decay_steps)


def estimator_options(dist: str) -> dict:
    return {} if dist == "default" else {"dist": dist}


def terms(model, x: Tensor, method: str, generator: torch.Generator, probes: int,
          opts: dict) -> tuple[Tensor, dict[str, Tensor]]:
    from pinnbench.estimators import estimate_terms

    return estimate_terms(model, x, method=method, generator=generator, probes=probes, **opts)


def residual_loss(problem, model, x: Tensor, source: Tensor, method: str,
                  generator: torch.Generator, probes: int, opts: dict,
                  unbiased: bool = False) -> Tensor:
    """The PINN residual loss at the points x (a 0-d tensor); ``source`` = f(x), precomputed."""
    u, t1 = terms(model, x, method, generator, probes, opts)
    r1 = problem.residual(t1, u, x, source=source)
    if not unbiased:
        return (r1 * r1).mean()
    _, t2 = terms(model, x, method, generator, probes, opts)  # independent: the generator moved on
    r2 = problem.residual(t2, u, x, source=source)
    return (r1 * r2).mean()


NORMALIZE = Param(True, "divide the difference quotients by the root of a running mean of "
                  "their squares (a scalar, Adam-like second moment: O(1) state)")
NORM_DECAY = 0.99


class QuotientScale:
    """Scalar second-moment normalisation of zeroth-order quotients (one number of state).

    v_t = beta2 v_{t-1} + (1 - beta2) mean_k q_k^2,  v_hat = v_t / (1 - beta2^(t+1)),
    q_k <- q_k / sqrt(v_hat). The PINN loss spans many orders of magnitude (at d = 100 the
    two-body source is ~2e3, so the initial loss is ~1e7 and its quotients ~1e6), and a plain
    ZO-SGD step size that is stable at the start is useless later; normalising by a running
    scale of the quotients makes ``lr`` the size of a step per unit of z, like Adam's lr (a
    scalar version of ZO-AdaMM, Chen et al., NeurIPS 2019), without any P-sized buffer."""

    def __init__(self, beta2: float = NORM_DECAY) -> None:
        self.beta2 = beta2
        self.v = 0.0
        self.t = 0

    def __call__(self, quotients: list[float]) -> list[float]:
        mean_sq = sum(c * c for c in quotients) / len(quotients)
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * mean_sq
        self.t += 1
        v_hat = self.v / (1.0 - self.beta2**self.t)
        if not v_hat > 0.0:
            return [0.0 * c for c in quotients]
        s = v_hat**-0.5
        return [c * s for c in quotients]


def zeroth_order_parameters(lr: float, q: int) -> dict[str, Param]:
    """Parameters every zeroth-order solver (zo, sdze) has, with its own lr and q defaults."""
    return {
        "lr": lr_param(lr),
        "decay_steps": decay_steps_param(0),
        "eps": Param(1e-3, "perturbation size", **positive("a number > 0")),
        "q": Param(q, "random directions per step", **positive("an integer > 0")),
        "normalize": NORMALIZE,
        "estimator": Param("stde", "forward-only spatial estimator", choices=ESTIMATORS_FORWARD),
        "dist": Param("default", "probe distribution (default: the estimator's)", choices=DISTS),
    }
