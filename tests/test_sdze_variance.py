"""The subspace's variance claim, measured (issue 11, item 3; docs/domain.md §7).

SubZero / LOZO: with a basis (U, V) held, z = U Xi V^T / r explores an r^2-dimensional space,
so the two-point estimate g_hat = (z . G) z varies about its own mean S = E_Xi[g_hat] =
(U U^T / r) G (V V^T / r) with E||g_hat - S||^2 / ||S||^2 = O(r^2), against O(P) for a full
Gaussian z about G. With a fresh basis every step E[z z^T] = I, and the estimator is a full
Gaussian's again: E||g_hat - G||^2 / ||G||^2 = O(P) whatever r.
"""

import pytest
import torch

from pinnbench import make_model, make_problem, make_solver
from pinnbench.solvers._zo_diagnostics import fixed_basis_mean, gradient_estimate_variance
from pinnbench.solvers._zo_perturbations import Perturbation, make_bases

pytestmark = pytest.mark.usefixtures("one_thread")


def _ratios(grad: torch.Tensor, rank: int | None, fresh: bool, n: int = 300) -> float:
    """E||g_hat - mean||^2 / ||mean||^2 over n directions, mean = S for a held basis and G
    otherwise (rank None: full Gaussian)."""
    params = [grad]
    bases = make_bases(params, rank, seed=1) if rank else [None]
    err = 0.0
    mean = fixed_basis_mean(bases[0], grad) if rank and not fresh else grad
    for k in range(n):
        if rank and fresh:
            bases = make_bases(params, rank, seed=1000 + k)
        z = Perturbation(params, seed=10**6 + k, bases=bases).dense(0)
        g_hat = float((z * grad).sum()) * z
        err += float(((g_hat - mean) ** 2).sum())
    return err / n / float((mean**2).sum())


def test_held_basis_variance_is_10x_below_full_gaussian_on_a_quadratic():
    """L = 0.5 sum s (W - C)^2 over a 100 x 100 matrix (P = 10^4), r = 4: about r^2 + 1 = 17
    for the held basis against P + 1 = 10^4 for a full Gaussian or a basis redrawn every step."""
    g = torch.Generator().manual_seed(0)
    w, c = (torch.randn(100, 100, generator=g, dtype=torch.float64) for _ in range(2))
    s = torch.rand(100, 100, generator=g, dtype=torch.float64) + 0.5
    grad = s * (w - c)
    full = _ratios(grad, None, fresh=True)
    fresh = _ratios(grad, 4, fresh=True)
    held = _ratios(grad, 4, fresh=False)
    assert 0.7e4 < full < 1.3e4, full
    assert 0.7e4 < fresh < 1.3e4, fresh  # a fresh basis every step: a full Gaussian again
    assert held <= full / 10, (held, full)
    assert 5 < held < 60, held  # O(r^2)


def test_solver_diagnostic_sees_the_same():
    """gradient_estimate_variance on a PINN: the per-step ratio is ~P / q for every rank and
    refresh period; the held-basis exploration variance is below it (not by r^2 / P here: the
    biases and the output layer, full Gaussian in every variant, carry much of a small PINN's
    gradient; docs/sdze.md has the figures at the studied sizes)."""
    problem = make_problem("poisson-2body-v1", dim=60, seed=0, dtype=torch.float64)
    out = {}
    for spec in ("sdze[subspace=false,q=1]", "sdze[rank=2,refresh=1,q=1]",
                 "sdze[rank=2,refresh=100,q=1]"):
        g = torch.Generator().manual_seed(0)
        model = make_model(problem, width=16, depth=2, generator=g)
        solver = make_solver(spec, problem, model, generator=g)
        before = [p.clone() for p in model.params]
        out[spec] = gradient_estimate_variance(solver, seed=3, window=5, windows=40)
        assert all(torch.equal(a, b) for a, b in zip(before, model.params)) and solver.t == 0
    full = out["sdze[subspace=false,q=1]"]
    p = full["n_params"]
    for v in out.values():
        assert 0.6 * p < v["ratio_step"] < 1.5 * p, v
    assert full["ratio_held"] == pytest.approx(full["ratio_step"])
    assert full["cos_held"] == pytest.approx(1.0)
    for spec in ("sdze[rank=2,refresh=1,q=1]", "sdze[rank=2,refresh=100,q=1]"):
        assert out[spec]["ratio_held"] < full["ratio_step"], out[spec]
        assert out[spec]["cos_held"] < 0.99, out[spec]  # a held basis's mean is a sketch of G
