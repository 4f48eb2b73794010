"""Every estimator's constant, checked exactly: with the probes it drew (read back from
``draw_probes``), each estimate must equal its documented formula applied to closed-form
directional derivatives, to rounding in float64, at any number of probes. A wrong constant
(1/V, d/|J|, the 1/3 of the Gaussian biharmonic, a stencil weight, a jet's k!) fails here
whatever the sample size; the statistical tests of tests/test_estimators.py only see it when it
is large against the estimator's spread.

The test function (time last, D = d + 1):

    u(x) = A(x) N(x) + q(x)²,   q(x) = xᵀSx (S symmetric),   A(x) = 1 + a·x,
    N(x) = wᵀ tanh(W₀x + b₀) + c   (one hidden tanh layer: the PINN of make_model, depth 1)

with, along v (β = xᵀSv, γ = vᵀSv, z = W₀x + b₀, p = W₀v, t = tanh z):

    D¹q² = 4qβ,  D²q² = 8β² + 4qγ,  D³q² = 24βγ,  D⁴q² = 24γ²
    DᵏN = Σ_h w_h tanh⁽ᵏ⁾(z_h) p_hᵏ,  tanh' = 1 − t², tanh'' = −2t(1 − t²),
          tanh''' = (1 − t²)(6t² − 2),  tanh'''' = (1 − t²) t (16 − 24t²)
    Dᵏ(AN) = A DᵏN + k (a·v) Dᵏ⁻¹N                       (A is affine)

and the mixed derivatives of the nested (exact, sdgd) bilaplacian
∂²_i∂²_j q² = 8 (S_ii S_jj + 2 S_ij²),
∂²_i∂²_j (AN) = A N_iijj + 2 a_i N_ijj + 2 a_j N_iij,  N_iijj = Σ_h w_h tanh''''(z_h) W_hi² W_hj²,
N_ijj = Σ_h w_h tanh'''(z_h) W_hi W_hj² (N_iij likewise).

Finite differences: with N ≡ 0 (zero output layer) u = q² is a quartic, whose Taylor series
ends at t⁴, so the central stencils of pinnbench.maths.estimators.directional are exactly
(u(h) − u(−h))/2h = D¹ + h²D³/6,  (u(h) − 2u(0) + u(−h))/h² = D² + h²D⁴/12,
and the five-point fourth difference is D⁴ (docs/domain.md §2).
"""

from __future__ import annotations

import math

import pytest
import torch

from pinnbench.maths.directions import CoordinateDirections, DenseDirections
from pinnbench.maths.estimators import draw_probes, estimate, estimate_terms
from pinnbench.maths.estimators.probes import dense_probes
from pinnbench.maths.jets import Jet
from pinnbench.maths.model import make_model
from pinnbench.maths.problem import LinearTerm, Operator, Problem

import autodiff_ops

F64 = torch.float64
DIM = 5  # spatial d; D = 6 with time
PROBES = 3  # < d: sdgd and coordinate probes sample
FD_STEP = 0.05  # large enough that the h² terms are far above round-off (ε/h⁴ ~ 4e-11)
ALL_TERMS = ("laplacian", "bilaplacian", "dt", "dtt", "weighted_laplacian", "drift",
             "grad_power_mean")


def _dense(dirs) -> torch.Tensor:
    """(V, D) rows of any Directions."""
    if isinstance(dirs, DenseDirections):
        return dirs.v
    return torch.eye(dirs.dim, dtype=F64)[dirs.index]


class QuarticPlusNet(Problem):
    """u = (1 + a·x) N(x) + (xᵀSx)², time last; the operator is set per instance."""

    family = "quartic-plus-net"
    time_dependent = True
    gradient_exponent = 1.75

    def __init__(self, terms, dim=DIM, seed=0):
        super().__init__(dim, seed=seed, dtype=F64)
        self.operator = Operator(tuple(LinearTerm(t) for t in terms))
        gen = torch.Generator().manual_seed(100 + seed)
        m = torch.randn(self.input_dim, self.input_dim, generator=gen, dtype=F64)
        self.S = (m + m.T) / (2 * math.sqrt(self.input_dim))
        self.a = 0.5 * torch.randn(self.input_dim, generator=gen, dtype=F64)

    def ansatz(self, x):
        q = ((x @ self.S) * x).sum(dim=1)
        return 1.0 + x @ self.a, q * q

    def ansatz_jet(self, x, dirs, order):
        v = _dense(dirs)
        q = Jet([((x @ self.S) * x).sum(dim=1, keepdim=True), 2.0 * (x @ self.S) @ v.T,
                 ((v @ self.S) * v).sum(dim=1).unsqueeze(0)], order)
        a = Jet.line(1.0 + (x @ self.a).unsqueeze(1), (v @ self.a).unsqueeze(0), order)
        return a, q * q


def _tanh_derivatives(t):
    s = 1.0 - t * t
    return [t, s, -2.0 * t * s, s * (6.0 * t * t - 2.0), s * t * (16.0 - 24.0 * t * t)]


class ClosedForm:
    """Directional derivatives of the model's u in closed form (module docstring)."""

    def __init__(self, model):
        p = model.problem
        self.S, self.a, self.d = p.S, p.a, p.dim
        self.w0, self.b0, w1, b1 = model.params
        self.w, self.c = w1[0], b1[0]

    def along(self, x, v, k):
        """D_v^k u, (n, V), for v (V, D) shared by the points or (n, V, D) one set per point."""
        v = v.expand(x.shape[0], *v.shape) if v.ndim == 2 else v
        q = ((x @ self.S) * x).sum(dim=1, keepdim=True)  # (n, 1)
        beta = torch.einsum("nd,de,nve->nv", x, self.S, v)
        gamma = torch.einsum("nvd,de,nve->nv", v, self.S, v)
        poly = [q * q, 4 * q * beta, 8 * beta**2 + 4 * q * gamma, 24 * beta * gamma,
                24 * gamma**2][k]
        tanh = _tanh_derivatives(torch.tanh(x @ self.w0.T + self.b0))  # each (n, h)
        proj = torch.einsum("nvd,hd->nvh", v, self.w0)

        def net(j):
            out = torch.einsum("h,nh,nvh->nv", self.w, tanh[j], proj**j)
            return out + self.c if j == 0 else out
        amp = (1.0 + x @ self.a).unsqueeze(1)
        slope = torch.einsum("nvd,d->nv", v, self.a)
        ansatz_net = amp * net(k) + (k * slope * net(k - 1) if k else 0.0)
        return poly + ansatz_net

    def mixed(self, x, inner, outer):
        """∂²_i ∂²_j u for i in ``outer``, j in ``inner`` (index tensors): (n, |I|, |J|)."""
        S, w0 = self.S, self.w0
        poly = 8 * (S.diagonal()[outer][:, None] * S.diagonal()[inner][None, :]
                    + 2 * S[outer][:, inner] ** 2)
        tanh = _tanh_derivatives(torch.tanh(x @ w0.T + self.b0))
        wi, wj = w0[:, outer], w0[:, inner]  # (h, |I|), (h, |J|)
        n_iijj = torch.einsum("h,nh,hi,hj->nij", self.w, tanh[4], wi**2, wj**2)
        n_ijj = torch.einsum("h,nh,hi,hj->nij", self.w, tanh[3], wi, wj**2)
        n_iij = torch.einsum("h,nh,hi,hj->nij", self.w, tanh[3], wi**2, wj)
        amp = (1.0 + x @ self.a)[:, None, None]
        return (poly + amp * n_iijj + 2 * self.a[outer][None, :, None] * n_ijj
                + 2 * self.a[inner][None, None, :] * n_iij)


def _model(terms, fd: bool):
    """The test function's PINN at 4 points; for fd the output layer is zero (u = q²)."""
    problem = QuarticPlusNet(terms)
    gen = torch.Generator().manual_seed(7)
    model = make_model(problem, width=6, depth=1, generator=gen)
    model.params[1].copy_(0.3 * torch.randn(6, generator=gen, dtype=F64))
    model.params[3].fill_(0.2)
    if fd:
        model.params[2].zero_()
        model.params[3].zero_()
    x = 0.4 * torch.randn(4, problem.input_dim, generator=gen, dtype=F64)
    return model, x


def _stencil(cf, x, v, k):
    """What the central stencil of order k gives for u = q² (exact: module docstring)."""
    h2 = FD_STEP**2
    return {1: cf.along(x, v, 1) + h2 / 6 * cf.along(x, v, 3),
            2: cf.along(x, v, 2) + h2 / 12 * cf.along(x, v, 4),
            4: cf.along(x, v, 4)}[k]


def expected(model, x, drawn, fd: bool) -> dict[str, torch.Tensor]:
    """Each term by its documented formula (pinnbench.maths.estimators.terms) from the drawn probes."""
    cf, d, D = ClosedForm(model), DIM, DIM + 1
    deriv = (lambda v, k: _stencil(cf, x, v, k)) if fd else (lambda v, k: cf.along(x, v, k))
    e_t = torch.eye(D, dtype=F64)[-1:]
    out = {}
    for g in drawn.groups.values():
        v = _dense(g.dirs)[:g.count]
        for t in g.terms:
            if t == "laplacian":
                scale = {"all": 1.0, "coordinate": d / g.count}.get(g.kind, 1.0 / g.count)
                out[t] = deriv(v, 2).sum(dim=1) * scale
            elif t == "bilaplacian":  # gaussian probes: (1/3)(1/V) Σ D⁴
                assert g.kind == "gaussian"
                out[t] = deriv(v, 4).mean(dim=1) / 3.0
            elif t == "weighted_laplacian":
                j = g.dirs.index[:g.count]
                out[t] = (x[:, j] ** 2 * deriv(v, 2)).sum(dim=1) * (d / g.count)
            elif t == "grad_power_mean":
                out[t] = deriv(v, 1).abs().pow(model.problem.gradient_exponent).mean(dim=1)
    for t, (inner, outer) in drawn.nested.items():  # (d/|I|)(d/|J|) Σ_I Σ_J ∂²_i ∂²_j u
        out[t] = (cf.mixed(x, inner.index, outer.index).sum(dim=(1, 2))
                  * (d / inner.count) * (d / outer.count))
    if "drift" in drawn.names:  # along w = (x_spatial, 0), one direction per point
        w = torch.cat([x[:, :d], torch.zeros(x.shape[0], 1, dtype=F64)], dim=1)
        out["drift"] = deriv(w[:, None, :], 1)[:, 0]
    for t, k in (("dt", 1), ("dtt", 2)):
        if t in drawn.names:
            out[t] = deriv(e_t, k)[:, 0]
    return out


def _allowed(method, dist):
    """The terms a (method, dist) serves: the bilaplacian needs Gaussian probes (or exact/sdgd)."""
    if method in ("exact", "sdgd") or dist in (None, "gaussian"):
        return ALL_TERMS
    return tuple(t for t in ALL_TERMS if t != "bilaplacian")


CASES = [("exact", None), ("sdgd", None)] + [
    (m, dist) for m in ("hte", "stde", "fd")
    for dist in (None, "rademacher", "gaussian") + (("coordinate",) if m != "hte" else ())]


def _opts(method, dist):
    opts = {} if dist is None else {"dist": dist}
    return {**opts, "h": FD_STEP} if method == "fd" else opts


def _check(method, dist, terms, seed):
    fd = method == "fd"
    model, x = _model(terms, fd)
    opts = _opts(method, dist)
    drawn = draw_probes(model.problem, method, torch.Generator().manual_seed(seed), PROBES,
                        dtype=F64, **opts)
    u, got = estimate_terms(model, x, method, probes=PROBES, drawn=drawn, **opts)
    want = expected(model, x, drawn, fd)
    assert list(got) == list(terms) and set(want) == set(terms)
    torch.testing.assert_close(u.detach(), ClosedForm(model).along(x, x[:, None] * 0, 0)[:, 0],
                               rtol=1e-12, atol=1e-12)
    tol = 1e-7 if fd else 1e-10  # fd: round-off of the fourth difference, ~ε/h⁴
    for t in terms:
        torch.testing.assert_close(got[t].detach(), want[t], rtol=tol, atol=tol,
                                   msg=f"{method}[{dist}] {t}")


@pytest.mark.parametrize("method, dist", CASES, ids=[f"{m}-{d or 'default'}" for m, d in CASES])
def test_every_term_equals_its_formula_on_the_drawn_probes(method, dist):
    """All the terms a (method, dist) serves in one operator (shared probe groups, the time row
    that rides along stde's first group), then each term alone; two probe draws each."""
    allowed = _allowed(method, dist)
    for seed in (1, 2):
        _check(method, dist, allowed, seed)
    for t in allowed:
        _check(method, dist, (t,), 3)


def test_estimate_of_one_term_equals_the_formula():
    """``estimate`` (the one-term entry point) draws what ``draw_probes`` draws for that term."""
    for method, dist in CASES:
        term = "bilaplacian" if "bilaplacian" in _allowed(method, dist) else "laplacian"
        model, x = _model((term,), method == "fd")
        opts = _opts(method, dist)
        got = estimate(term, model, x, method, generator=torch.Generator().manual_seed(5),
                       probes=PROBES, **opts)
        drawn = draw_probes(model.problem, method, torch.Generator().manual_seed(5), PROBES,
                            dtype=F64, **opts)
        want = expected(model, x, drawn, method == "fd")[term]
        tol = 1e-7 if method == "fd" else 1e-10
        torch.testing.assert_close(got.detach(), want, rtol=tol, atol=tol, msg=method)


def test_the_closed_forms_equal_autodiff():
    """The reference of this module, anchored: its directional and mixed derivatives equal
    torch autograd's (tests/autodiff_ops.py) at random directions."""
    model, x = _model(ALL_TERMS, fd=False)
    cf = ClosedForm(model)
    v = torch.randn(3, DIM + 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = autodiff_ops.directional_derivatives(model, x, v, 4)
    for k in range(5):
        torch.testing.assert_close(cf.along(x, v, k), ref[k], rtol=1e-10, atol=1e-10,
                                   msg=f"order {k}")
    lap_lap = cf.mixed(x, torch.arange(DIM), torch.arange(DIM)).sum(dim=(1, 2))
    torch.testing.assert_close(lap_lap, autodiff_ops.bilaplacian(model, x, DIM),
                               rtol=1e-10, atol=1e-10)


def test_probe_distributions_have_the_documented_moments():
    """The constants above assume E[v vᵀ] = I (and E v_i⁴ = 3 for the Gaussian biharmonic):
    Rademacher entries are exactly ±1; Gaussian second and fourth moments within 4 standard
    errors of 1 and 3 over 2·10⁵ entries; the time column of spatial probes is zero."""
    gen = torch.Generator().manual_seed(0)
    spec = dict(dtype=F64, device=torch.device("cpu"))
    rad = dense_probes("rademacher", 400, 500, 501, gen, **spec).v
    assert torch.equal(rad[:, :500].abs(), torch.ones(400, 500, dtype=F64))
    assert torch.equal(rad[:, 500], torch.zeros(400, dtype=F64))
    gauss = dense_probes("gaussian", 400, 500, 501, gen, **spec).v
    assert torch.equal(gauss[:, 500], torch.zeros(400, dtype=F64))
    s = gauss[:, :500].flatten()
    for power, mean, var in ((2, 1.0, 2.0), (4, 3.0, 96.0)):  # Var v² = 2, Var v⁴ = 105 − 9
        se = math.sqrt(var / s.numel())
        assert abs(float(s.pow(power).mean()) - mean) < 4 * se, (power, float(s.pow(power).mean()))
