"""Published errors of the literature, to be shown beside the floors pinnbench measures for the
same problem and d (docs/problems.md, "Published numbers beside the floors").

STDE: Shi et al., "Stochastic Taylor Derivative Estimator: Efficient amortization for arbitrary
differential operators", NeurIPS 2024, two-body Poisson table (A100 40 GB; width 128 x 3 tanh,
10k Adam steps, 100 residual points, sparse STDE with |J| = 16; mean over 5 seeds; coefficients
c_i unseeded in the reference code). Transcribed in docs/domain.md §6.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class PublishedError:
    source: str
    problem: str  # the pinnbench id of the same problem
    dim: int
    rel_l2: float
    setup: str


_STDE = "STDE (Shi et al., NeurIPS 2024)"
_STDE_SETUP = "sparse STDE |J| = 16, 128 x 3 tanh, 10k Adam steps, 100 points"

PUBLISHED: tuple[PublishedError, ...] = tuple(
    PublishedError(_STDE, "poisson-2body-v1", d, e, _STDE_SETUP)
    for d, e in ((100, 3.5e-3), (1000, 4.9e-4), (10_000, 4.7e-3), (100_000, 3.5e-3),
                 (1_000_000, 9.2e-4)))


def beside_floors(results: pd.DataFrame) -> pd.DataFrame:
    """One row per published number: the floors measured in ``results`` (a store's DataFrame,
    :func:`pinnbench.load_results`) for the same problem and d, as medians over the seeds found,
    with the number of seeds; NaN where the store has no floor for that (problem, d).
    Columns: source, problem, dim, published_rel_l2, floor_const_rel_l2, floor_affine_rel_l2,
    seeds, above_const_floor (the published error is above the median constant floor)."""
    rows = []
    for p in PUBLISHED:
        sel = results[(results["problem"] == p.problem) & (results["dim"] == p.dim)]
        per_seed = sel.groupby("seed")[["floor_const_rel_l2", "floor_affine_rel_l2"]].first()
        per_seed = per_seed.apply(pd.to_numeric, errors="coerce")
        const = float(per_seed["floor_const_rel_l2"].median()) if len(per_seed) else float("nan")
        affine = float(per_seed["floor_affine_rel_l2"].median()) if len(per_seed) else float("nan")
        rows.append({"source": p.source, "problem": p.problem, "dim": p.dim,
                     "published_rel_l2": p.rel_l2, "floor_const_rel_l2": const,
                     "floor_affine_rel_l2": affine,
                     "seeds": int(per_seed["floor_const_rel_l2"].notna().sum()),
                     "above_const_floor": bool(p.rel_l2 > const)})
    return pd.DataFrame(rows)
