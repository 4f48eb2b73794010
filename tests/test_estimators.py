"""pinnbench.maths.estimators: every method against autodiff references, statistically for the
randomized ones; reproducibility from the generator; finite differences' order of accuracy;
bad input; and every registered problem served by every method."""

import math

import pytest
import torch
from torch.func import hessian, jacrev

import pinnbench
from pinnbench.maths.directions import CoordinateDirections, DenseDirections
from pinnbench.maths.estimators import EXACT_MAX_DIM, METHODS, estimate, estimate_terms
from pinnbench.maths.estimators.directional import (autodiff_directional, default_fd_step,
                                              fd_directional, jet_directional)
from pinnbench.maths.estimators.probes import sample_indices
from pinnbench.maths.jets import Jet
from pinnbench.maths.model import PINN, make_model
from pinnbench.maths.problem import LinearTerm, Operator, Problem, radius_uniform_ball, sqnorm_jet

F64 = torch.float64


class ToyBall(Problem):
    """u = (1 - ||x||^2) N(x) + sin(x_0); operator Δ + Δ² (so estimate_terms serves both)."""

    family = "toy-ball"
    operator = Operator((LinearTerm("laplacian"), LinearTerm("bilaplacian")))

    def ansatz(self, x):
        return 1.0 - (x * x).sum(dim=1), torch.sin(x[:, 0])

    def ansatz_jet(self, x, dirs, order):
        b = Jet.line(x[:, :1], dirs.component(0).unsqueeze(0), order).sin()
        return 1.0 - sqnorm_jet(x, dirs, order), b

    def sample_interior(self, n, generator):
        return radius_uniform_ball(n, self.dim, generator, dtype=self.dtype, device=self.device)


class ToySpaceTime(Problem):
    """Time last: u = t (1 - ||x||^2) N(x, t) + sin(x_0 + t); all four terms."""

    family = "toy-space-time"
    time_dependent = True
    operator = Operator(tuple(LinearTerm(n) for n in ("dt", "laplacian", "dtt", "bilaplacian")))

    def ansatz(self, x):
        s = (x[:, :-1] ** 2).sum(dim=1)
        return x[:, -1] * (1.0 - s), torch.sin(x[:, 0] + x[:, -1])

    def ansatz_jet(self, x, dirs, order):
        t_dir = dirs.component(self.input_dim - 1).unsqueeze(0)
        xs = x.clone()
        xs[:, -1] = 0.0
        s = Jet([(xs * xs).sum(dim=1, keepdim=True), 2.0 * dirs.dot(xs),
                 (dirs.sqnorm() - t_dir[0] ** 2).unsqueeze(0)], order)
        t = Jet.line(x[:, -1:], t_dir, order)
        b = Jet.line(x[:, :1] + x[:, -1:], dirs.component(0).unsqueeze(0) + t_dir, order).sin()
        return t * (1.0 - s), b

    def sample_interior(self, n, generator):
        xs = radius_uniform_ball(n, self.dim, generator, dtype=self.dtype)
        return torch.cat([xs, torch.rand(n, 1, generator=generator, dtype=self.dtype)], dim=1)


def setup(cls, dim=4, n=3, dtype=F64, seed=0):
    p = cls(dim, seed=seed, dtype=dtype)
    m = make_model(p, width=10, depth=2, generator=torch.Generator().manual_seed(seed + 1))
    x = p.sample_interior(n, torch.Generator().manual_seed(seed + 2))
    return p, m, x


def reference_terms(model, x):
    """Every term at every point by torch.func (independent of pinnbench.maths.estimators): Hessians
    by jacfwd(jacrev), the bilaplacian as the Hessian trace of the Hessian trace."""
    p = model.problem
    d = p.dim
    f = lambda y: model(y.unsqueeze(0))[0]  # noqa: E731
    lap = lambda y: torch.diagonal(hessian(f)(y))[:d].sum()  # noqa: E731
    out = {"laplacian": [], "bilaplacian": [], "dt": [], "dtt": []}
    for xi in x:
        h = hessian(f)(xi)
        out["laplacian"].append(torch.diagonal(h)[:d].sum())
        out["bilaplacian"].append(torch.diagonal(hessian(lap)(xi))[:d].sum())
        out["dt"].append(jacrev(f)(xi)[-1])
        out["dtt"].append(h[-1, -1])
    return {k: torch.stack(v).detach() for k, v in out.items()}


@pytest.fixture(scope="module")
def ball():
    p, m, x = setup(ToyBall, dim=4)
    return m, x, reference_terms(m, x)


@pytest.fixture(scope="module")
def spacetime():
    p, m, x = setup(ToySpaceTime, dim=3)
    return m, x, reference_terms(m, x)


def g(seed):
    return torch.Generator().manual_seed(seed)


# -- exact ----------------------------------------------------------------------------------------
def test_exact_matches_torch_func(ball, spacetime):
    for m, x, ref in (ball, spacetime):
        u, terms = estimate_terms(m, x, "exact")
        torch.testing.assert_close(u, m(x), rtol=0, atol=1e-14)
        assert list(terms) == list(m.problem.operator.names)
        for name, value in terms.items():
            torch.testing.assert_close(value, ref[name], rtol=1e-10, atol=1e-10, msg=name)


def test_exact_refuses_large_d():
    for term, d in (("laplacian", EXACT_MAX_DIM["laplacian"] + 1),
                    ("bilaplacian", EXACT_MAX_DIM["bilaplacian"] + 1)):
        p = ToyBall(d, dtype=torch.float32)
        m = make_model(p, width=2, depth=1)
        with pytest.raises(ValueError, match=rf"limited to d <= {d - 1}, got d = {d}; use sdgd"):
            estimate(term, m, torch.zeros(1, d), "exact")


# -- unbiasedness ---------------------------------------------------------------------------------
UNBIASED = [  # (method, options, term)
    ("sdgd", {}, "laplacian"),
    ("hte", {}, "laplacian"),
    ("hte", {"dist": "gaussian"}, "laplacian"),
    ("stde", {}, "laplacian"),
    ("stde", {"dist": "gaussian"}, "laplacian"),
    ("stde", {"dist": "coordinate"}, "laplacian"),
    ("fd", {}, "laplacian"),
    ("fd", {"dist": "gaussian"}, "laplacian"),
    ("fd", {"dist": "coordinate"}, "laplacian"),
    ("sdgd", {}, "bilaplacian"),
    ("hte", {}, "bilaplacian"),
    ("stde", {}, "bilaplacian"),
    ("fd", {}, "bilaplacian"),
]


def many_estimates(term, m, x, method, reps, probes, **opts):
    return torch.stack([estimate(term, m, x, method, generator=g(1000 + r), probes=probes, **opts)
                        for r in range(reps)])


@pytest.mark.parametrize("method, opts, term", UNBIASED,
                         ids=[f"{m}-{o.get('dist', 'default')}-{t}" for m, o, t in UNBIASED])
def test_randomized_estimators_are_unbiased(ball, method, opts, term):
    """The mean of many estimates (independent generator states) lies within 4 standard errors
    of the autodiff value, at every point; and the estimator is really random (SE > 0)."""
    m, x, ref = ball
    reps = 150 if term == "laplacian" else 100  # the autodiff bilaplacians are the slow ones
    est = many_estimates(term, m, x, method, reps=reps, probes=2, **opts)
    mean, se = est.mean(dim=0), est.std(dim=0) / math.sqrt(est.shape[0])
    assert (se > 1e-6 * ref[term].abs()).all()
    z = (mean - ref[term]).abs() / se
    assert (z < 4.0).all(), f"z-scores {z.tolist()}"


def test_the_unbiasedness_check_detects_a_biased_estimator(ball):
    """Power check: Rademacher probes for the bilaplacian (mean Δ²u − (2/3) Σ_i ∂⁴_i u) fail it."""
    m, x, ref = ball
    est = []
    for r in range(150):
        v = torch.randint(0, 2, (2, 4), generator=g(r), dtype=F64) * 2 - 1
        _, derivs = jet_directional(m, x, DenseDirections(v), 4)
        est.append(derivs[4].mean(dim=1) / 3.0)
    est = torch.stack(est)
    z = (est.mean(0) - ref["bilaplacian"]).abs() / (est.std(0) / math.sqrt(150))
    assert (z > 4.0).any(), f"z-scores {z.tolist()}"


def test_coordinate_sampling_is_uniform_without_replacement():
    counts = torch.zeros(10)
    for r in range(2000):
        idx = sample_indices(3, 10, g(r))
        assert idx.unique().numel() == 3 and idx.min() >= 0 and idx.max() < 10
        counts[idx] += 1
    expected = 2000 * 3 / 10  # binomial counts, sd ~ 20
    assert (counts - expected).abs().max() < 4 * math.sqrt(expected * 0.7)
    assert torch.equal(sample_indices(12, 10, None), torch.arange(10))


def _floyd_loop(count: int, dim: int, generator) -> list[int]:
    """Floyd's algorithm as Bentley writes it: the sequential reference."""
    return _floyd_from(torch.rand(count, generator=generator, dtype=torch.float64).tolist(), dim)


def _floyd_from(u: list[float], dim: int) -> list[int]:
    count = len(u)
    chosen: set[int] = set()
    for k, j in enumerate(range(dim - count, dim)):
        t = min(int(u[k] * (j + 1)), j)
        chosen.add(j if t in chosen else t)
    return sorted(chosen)


def test_coordinate_sampling_on_the_device_is_floyds_loop_to_the_bit():
    # small d, so that both kinds of collision (an earlier t_i, an earlier j_i) happen often and
    # chains of them are long: the pointer jumping must reproduce every step of the loop
    for dim in (2, 3, 5, 8, 17, 33):
        for count in range(1, dim):
            for r in range(12):
                got = sample_indices(count, dim, g(r))
                assert got.tolist() == _floyd_loop(count, dim, g(r)), (count, dim, r)


def test_floyd_on_the_device_follows_the_longest_chain_of_collisions():
    """The worst case of the pointer jumping: t_1 = t_0 collides, then each t_k = j_{k-1} (the
    value step k-1 added instead), a chain through every step: all m - 1 rounds' worth of
    links must be followed (with one round fewer the tail is wrong)."""
    from pinnbench.maths.estimators.probes import floyd_indices

    for m, dim in ((16, 40), (16, 17), (9, 1000), (2, 3)):
        top = [dim - m + k for k in range(m)]
        targets = [5 % (top[0] + 1), 5 % (top[0] + 1)] + [top[k - 1] for k in range(2, m)]
        u = [(t + 0.5) / (j + 1) for t, j in zip(targets, top)]
        expected = _floyd_from(u, dim)
        assert expected == sorted({targets[0], *top[1:]})  # every later step collided
        got = floyd_indices(torch.tensor(u, dtype=torch.float64), dim).tolist()
        assert got == expected, (m, dim)


def test_sdgd_with_every_coordinate_is_exact(ball):
    m, x, ref = ball
    lap = estimate("laplacian", m, x, "sdgd", generator=None, probes=4)  # probes >= d: no sampling
    torch.testing.assert_close(lap, ref["laplacian"], rtol=1e-10, atol=1e-10)
    bil = estimate("bilaplacian", m, x, "sdgd", generator=None, probes=10)
    torch.testing.assert_close(bil, ref["bilaplacian"], rtol=1e-10, atol=1e-10)
    stde = estimate("laplacian", m, x, "stde", probes=9, dist="coordinate")  # capped at d
    torch.testing.assert_close(stde, ref["laplacian"], rtol=1e-10, atol=1e-10)


# -- stde = autodiff, fd -> autodiff ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dense", "coordinate"])
def test_stde_equals_autodiff_for_fixed_directions(ball, kind):
    m, x, _ = ball
    dirs = (DenseDirections(torch.randn(3, 4, generator=g(0), dtype=F64)) if kind == "dense"
            else CoordinateDirections(torch.tensor([3, 1]), 4, F64))
    u, jets = jet_directional(m, x, dirs, 4)
    xg = x.clone().requires_grad_(True)
    auto = autodiff_directional(m(xg), xg, dirs, 4, create_graph=False)
    torch.testing.assert_close(u, m(x), rtol=0, atol=1e-14)
    for k in (1, 2, 3, 4):
        torch.testing.assert_close(jets[k], auto[k - 1].detach(), rtol=1e-10, atol=1e-10,
                                   msg=f"order {k}")


@pytest.mark.parametrize("method, dist, term", [
    ("hte", "rademacher", "laplacian"), ("hte", "gaussian", "bilaplacian"),
    ("fd", "rademacher", "laplacian"), ("fd", "coordinate", "laplacian"),
    ("fd", "gaussian", "bilaplacian"), ("sdgd", "coordinate", "laplacian")])
def test_methods_agree_on_the_same_probes(ball, method, dist, term):
    """The same generator state gives every method the same probes: hte and sdgd equal stde to
    round-off, fd to its truncation and round-off error (order 4 at the default h: ~1e-4)."""
    m, x, _ = ball
    opts = {} if method == "sdgd" else {"dist": dist}
    a = estimate(term, m, x, "stde", generator=g(5), probes=3, dist=dist)
    b = estimate(term, m, x, method, generator=g(5), probes=3, **opts)
    tol = 1e-10 if method != "fd" else (1e-5 if term == "laplacian" else 3e-4)
    torch.testing.assert_close(b.detach(), a, rtol=tol, atol=tol)


@pytest.mark.parametrize("order, h_range", [(2, (2e-1, 2e-2)), (4, (1e-1, 1.5e-2))])
def test_fd_error_shrinks_at_second_order(ball, order, h_range):
    """log(error) against log(h) over a range where truncation dominates: slope 2 (the stencils
    are O(h²)); below it round-off takes over (ε/h^k), which is why the default h is larger."""
    m, x, _ = ball
    dirs = DenseDirections(torch.randn(2, 4, generator=g(1), dtype=F64))
    _, jets = jet_directional(m, x, dirs, order)
    exact = jets[order]
    hs = torch.logspace(math.log10(h_range[0]), math.log10(h_range[1]), 6, dtype=F64)
    errs = []
    for h in hs.tolist():
        _, fd = fd_directional(lambda y: m(y), x, dirs, {order}, {order: h})
        errs.append((fd[order] - exact).abs().max())
    lx, ly = hs.log(), torch.stack(errs).log()
    fit = ((lx - lx.mean()) * (ly - ly.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    assert 1.8 < fit.item() < 2.2, f"slope {fit.item():.3f}, errors {[f'{e:.2e}' for e in errs]}"
    # and the default step is close to the round-off balance: far better than h = 1e-8
    _, best = fd_directional(lambda y: m(y), x, dirs, {order}, {order: default_fd_step(F64, order)})
    _, tiny = fd_directional(lambda y: m(y), x, dirs, {order}, {order: 1e-8 if order == 2 else 1e-5})
    assert (best[order] - exact).abs().max() * 100 < (tiny[order] - exact).abs().max()


# -- time terms -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(METHODS))
def test_time_terms_are_deterministic_and_exact(spacetime, method):
    m, x, ref = spacetime
    for term in ("dt", "dtt"):
        a = estimate(term, m, x, method, generator=g(1))
        b = estimate(term, m, x, method, generator=g(2))
        tol = 1e-6 if method == "fd" else 1e-10
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a.detach(), ref[term], rtol=tol, atol=tol, msg=term)


@pytest.mark.parametrize("method", ["hte", "stde", "fd"])
def test_space_time_terms_in_one_call(spacetime, method):
    """estimate_terms on a problem with all four terms: the time terms exact, the spatial ones
    equal to their separate estimates from the same generator state (the first probe group)."""
    m, x, ref = spacetime
    u, terms = estimate_terms(m, x, method, generator=g(3), probes=4)
    assert list(terms) == ["dt", "laplacian", "dtt", "bilaplacian"]
    torch.testing.assert_close(u.detach(), m(x), rtol=0, atol=1e-14)
    tol = 1e-6 if method == "fd" else 1e-10
    for t in ("dt", "dtt"):
        torch.testing.assert_close(terms[t].detach(), ref[t], rtol=tol, atol=tol)
    alone = estimate("laplacian", m, x, method, generator=g(3), probes=4)
    torch.testing.assert_close(terms["laplacian"], alone, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(terms["bilaplacian"]).all()


# -- reproducibility, grad modes, params ------------------------------------------------------------
@pytest.mark.parametrize("method", ["sdgd", "hte", "stde", "fd"])
def test_same_generator_state_gives_bit_identical_estimates(ball, method):
    m, x, _ = ball
    a = estimate_terms(m, x, method, generator=g(9), probes=3)[1]
    b = estimate_terms(m, x, method, generator=g(9), probes=3)[1]
    c = estimate_terms(m, x, method, generator=g(12), probes=3)[1]
    for t in a:
        assert torch.equal(a[t], b[t]), t
        assert not torch.equal(a[t], c[t]), t


def test_stde_and_fd_work_under_no_grad_and_build_no_graph(ball):
    m, x, _ = ball
    for method in ("stde", "fd", "hte", "exact"):
        with torch.no_grad():
            u, terms = estimate_terms(m, x, method, generator=g(4), probes=3)
        _, ref = estimate_terms(m, x, method, generator=g(4), probes=3)
        for t in terms:
            assert not terms[t].requires_grad and terms[t].grad_fn is None
            torch.testing.assert_close(terms[t], ref[t].detach(), rtol=0, atol=0)
    m2 = PINN(m.problem, [p.clone().requires_grad_(True) for p in m.params])
    for method in ("stde", "fd"):  # with trainable weights and grad off: still no graph
        with torch.no_grad():
            _, terms = estimate_terms(m2, x, method, generator=g(4), probes=3)
        assert all(v.grad_fn is None for v in terms.values())


def test_backprop_through_the_estimates(ball):
    """A backprop solver differentiates the estimate in the weights: hte (reverse over reverse)
    and stde (reverse over jets) with the same probes give the same weight gradient."""
    m, x, _ = ball
    grads = {}
    for method in ("hte", "stde", "exact"):
        params = [p.clone().requires_grad_(True) for p in m.params]
        lap = estimate("laplacian", m, x, method, generator=g(6), probes=3, params=params)
        loss = (lap**2).mean()
        grads[method] = torch.autograd.grad(loss, params)
    for a, b in zip(grads["hte"], grads["stde"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(grads["hte"], grads["exact"]))


def test_params_evaluate_other_weights(ball):
    m, x, _ = ball
    other = [p * 1.3 for p in m.params]
    for method in ("exact", "stde", "fd"):
        u, terms = estimate_terms(m, x, method, generator=g(2), probes=3, params=other)
        u2, terms2 = estimate_terms(PINN(m.problem, other), x, method, generator=g(2), probes=3)
        torch.testing.assert_close(u, u2, rtol=0, atol=0)
        for t in terms:
            torch.testing.assert_close(terms[t], terms2[t], rtol=0, atol=0)


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda m, x: estimate("laplacian", m, x, "sdge", g(0)),
     "unknown method 'sdge'; known: exact, sdgd, hte, stde, fd"),
    (lambda m, x: estimate("grad", m, x, "stde", g(0)),
     "unknown term 'grad'; known: laplacian, bilaplacian, dt, dtt"),
    (lambda m, x: estimate("laplacian", m, x, "stde", g(0), eps=1.0),
     "unknown option.* eps; allowed: dist=rademacher|gaussian|coordinate"),
    (lambda m, x: estimate("laplacian", m, x, "sdgd", g(0), dist="gaussian"),
     "method 'sdgd' got unknown option.* dist; allowed: none"),
    (lambda m, x: estimate("laplacian", m, x, "hte", g(0), dist="coordinate"),
     "dist='coordinate'; allowed: rademacher, gaussian"),
    (lambda m, x: estimate("bilaplacian", m, x, "stde", g(0), dist="rademacher"),
     r"biased for the bilaplacian \(E v\^4 = 1, not 3\)"),
    (lambda m, x: estimate("bilaplacian", m, x, "hte", g(0), dist="rademacher"),
     "biased for the bilaplacian"),
    (lambda m, x: estimate("bilaplacian", m, x, "fd", g(0), dist="coordinate"),
     "not the bilaplacian"),
    (lambda m, x: estimate("dt", m, x, "stde", g(0)), "dt need a time-dependent problem; toy-ball has no time"),
    (lambda m, x: estimate("laplacian", m, x[:, :3], "stde", g(0)), r"x must be an \(n, 4\)"),
    (lambda m, x: estimate("laplacian", m, x.float(), "stde", g(0)), "dtype torch.float32"),
    (lambda m, x: estimate("laplacian", m, x, "stde", g(0), probes=0), "probes must be a positive"),
    (lambda m, x: estimate("laplacian", m, x, "stde", None), "draws random probes: pass generator"),
    (lambda m, x: estimate("laplacian", m, x, "stde", 42), "generator must be a torch.Generator"),
    (lambda m, x: estimate("laplacian", m, x, "fd", g(0), h=-1.0), "h must be a finite number > 0"),
    (lambda m, x: estimate("laplacian", m, x, "stde", g(0), params=m.params[:2]),
     "params must be a list of tensors shaped like model.params"),
])
def test_bad_input_is_refused_with_what_is_allowed(ball, call, match):
    m, x, _ = ball
    with pytest.raises(ValueError, match=match):
        call(m, x)


# -- the registered problems ----------------------------------------------------------------------
def registered_problems():
    return pinnbench.list_problems()


@pytest.mark.parametrize("problem_id", registered_problems())
def test_every_method_serves_every_registered_problem(problem_id):
    """Finite estimates of every operator term by every method; deterministic terms (dt, dtt,
    sdgd with every coordinate) equal exact; hte and fd equal stde on the same probes; stde's mean
    over independent generator states within 4 standard errors of exact."""
    from pinnbench.maths.problem_registry import problem_class

    dim = max(problem_class(problem_id).min_dim, 4)
    p = pinnbench.make_problem(problem_id, dim=dim, seed=0, dtype=F64)
    m = make_model(p, width=8, depth=2, generator=g(0))
    x = p.sample_interior(3, g(1))
    u_ex, exact = estimate_terms(m, x, "exact")
    torch.testing.assert_close(u_ex.detach(), m(x), rtol=0, atol=1e-13)
    assert list(exact) == list(p.operator.names)
    runs = {meth: estimate_terms(m, x, meth, generator=g(2), probes=3)[1]
            for meth in METHODS if meth != "exact"}
    for meth, terms in runs.items():
        assert list(terms) == list(p.operator.names)
        for t, v in terms.items():
            assert v.shape == (3,) and torch.isfinite(v).all(), (meth, t)
            if t in ("dt", "dtt"):
                tol = 1e-6 if meth == "fd" else 1e-10
                torch.testing.assert_close(v.detach(), exact[t].detach(), rtol=tol, atol=tol)
    for t in runs["stde"]:
        torch.testing.assert_close(runs["hte"][t].detach(), runs["stde"][t], rtol=1e-9, atol=1e-9)
        # fd's truncation error scales with the term's size (the clamped biharmonics reach ~1e3):
        # the tolerance is relative to the largest exact value, not to each estimate (an estimate
        # from 3 probes can be near zero where the term is not)
        tol = 3e-4 if t == "bilaplacian" else 1e-5
        scale = max(1.0, float(exact[t].detach().abs().max()))
        torch.testing.assert_close(runs["fd"][t], runs["stde"][t], rtol=tol, atol=tol * scale)
    full = estimate_terms(m, x, "sdgd", generator=None, probes=dim)[1]
    for t in full:
        torch.testing.assert_close(full[t].detach(), exact[t].detach(), rtol=1e-9, atol=1e-9)
    est = [estimate_terms(m, x, "stde", generator=g(100 + r), probes=4)[1] for r in range(60)]
    for t in p.operator.names:
        s = torch.stack([e[t] for e in est])
        se = s.std(0) / math.sqrt(len(est))
        z = (s.mean(0) - exact[t].detach()).abs() / se.clamp_min(1e-12 * exact[t].abs().max())
        assert (z < 4.0).all() or torch.allclose(s.mean(0), exact[t].detach(), rtol=1e-9), \
            (t, z.tolist())


@pytest.mark.parametrize("method", ["hte", "sdgd", "exact"])
def test_batched_hessian_vector_products_equal_one_at_a_time(ball, method, monkeypatch):
    """The second derivatives along V directions come from batched backward passes in groups;
    a group of one direction (the old Python loop) gives the same estimate and the same weight
    gradient through it."""
    from pinnbench.maths.estimators import directional

    m, x, _ = ball

    def run():
        params = [p.clone().requires_grad_(True) for p in m.params]
        lap = estimate("laplacian", m, x, method, generator=g(8), probes=5, params=params)
        return lap.detach(), torch.autograd.grad((lap**2).mean(), params)

    batched, grads = run()
    monkeypatch.setattr(directional, "BATCHED_ELEMENTS", 1)
    single, grads1 = run()
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, grads1):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# -- only what the residual reads -------------------------------------------------------------------
def test_a_problem_reads_u_only_where_it_has_a_pointwise_part():
    assert not pinnbench.make_problem("poisson-2body-v1", dim=5).reads_value
    assert not pinnbench.make_problem("heat-v1", dim=5).reads_value
    assert pinnbench.make_problem("allen-cahn-2body-v1", dim=5).reads_value
    assert pinnbench.make_problem("sine-gordon-3body-v1", dim=5).reads_value


@pytest.mark.parametrize("pid", ["poisson-2body-v1", "heat-v1", "hjb-lin-v1",
                                 "biharmonic-clamped-2body-v1"])
@pytest.mark.parametrize("method", ["stde", "hte", "fd"])
def test_terms_without_u_are_the_terms_with_it_bit_for_bit(pid, method):
    """``value=False`` (a residual that does not read u): stde forms no coefficient 0 and
    returns u as None, the other methods the u they computed anyway; every term is the same
    number as with ``value=True``, and so is the linear residual (it never read u)."""
    p = pinnbench.make_problem(pid, dim=6, seed=2, dtype=torch.float32)
    m = make_model(p, width=16, depth=3, generator=g(3))
    x = p.sample_interior(5, g(4))
    u1, t1 = estimate_terms(m, x, method, generator=g(9), probes=3)
    u0, t0 = estimate_terms(m, x, method, generator=g(9), probes=3, value=False)
    assert (u0 is None) == (method == "stde")
    assert t0.keys() == t1.keys()
    for k in t1:
        assert torch.equal(t0[k], t1[k]), k
    assert torch.equal(p.residual(t0, u0, x), p.residual(t1, u1, x))


def test_a_solvers_loss_is_the_same_with_u_formed_or_not(monkeypatch):
    """bp's and sdze's losses on a linear problem with u not formed (reads_value False) equal
    the losses with it formed, to the bit."""
    from pinnbench.solver import solver_from_spec

    losses = {}
    for reads in (False, True):
        monkeypatch.setattr(Problem, "reads_value", property(lambda self, r=reads: r))
        for spec in ("bp", "sdze"):
            p = pinnbench.make_problem("poisson-2body-v1", dim=8, seed=0)
            m = make_model(p, width=16, depth=3, generator=g(1))
            s = solver_from_spec(f"{spec}[points=7,probes=3]")
            s.setup(p, m, g(5))
            losses[reads, spec] = [float(s.step()) for _ in range(3)]
    for spec in ("bp", "sdze"):
        assert losses[False, spec] == losses[True, spec], spec
