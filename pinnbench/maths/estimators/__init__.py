"""Randomized (and exact) estimators of the linear terms of a PDE operator for a PINN.

``estimate(term, model, x, method=..., generator=..., probes=...)`` and ``estimate_terms(...)``
(optionally with probes drawn apart by ``draw_probes``);
methods ``exact``, ``sdgd``, ``hte``, ``stde``, ``fd``. The maths and sources are in
:mod:`.terms` (the estimators), :mod:`.directional` (jets, autodiff, stencils),
:mod:`.preactivation` (hte and sdgd through the first layer) and :mod:`.probes`.
"""

from pinnbench.maths.estimators.terms import (EXACT_MAX_DIM, METHODS, OPTIONS, Probes,
                                              batch_unsupported, draw_probes, estimate,
                                              estimate_terms, exact_unsupported)

__all__ = ["EXACT_MAX_DIM", "METHODS", "OPTIONS", "Probes", "batch_unsupported", "draw_probes",
           "estimate", "estimate_terms", "exact_unsupported"]
