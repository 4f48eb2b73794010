"""HJB-Lin and Black-Scholes-Barenblatt (problems/terminal.py) and the terms they brought:
weighted_laplacian, drift, grad_power_mean (pinnbench/maths/estimators/first_order.py).

The generic tests (tests/test_problems.py, tests/test_estimators.py) already cover both problems
(source = operator(exact) by autograd, ansatz jets, boundary data, every method on every term).
Here: closed forms with power (points where every coordinate contributes the same, so a sampled
estimator is deterministic and must equal the exact term), unbiasedness with a tolerance from the
standard error, the terminal condition to 1e-10, the CLI listing, and a bp and an sdze cell end to
end."""

from __future__ import annotations

import math

import pytest
import torch

import pinnbench
from pinnbench.maths.estimators import estimate_terms
from pinnbench.maths.model import make_model
from pinnbench.problems.terminal import T_END
import autodiff_ops as ad

F64 = torch.float64
METHODS_RANDOM = ("sdgd", "hte", "stde", "fd")


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(p, seed=1, zero_net=False):
    m = make_model(p, width=8, depth=2, generator=g(seed))
    if zero_net:  # N = 0: u = B, whose terms are known in closed form
        for q in m.params[-2:]:
            q.data.zero_()
    return m


def _equal_magnitude_points(d: int, n: int = 3) -> torch.Tensor:
    """x_i = a_k for every i (|x| = r_k), t_k inside: every coordinate contributes the same to
    sum_i x_i^2 d2_i u and to mean_i |d_i u|^c for u = B of either problem."""
    r = torch.tensor([0.3, 0.55, 0.8], dtype=F64)[:n]
    t = torch.tensor([0.1, 0.5, 0.85], dtype=F64)[:n]
    x = (r / math.sqrt(d)).unsqueeze(1).expand(n, d)
    return torch.cat([x, t.unsqueeze(1)], dim=1).contiguous()


# -- closed forms (deterministic, with power) ------------------------------------------------------
def _bsb_b_terms(p, x):
    """u = B = s + m s^2, m = e^{k tau} - 1: sum x_i^2 d2_i B = 2s + 4 m s^2 + 8 m sum x_i^4,
    x . grad B = 2s + 4 m s^2, dt B = -k e^{k tau} s^2."""
    xs, tau = x[:, :-1], T_END - x[:, -1]
    s = xs.square().sum(1)
    m = torch.expm1(p.growth * tau)
    return {"weighted_laplacian": 2 * s + 4 * m * s * s + 8 * m * xs.pow(4).sum(1),
            "drift": 2 * s + 4 * m * s * s,
            "dt": -p.growth * torch.exp(p.growth * tau) * s * s}


def _hjb_b_terms(p, x):
    """u = B = sum x_i + tau s^2: d_i B = 1 + 4 tau s x_i, Lap B = tau (8 s + 4 d s),
    dt B = -s^2."""
    xs, tau = x[:, :-1], T_END - x[:, -1]
    s = xs.square().sum(1)
    grad = 1 + 4 * (tau * s).unsqueeze(1) * xs
    return {"grad_power_mean": grad.abs().pow(p.gradient_exponent).mean(1),
            "laplacian": tau * (8 * s + 4 * p.dim * s), "dt": -s * s}


@pytest.mark.parametrize("method", ("exact",) + METHODS_RANDOM)
@pytest.mark.parametrize("pid, closed", [("bsb-v1", _bsb_b_terms), ("hjb-lin-v1", _hjb_b_terms)])
def test_terms_of_the_boundary_function_in_closed_form(pid, closed, method):
    """N = 0, points with |x_i| equal: every method with 3 sampled coordinates out of 9 equals
    the closed form (the sampled terms are deterministic there). A wrong d/|J| factor, a weight
    x_j instead of x_j^2, a missing 1/|J| or a wrong exponent fails (rel tol 1e-9, fd 1e-6)."""
    d = 9
    p = pinnbench.make_problem(pid, dim=d, dtype=F64)
    m = _model(p, zero_net=True)
    x = _equal_magnitude_points(d)
    expected = closed(p, x)
    _, terms = estimate_terms(m, x, method, generator=g(4), probes=3)
    tol = 1e-6 if method == "fd" else 1e-9
    for name, value in expected.items():
        if name == "laplacian" and method in ("hte", "stde", "fd"):
            continue  # Rademacher probes: not deterministic for a non-diagonal Hessian
        torch.testing.assert_close(terms[name].detach(), value, rtol=tol, atol=tol)


def test_the_closed_form_check_detects_a_wrong_weight():
    """The check above has teeth: sum x_j d2_j u (weights not squared) differs by > 10 %."""
    p = pinnbench.make_problem("bsb-v1", dim=9, dtype=F64)
    x = _equal_magnitude_points(9)
    m = _model(p, zero_net=True)
    wrong = ad.laplacian(m, x, 9) * x[:, 0]  # every x_j equal: sum_j x_j d2_j u = x_0 Lap u
    right = _bsb_b_terms(p, x)["weighted_laplacian"]
    assert float(((wrong - right) / right).abs().min()) > 0.1


# -- unbiasedness (statistical) --------------------------------------------------------------------
#: draws of each estimator, and the bound on |mean - exact| / standard error (a 4-sigma test:
#: a false alarm with probability ~6e-5 per point and term under normality)
DRAWS = 1000
Z_MAX = 4.0


@pytest.mark.parametrize("method", METHODS_RANDOM)
@pytest.mark.parametrize("pid, term", [("bsb-v1", "weighted_laplacian"),
                                       ("hjb-lin-v1", "grad_power_mean")])
def test_sampled_terms_are_unbiased(pid, term, method):
    """Mean of DRAWS estimates (|J| = 3 of d = 10, a random network, generic points) within
    Z_MAX standard errors of the exact term at every point; the spread is real (the test is not
    vacuous) and a 10 % bias would be detected (|bias| > Z_MAX standard errors)."""
    d = 10
    p = pinnbench.make_problem(pid, dim=d, dtype=F64)
    m = _model(p)
    x = p.sample_interior(4, g(3))
    exact = estimate_terms(m, x, "exact")[1][term].detach()
    ref = (ad.weighted_laplacian(m, x, d) if term == "weighted_laplacian"
           else ad.grad_power_mean(m, x, d, p.gradient_exponent))
    torch.testing.assert_close(exact, ref, rtol=1e-10, atol=1e-12)
    samples = torch.stack([estimate_terms(m, x, method, generator=g(100 + k), probes=3)[1][term]
                           .detach() for k in range(DRAWS)])
    se = samples.std(0) / math.sqrt(DRAWS)
    assert (se > 1e-6 * exact.abs()).all()  # random, not accidentally exact
    z = (samples.mean(0) - exact).abs() / se
    assert (z < Z_MAX).all(), z.tolist()
    assert ((0.1 * exact).abs() > Z_MAX * se).all(), (se / exact.abs()).tolist()


@pytest.mark.parametrize("method", ("exact",) + METHODS_RANDOM)
def test_drift_is_exact_in_every_method(method):
    """x . grad u along x itself: no randomness, equal to autodiff at generic points."""
    p = pinnbench.make_problem("bsb-v1", dim=7, dtype=F64)
    m = _model(p)
    x = p.sample_interior(5, g(3))
    ref = (ad.gradient(m, x)[:, :7] * x[:, :7]).sum(1)
    got = [estimate_terms(m, x, method, generator=g(s), probes=2)[1]["drift"] for s in (0, 1)]
    tol = 1e-7 if method == "fd" else 1e-11
    for value in got:
        torch.testing.assert_close(value.detach(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("pid", ["hjb-lin-v1", "bsb-v1"])
def test_stde_and_fd_work_under_no_grad(pid):
    """The zeroth-order solvers estimate under torch.no_grad(): detached results (stde's drift
    builds and frees a local graph; fd needs none), the same numbers as with grad mode on."""
    p = pinnbench.make_problem(pid, dim=6, dtype=F64)
    m = _model(p)
    x = p.sample_interior(3, g(3))
    for method in ("stde", "fd"):
        with torch.no_grad():
            u, terms = estimate_terms(m, x, method, generator=g(5), probes=2)
        assert not u.requires_grad and not any(v.requires_grad for v in terms.values())
        _, again = estimate_terms(m, x, method, generator=g(5), probes=2)
        for k in terms:
            torch.testing.assert_close(terms[k], again[k].detach(), rtol=0, atol=0)


# -- the problems ----------------------------------------------------------------------------------
@pytest.mark.parametrize("pid", ["hjb-lin-v1", "bsb-v1"])
def test_terminal_condition_holds_for_any_network(pid):
    """u(x, T) = g(x) to 1e-10 for a random network (and u* too), at d = 50."""
    d = 50
    p = pinnbench.make_problem(pid, dim=d, dtype=F64)
    m = _model(p)
    x = p.sample_interior(32, g(3))
    x[:, -1] = T_END
    target = x[:, :d].sum(1) if pid == "hjb-lin-v1" else x[:, :d].square().sum(1)
    assert float((m(x) - target).abs().max()) < 1e-10
    assert float((p.exact(x) - target).abs().max()) < 1e-10
    x[:, -1] = 0.3  # and not elsewhere: the network does enter
    assert float((m(x) - p.exact(x)).abs().max()) > 1e-3


@pytest.mark.parametrize("pid", ["hjb-lin-v1", "bsb-v1"])
def test_residual_of_the_exact_solution_is_zero_by_every_method(pid):
    """u = u*: every estimator's residual is ~0. HJB-Lin with 3 of 8 coordinates sampled (the
    sampled term is exact there: d_i u* = 1 for all i); BSB with every coordinate (x_i^2 d2_i u*
    = 2 e^{k tau} x_i^2 differs by i, so a sample is not exact)."""
    probes = 3 if pid == "hjb-lin-v1" else 8
    p = pinnbench.make_problem(pid, dim=8, dtype=F64)
    x = p.sample_interior(6, g(3))

    class Exact:
        problem, dtype, params = p, F64, []

        def __call__(self, y, params=None):
            return p.exact(y)

        def _check_input(self, y):
            pass

    # the autodiff and stencil methods need only u(x); jets need a model: skip stde here
    for method in ("exact", "sdgd", "hte", "fd"):
        u, terms = estimate_terms(Exact(), x, method, generator=g(2), probes=probes)
        res = p.residual(terms, u, x).detach()
        tol = 1e-6 if method == "fd" else 1e-10
        assert float(res.abs().max()) < tol, (method, res)


def test_list_problems_shows_them_with_their_flags(capsys):
    from pinnbench.cli import main

    assert main(["list", "problems"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for pid, terms in (("hjb-lin-v1", "dt+laplacian+grad_power_mean"),
                       ("bsb-v1", "dt+weighted_laplacian+drift")):
        i, line = next((i, ln) for i, ln in enumerate(lines) if ln.split()[:1] == [pid])
        assert terms in line and "u = g at t = T (terminal)" in line
        assert "u = u* on the sphere (lateral)" in line
        assert i + 1 == len(lines) or "ILL-POSED" not in lines[i + 1]
        assert pinnbench.make_problem(pid, dim=3).well_posed


@pytest.mark.parametrize("solver", ["bp[probes=4]", "sdze[probes=4]", "sdze[estimator=fd,probes=4]"])
@pytest.mark.parametrize("pid", ["hjb-lin-v1", "bsb-v1"])
def test_cells_run_end_to_end(pid, solver):
    row = pinnbench.run_cell({"problem": pid, "dim": 6, "solver": solver, "steps": 6, "width": 8,
                              "depth": 2, "seed": 0}, isolated=False)
    assert row["status"] == "ok", row["message"]
    assert row["steps_done"] == 6 and math.isfinite(row["final_rel_l2"])
    assert 0 < row["final_rel_l2"] < 10


@pytest.mark.parametrize("pid", ["hjb-lin-v1", "bsb-v1"])
def test_a_million_dimensions(pid):
    """d = 10^6, float32, 2 points, under no_grad (the zeroth-order solvers' setting): stde and
    fd give finite terms, and the terms with no probe randomness in common (drift: exact in both;
    dt) or with the same sampled coordinates (grad_power_mean, weighted_laplacian: the same
    generator state draws the same J) agree to fp32 stencil accuracy."""
    p = pinnbench.make_problem(pid, dim=10**6)
    m = make_model(p, width=8, depth=2, generator=g(0))
    x = p.sample_interior(2, g(1))
    with torch.no_grad():
        runs = {meth: estimate_terms(m, x, meth, generator=g(2), probes=4)[1]
                for meth in ("stde", "fd")}
    for name in p.operator.names:
        assert torch.isfinite(runs["stde"][name]).all() and torch.isfinite(runs["fd"][name]).all()
        if name != "laplacian":  # Rademacher stencils at ||v||^2 = 10^6 in fp32: not comparable
            torch.testing.assert_close(runs["fd"][name], runs["stde"][name], rtol=1e-2, atol=1e-3)
