"""Published numbers beside the measured floors (pinnbench/judge/published.py)."""

from __future__ import annotations

import math

import pandas as pd

from pinnbench.judge.published import PUBLISHED, beside_floors


def test_published_table_matches_domain_section_6():
    stde = {p.dim: p.rel_l2 for p in PUBLISHED if p.source.startswith("STDE")}
    assert stde == {100: 3.5e-3, 1000: 4.9e-4, 10_000: 4.7e-3, 100_000: 3.5e-3, 1_000_000: 9.2e-4}


def test_beside_floors_takes_the_median_over_seeds():
    df = pd.DataFrame([
        # two cells of seed 0 (same floors), one of seed 1, one of seed 2 with no affine floor
        {"problem": "poisson-2body-v1", "dim": 10_000, "seed": 0, "floor_const_rel_l2": 4e-3,
         "floor_affine_rel_l2": None},
        {"problem": "poisson-2body-v1", "dim": 10_000, "seed": 0, "floor_const_rel_l2": 4e-3,
         "floor_affine_rel_l2": None},
        {"problem": "poisson-2body-v1", "dim": 10_000, "seed": 1, "floor_const_rel_l2": 2e-3,
         "floor_affine_rel_l2": None},
        {"problem": "poisson-2body-v1", "dim": 10_000, "seed": 2, "floor_const_rel_l2": 9e-3,
         "floor_affine_rel_l2": None},
        {"problem": "poisson-2body-scaled-v1", "dim": 10_000, "seed": 0,
         "floor_const_rel_l2": 0.5, "floor_affine_rel_l2": None},
    ])
    out = beside_floors(df).set_index("dim")
    assert out.loc[10_000, "floor_const_rel_l2"] == 4e-3 and out.loc[10_000, "seeds"] == 3
    assert out.loc[10_000, "above_const_floor"]  # 4.7e-3 > 4e-3
    assert math.isnan(out.loc[10_000, "floor_affine_rel_l2"])
    assert math.isnan(out.loc[100, "floor_const_rel_l2"]) and out.loc[100, "seeds"] == 0
