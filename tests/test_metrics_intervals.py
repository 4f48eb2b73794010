"""95 % intervals of the test-set errors (pinnbench/judge/intervals.py, pinnbench/judge/metrics.py):
recomputed independently, compared with a bootstrap, and checked for coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pinnbench import make_model, make_problem
from pinnbench.judge.intervals import Z95, RatioMoments, error_moments, rel_l1_interval, rel_l2_interval
from pinnbench.judge.metrics import evaluate


def _delta_rel_l2_numpy(err: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """The module docstring's formula, written out again on whole arrays."""
    a, b = err**2, ref**2
    n = a.size
    r = a.mean() / b.mean()
    cov = np.cov(np.stack([a, b]), ddof=1)
    var_r = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * b.mean() ** 2)
    half = Z95 * math.sqrt(var_r) / r
    return math.sqrt(r * math.exp(-half)), math.sqrt(r * math.exp(half))


def _heavy_pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, generator=g, dtype=torch.float64) * 2 + 1
    err = 0.3 * ref * torch.randn(n, generator=g, dtype=torch.float64) \
        + 0.1 * torch.randn(n, generator=g, dtype=torch.float64) ** 3
    return err, ref


def test_chunked_moments_equal_the_direct_formula():
    err, ref = _heavy_pairs(1000, 0)
    l2 = l1 = None
    for i in range(0, 1000, 37):  # uneven chunks through the pairwise merge
        l2, l1 = error_moments(err[i:i + 37], ref[i:i + 37], l2, l1)
    lo, hi = rel_l2_interval(l2)
    lo_np, hi_np = _delta_rel_l2_numpy(err.numpy(), ref.numpy())
    assert lo == pytest.approx(lo_np, rel=1e-10) and hi == pytest.approx(hi_np, rel=1e-10)
    assert math.sqrt(l2.ratio) == pytest.approx(float(err.norm() / ref.norm()), rel=1e-12)
    lo1, hi1 = rel_l1_interval(l1)
    r1 = float(err.abs().sum() / ref.abs().sum())
    assert lo1 < r1 < hi1 and l1.ratio == pytest.approx(r1, rel=1e-12)


def test_interval_agrees_with_a_bootstrap_over_test_points():
    err, ref = _heavy_pairs(400, 1)
    lo, hi = rel_l2_interval(RatioMoments().add(err**2, ref**2))
    rng = np.random.default_rng(0)
    e2, r2 = err.numpy() ** 2, ref.numpy() ** 2
    idx = rng.integers(0, 400, size=(4000, 400))
    boot = np.sqrt(e2[idx].sum(1) / r2[idx].sum(1))
    b_lo, b_hi = np.quantile(boot, [0.025, 0.975])
    assert (hi - lo) == pytest.approx(b_hi - b_lo, rel=0.2)
    assert lo == pytest.approx(b_lo, rel=0.05) and hi == pytest.approx(b_hi, rel=0.05)


@pytest.mark.parametrize("pid,d", [("poisson-2body-scaled-v1", 50), ("heat-v1", 20)])
def test_interval_covers_the_true_error_of_a_fixed_model(pid, d):
    """Issue 12: in >= 90 of 100 independent test sets of 100 points, the 95 % interval covers
    the error of a fixed model over the sampling law (estimated on 100,000 points)."""
    p = make_problem(pid, dim=d, seed=0, dtype=torch.float64)
    # the fixed model: the best A(x) c + B(x) fitted on an independent sample
    x = p.sample_interior(2000, torch.Generator().manual_seed(-1 % 2**31))
    a, b = p.ansatz(x)
    c = float((a * (p.exact(x) - b)).sum() / (a * a).sum())

    def pairs(n, seed):
        x = p.sample_interior(n, torch.Generator().manual_seed(seed))
        a, b = p.ansatz(x)
        u_star = p.exact(x)
        return a * c + b - u_star, u_star

    err, ref = pairs(100_000, 10**6)
    truth = float(err.norm() / ref.norm())
    assert 0.01 < truth < 0.9  # a non-trivial error, not the trivial 1 of u = 0
    covered = 0
    for k in range(100):
        lo, hi = rel_l2_interval(RatioMoments().add(*(v**2 for v in pairs(100, k))))
        covered += lo <= truth <= hi
    assert covered >= 90, covered


def test_evaluate_reports_the_intervals():
    p = make_problem("poisson-2body-scaled-v1", dim=10, seed=0)
    model = make_model(p, width=8, depth=2, generator=torch.Generator().manual_seed(0))
    out = evaluate(model, p)
    assert out["rel_l2_lo"] < out["rel_l2"] < out["rel_l2_hi"]
    assert out["rel_l1_lo"] < out["rel_l1"] < out["rel_l1_hi"]
    x, u = (torch.cat(v) for v in zip(*p.test_chunks()))
    with torch.no_grad():
        e = (model(x) - u).double()
    lo, hi = _delta_rel_l2_numpy(e.numpy(), u.double().numpy())
    assert out["rel_l2_lo"] == pytest.approx(lo, rel=1e-6)
    assert out["rel_l2_hi"] == pytest.approx(hi, rel=1e-6)


def test_degenerate_inputs():
    assert all(math.isnan(v) for v in rel_l2_interval(RatioMoments().add(torch.ones(1),
                                                                          torch.ones(1))))
    assert rel_l2_interval(RatioMoments().add(torch.zeros(5), torch.ones(5))) == (0.0, 0.0)
