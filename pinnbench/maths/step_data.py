"""A training step's spatial sample, drawn once: the collocation points x, the source f(x) and
the estimator's probes (issue 13, "shared step data").

Every solver trains on mean over x of r(x)^2 (or r_J r_K), r = L_hat u - f, whose randomness is
the points and the probes. Drawing them is pinnbench's work, not the solver's: at large d the
n x D points, the source's many-body sums and the V x D probes cost more than a zeroth-order
step's network work (docs/domain.md §8). So they are drawn in one place, timed apart
(:attr:`pinnbench.solver.Solver.data_time_s`, the cell's ``data_time_per_step_s``), and a step
that evaluates the loss several times on one sample (the zeroth-order solvers' common random
numbers) holds one :class:`StepData` whose tensors and probe objects every evaluation shares by
identity: nothing is redrawn, and caches keyed on identity hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pinnbench.maths.estimators import Probes, draw_probes
from pinnbench.maths.estimators.probes import sample_indices


@dataclass(frozen=True)
class StepData:
    """One spatial sample: points ``x`` (n, D), ``source`` f(x) (n,), ``probes``: one set per
    independent estimate the loss takes (one for the biased loss, two for the unbiased), and
    ``coordinates``: the k spatial coordinates of the gPINN term (:mod:`pinnbench.maths.gpinn`), or
    None."""

    x: Tensor
    source: Tensor
    probes: tuple[Probes, ...]
    coordinates: Tensor | None = None


def draw_step_data(problem, points: int, generator: torch.Generator, method: str, probes: int,
                   opts: dict, sets: int = 1,
                   probe_generator: torch.Generator | None = None,
                   coordinates: int = 0) -> StepData:
    """Points from ``generator``, then ``sets`` independent probe sets from ``probe_generator``
    (default: the same generator, continuing): the order in which a solver that sampled and then
    estimated would consume it, so trajectories do not change; then, when ``coordinates`` > 0,
    that many distinct spatial coordinates (uniform, without replacement) for the gPINN term."""
    x = problem.sample_interior(points, generator)
    with torch.no_grad():
        f = problem.source(x)
    pg = generator if probe_generator is None else probe_generator
    drawn = tuple(draw_probes(problem, method, pg, probes, dtype=problem.dtype, device=x.device,
                              **opts) for _ in range(sets))
    index = sample_indices(coordinates, problem.dim, pg) if coordinates > 0 else None
    return StepData(x, f, drawn, index)
