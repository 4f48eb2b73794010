"""Errors of a model against the problem's exact solution on its fixed test set.

rel_l2 = ||u - u*||_2 / ||u*||_2, rel_l1 = ||u - u*||_1 / ||u*||_1, max_abs = max |u - u*|,
accumulated chunk by chunk (:meth:`Problem.predictions` over :meth:`Problem.test_chunks`) so
that D = 10^7 fits in memory.
rel_l2 and rel_l1 come with a 95 % interval over the draw of the test points
(``rel_l2_lo``, ``rel_l2_hi``, ``rel_l1_lo``, ``rel_l1_hi``; delta method,
:mod:`pinnbench.judge.intervals`); max_abs has none.

``split="validation"`` evaluates on the validation set instead
(:meth:`Problem.validation_chunks`, its own random stream): what ``pinnbench tune`` selects on,
so that the test set only ever reports (docs/tuning.md).
"""

from __future__ import annotations

import torch

from pinnbench.judge.intervals import error_moments, rel_l1_interval, rel_l2_interval


#: the point sets a model is evaluated on
SPLITS = ("test", "validation")


@torch.no_grad()
def evaluate(model, problem, split: str = "test") -> dict[str, float]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    sq_err = sq_ref = abs_err = abs_ref = 0.0
    max_abs = 0.0
    l2 = l1 = None
    for u, u_star in problem.predictions(model, split):
        err = u - u_star
        sq_err += float((err * err).sum())
        sq_ref += float((u_star * u_star).sum())
        abs_err += float(err.abs().sum())
        abs_ref += float(u_star.abs().sum())
        max_abs = max(max_abs, float(err.abs().max()))
        l2, l1 = error_moments(err, u_star, l2, l1)
    out = {
        "rel_l2": (sq_err / sq_ref) ** 0.5 if sq_ref > 0 else float("nan"),
        "rel_l1": abs_err / abs_ref if abs_ref > 0 else float("nan"),
        "max_abs": max_abs,
    }
    out["rel_l2_lo"], out["rel_l2_hi"] = rel_l2_interval(l2)
    out["rel_l1_lo"], out["rel_l1_hi"] = rel_l1_interval(l1)
    return out
