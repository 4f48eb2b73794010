"""The gPINN loss (pinnbench/maths/gpinn.py, issue 12 item 4): the residual's gradient against autograd
of the whole residual (source included), by reverse mode and by central differences; the
sampled coordinate sum unbiased for the full one; the loss is the biased loss plus the weighted
term; problems without a closed-form source gradient are skipped with the reason."""

import pytest
import torch

from pinnbench import make_model, make_problem, make_solver
from pinnbench.maths.estimators import draw_probes, estimate_terms
from pinnbench.maths.gpinn import gpinn_term, residual_gradient

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def _setup(pid="poisson-2body-v1", dim=7, n=4):
    problem = make_problem(pid, dim=dim, seed=0, dtype=F64)
    model = make_model(problem, width=12, depth=2, generator=torch.Generator().manual_seed(1))
    x = problem.sample_interior(n, torch.Generator().manual_seed(2))
    return problem, model, x


def _reference(problem, model, x):
    """d r / d x for r = L u - f with the exact operator and f recomputed from x: (n, D)."""
    xg = x.clone().requires_grad_(True)
    u, terms = estimate_terms(model, xg, "exact")
    r = problem.residual(terms, u, xg, source=problem.source(xg))
    return torch.autograd.grad(r.sum(), xg)[0]


@pytest.mark.parametrize("pid", ["poisson-2body-v1", "allen-cahn-3body-scaled-v1",
                                 "sine-gordon-2body-v1"])
@pytest.mark.parametrize("autograd", [True, False])
def test_residual_gradient_matches_autograd_of_the_whole_residual(pid, autograd):
    problem, model, x = _setup(pid)
    index = torch.tensor([0, 3, 6])
    drawn = draw_probes(problem, "exact", None, 16, dtype=F64)
    with torch.set_grad_enabled(autograd):
        got = residual_gradient(problem, model, x, drawn, index, "exact", 16, {}, autograd)
    want = _reference(problem, model, x)[:, index]
    tol = 1e-9 if autograd else 1e-6  # central difference: O(h^2) + O(eps / h), h = 6e-6
    torch.testing.assert_close(got.detach(), want, rtol=tol, atol=tol * float(want.abs().max()))


def test_forward_and_reverse_agree_with_stochastic_probes():
    problem, model, x = _setup()
    drawn = draw_probes(problem, "stde", torch.Generator().manual_seed(4), 5, dtype=F64)
    index = torch.tensor([1, 5])
    rev = residual_gradient(problem, model, x, drawn, index, "stde", 5, {}, True)
    with torch.no_grad():
        fwd = residual_gradient(problem, model, x, drawn, index, "stde", 5, {}, False)
    rev = rev.detach()
    torch.testing.assert_close(fwd, rev, rtol=1e-6, atol=1e-6 * float(rev.abs().max()))


def test_sampled_coordinates_are_unbiased_for_the_full_gradient_norm():
    """E_J[(d/k) sum_{j in J} mean (d_j r)^2] = mean ||grad_x r||^2 (spatial), to 4 standard
    errors over 3,000 draws of J (k = 2 of d = 7)."""
    problem, model, x = _setup()
    drawn = draw_probes(problem, "exact", None, 16, dtype=F64)
    with torch.no_grad():
        full = residual_gradient(problem, model, x, drawn, torch.arange(problem.dim), "exact", 16,
                                 {}, False)
        per_j = (full * full).mean(dim=0)  # mean_x (d_j r)^2
    from pinnbench.maths.estimators.probes import sample_indices

    g = torch.Generator().manual_seed(9)
    draws = torch.stack([per_j[sample_indices(2, problem.dim, g)].sum() * problem.dim / 2
                         for _ in range(3000)])
    se = float(draws.std()) / 3000**0.5
    assert abs(float(draws.mean()) - float(per_j.sum())) < 4 * se
    with torch.no_grad():  # and gpinn_term computes exactly that for a given J
        index = torch.tensor([2, 4])
        term = gpinn_term(problem, model, x, drawn, index, "exact", 16, {}, False)
    assert float(term) == pytest.approx(float(per_j[index].sum()) * problem.dim / 2, rel=1e-9)


@pytest.mark.parametrize("spec", ["bp[loss=gpinn,gpinn_weight=0.5,gpinn_dims=2]",
                                  "sdze[loss=gpinn,gpinn_weight=0.5,gpinn_dims=2]"])
def test_gpinn_loss_is_the_biased_loss_plus_the_weighted_term(spec):
    problem, model, _ = _setup()
    s = make_solver(spec, problem, model, generator=torch.Generator().manual_seed(3))
    data = s.draw()
    assert data.coordinates is not None and data.coordinates.numel() == 2
    with torch.set_grad_enabled(s.autograd):
        loss = s.residual_loss(data)
        u, terms = estimate_terms(model, data.x, s.estimator, probes=s.probes,
                                  drawn=data.probes[0])
        r = problem.residual(terms, u, data.x, source=data.source)
        term = gpinn_term(problem, model, data.x, data.probes[0], data.coordinates, s.estimator,
                          s.probes, {}, autograd=s.autograd)
    assert float(loss.detach()) == pytest.approx(float(((r * r).mean() + 0.5 * term).detach()),
                                                 rel=1e-9)


@pytest.mark.parametrize("solver", ["bp", "sdze", "zo"])
def test_gpinn_is_skipped_where_the_source_gradient_is_missing(solver):
    from pinnbench.solver import solver_from_spec

    s = solver_from_spec(f"{solver}[loss=gpinn]")
    skip, why = s.skip(make_problem("heat-v1", dim=4, seed=0))
    assert skip and "supports_gpinn" in why
    assert s.skip(make_problem("poisson-2body-v1", dim=4, seed=0)) == (False, "")
