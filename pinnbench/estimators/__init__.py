"""Randomized (and exact) estimators of the linear terms of a PDE operator for a PINN.

``estimate(term, model, x, method=..., generator=..., probes=...)`` and ``estimate_terms(...)``;
methods ``exact``, ``sdgd``, ``hte``, ``stde``, ``fd``. The maths and sources are in
:mod:`.terms` (the estimators), :mod:`.directional` (jets, autodiff, stencils) and :mod:`.probes`.
"""

from pinnbench.estimators.terms import (EXACT_MAX_DIM, METHODS, OPTIONS, estimate, exact_unsupported,
                                        estimate_terms)

__all__ = ["EXACT_MAX_DIM", "METHODS", "OPTIONS", "estimate", "estimate_terms", "exact_unsupported"]
