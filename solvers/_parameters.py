"""The declared parameters the built-in solvers share (:class:`pinnbench.solver.Param`).

bp takes the step size, its schedule and the loss from here; zo and sdze take
:func:`zeroth_order_parameters`, one declaration with each solver's own defaults (docs/sdze.md
says what each switch changes, docs/tuning.md where each search space comes from).
"""

from __future__ import annotations

from pinnbench.solver import Param, non_negative, positive
from pinnbench.search_space import BUDGET, Choice, IntLogUniform, LogUniform

ESTIMATORS_BP = ("exact", "sdgd", "hte", "stde")
ESTIMATORS_FORWARD = ("stde", "fd")
DISTS = ("default", "rademacher", "gaussian", "coordinate")
LOSSES = ("biased", "unbiased", "gpinn")


def lr_param(default: float, search: LogUniform | None = None) -> Param:
    return Param(default, "step size (before the schedule)", **positive("a number > 0"),
                 search=search)


#: the schedule searched for every solver (docs/tuning.md): constant, or linear to 0 over the
#: cell's budget (the published STDE schedule decays linearly over its whole budget: Shi et al.,
#: NeurIPS 2024; ``budget`` follows the budget a tuned configuration later runs at)
DECAY_SEARCH = Choice(0, BUDGET)


def decay_steps_param(default: int | str, search: Choice | None = DECAY_SEARCH) -> Param:
    return Param(default, "linear decay of the step size to 0 over this many steps "
                 "(lr_t = lr * max(0, 1 - t / decay_steps)); 0 keeps it constant; budget: over "
                 "the cell's budget in steps (constant in a cell budgeted in time only)",
                 **non_negative("an integer >= 0"), search=search, words=(BUDGET,),
                 value_type=int)


def loss_params() -> dict[str, Param]:
    """``loss`` and the two gPINN parameters (used with ``loss=gpinn`` only; pinnbench.maths.gpinn)."""
    return {
        "loss": Param("biased", "squared residual of one estimate (biased), the product of two "
                      "independent estimates (unbiased), or biased + the gPINN term (gpinn)",
                      choices=LOSSES),
        "gpinn_weight": Param(1.0, "weight w of the gPINN term (ours: 1; the gPINN paper sets "
                              "it per problem)", **non_negative("a number >= 0")),
        "gpinn_dims": Param(1, "coordinates k sampled for the gPINN term per step",
                            **positive("an integer > 0")),
    }


NORMALIZE = Param(True, "divide the difference quotients by the root of a running mean of "
                  "their squares (a scalar, Adam-like second moment: O(1) state)")

#: lr's space where a spec fixes normalize=false (ours, docs/tuning.md). A raw step is
#: lr c z: the normalized space's 1e-4..1e-1 (a step per unit of z) divided by the quotients'
#: root mean square, measured at 290-1000 over the first 200 steps of sdze on
#: poisson-2body-scaled-v1 at d = 100 and 1000 and ~1e6 on the unscaled poisson-2body-v1 at
#: d = 100 (QuotientScale's docstring); 1e-4..1e-1 held no lr that trained it (the ablation
#: re-run's 64 trials all diverged), so its own space spans 1e-10..1e-3
RAW_QUOTIENT_SEARCH = {"normalize=false": {"lr": LogUniform(1e-10, 1e-3)}}


def zeroth_order_parameters(lr: float, q: int, momentum: float, crns: bool,
                            eps: float = 1e-3, decay_steps: int | str = 0) -> dict[str, Param]:
    """Parameters every zeroth-order solver (zo, sdze) has, each solver with its own defaults."""
    # search spaces (docs/tuning.md): ours, from the issue-11 grid (docs/sdze-tuning.md)
    return {
        # lr: a decade beyond that grid's 1e-3..1e-2 on each side (its winners sat at its edges:
        # MeZO 1e-3, sdze 1e-2); with normalize=true lr is the step per unit of z, as Adam's
        "lr": lr_param(lr, search=LogUniform(1e-4, 1e-1)),
        "decay_steps": decay_steps_param(decay_steps),
        # eps: MeZO's 1e-3 (Malladi et al. 2023) a decade either way, up to naive zo's 0.1 (its
        # issue-11 winner); below 1e-4 a float32 loss difference is mostly rounding
        "eps": Param(eps, "perturbation size", **positive("a number > 0"),
                     search=LogUniform(1e-4, 1e-1)),
        # q: MeZO's 1 to 16 (issue 4's q study: 1, 4, 16); a step costs 2q evaluations, so a
        # budget in steps favours a larger q: time comparisons show its price
        "q": Param(q, "random directions per step", **positive("an integer > 0"),
                   search=IntLogUniform(1, 16)),
        "normalize": NORMALIZE,
        # momentum: off or the usual heavy-ball 0.9 (Polyak 1964), the issue-11 grid's values
        "momentum": Param(momentum, "heavy-ball momentum beta of every parameter (0: ZO-SGD, "
                          "no momentum state anywhere)",
                          check=lambda v: 0 <= v < 1, check_text="a number in [0, 1)",
                          search=Choice(0.0, 0.9)),
        "crns": Param(crns, "common random numbers: the + and - evaluations share points and "
                      "probes (false: independent ones, the naive combination)"),
        "estimator": Param("stde", "forward-only spatial estimator", choices=ESTIMATORS_FORWARD),
        "dist": Param("default", "probe distribution (default: the estimator's)", choices=DISTS),
        **loss_params(),
        "stream": Param(False, "stream the step's points and probes over column blocks of d "
                        "from per-block seeds and consume them as reductions: no n x d tensor, "
                        "memory beyond the parameters independent of d (docs/streaming.md). "
                        "Supported: the ball problems (poisson, allen-cahn, sine-gordon; 2- and "
                        "3-body), estimator=stde with dist default|rademacher|gaussian, "
                        "loss biased|unbiased (sdze: subspace=true with rank < width); other "
                        "combinations are refused. Same distribution as false, other numbers"),
        "cuda_graph": Param(False, "on CUDA: capture the step as a CUDA graph once its cost is "
                            "stationary and replay it (one launch a step; its generators a "
                            "fixed pool seeded before each replay, its state updated in place, "
                            "the step size a device tensor; the data is then not timed apart; "
                            "pinnbench/cuda_graph.py, docs/roofline.md). Needs stream=false, "
                            "loss not gpinn, dist not coordinate (sdze also refresh=1, "
                            "crns=true, subspace=true, basis=gaussian). Ignored off CUDA"),
    }
