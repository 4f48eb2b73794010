"""Every registered problem: source = operator(exact) by autograd, ansatz jets = autodiff,
boundary data, samplers, determinism, chunking, gPINN source gradients."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from pinnbench import list_problems, make_model, make_problem
from pinnbench.maths.directions import CoordinateDirections, DenseDirections, Directions
from pinnbench.problems import _chunked
from pinnbench.problems.ball import BallProblem, resolve_radius
from pinnbench.problems.biharmonic import ClampedBiharmonicThreeBody, radial_product_bilaplacian
from pinnbench.problems._many_body import ThreeBody
import autodiff_ops as ad

PROBLEMS = list_problems()
F64 = torch.float64


def _make(pid: str, d: int, seed: int = 7):
    return make_problem(pid, dim=d, seed=seed, dtype=F64)


def _interior(p, n: int = 6, seed: int = 0) -> torch.Tensor:
    """Points well inside the domain: sampled, then radii pulled into the middle of the range."""
    x = p.sample_interior(n, torch.Generator().manual_seed(seed))
    xs = x[:, : p.dim]
    r = xs.norm(dim=1, keepdim=True)
    lo, hi = _radii(p)
    target = lo + (hi - lo) * (0.15 + 0.7 * (r - lo) / (hi - lo))
    xs.mul_(target / r)
    return x


def _radii(p) -> tuple[float, float]:
    if getattr(p, "annulus", None):
        return p.annulus
    if isinstance(p, BallProblem):
        return 0.0, p.radius
    return 0.0, 1.0  # time-dependent problems: unit ball


def _close(actual, expected, rtol):
    expected = torch.as_tensor(expected, dtype=F64)
    actual = torch.as_tensor(actual, dtype=expected.dtype).expand_as(expected)
    scale = max(1.0, float(expected.abs().max()))
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("pid", PROBLEMS)
def test_every_problem_states_its_conditions_and_whether_it_is_well_posed(pid):
    p = make_problem(pid, dim=6)
    assert isinstance(p.well_posed, bool) and p.boundary_conditions
    assert bool(p.ill_posed_reason) == (not p.well_posed)


def test_registry_lists_the_suite():
    expected = {f"{eq}-{body}{scaled}-v1" for eq in ("poisson", "allen-cahn", "sine-gordon")
                for body in ("2body", "3body") for scaled in ("", "-scaled")}
    expected |= {"biharmonic-3body-v1", "biharmonic-clamped-3body-v1", "biharmonic-clamped-2body-v1",
                 "biharmonic-clamped-2body-scaled-v1", "heat-v1", "wave-v1", "hjb-lin-v1",
                 "bsb-v1"}
    assert expected <= set(PROBLEMS)


# -- source = L exact ----------------------------------------------------------------------------
@pytest.mark.parametrize("d", [5, 8])
@pytest.mark.parametrize("pid", PROBLEMS)
def test_source_matches_operator_by_autograd(pid, d):
    p = _make(pid, d)
    x = _interior(p)
    expected = ad.apply_operator(p, p.exact, x)
    f = p.source(x)
    assert f.shape == (x.shape[0],)
    # relative to the size of the source, or where f = 0 (wave, bsb) to the size of its terms
    scale = max(float(expected.abs().max()), *(
        abs(t.coef) * float(ad.problem_term(p, t.name, p.exact, x).abs().max())
        for t in p.operator.terms))
    assert scale > 1e-3  # a non-trivial comparison
    err = float((f - expected).abs().max()) / scale
    assert err < 1e-8, f"{pid} d={d}: relative error {err:.2e}"


def test_residual_of_exact_is_zero():
    """residual(terms of u*, u*, x) = 0: the sign conventions of terms, coefs and f agree."""
    for pid in ("allen-cahn-2body-v1", "heat-v1", "wave-v1", "biharmonic-3body-v1",
                "biharmonic-clamped-3body-v1", "hjb-lin-v1", "bsb-v1"):
        p = _make(pid, 5)
        x = _interior(p)
        terms = {t.name: ad.problem_term(p, t.name, p.exact, x) for t in p.operator.terms}
        res = p.residual(terms, p.exact(x), x)
        assert float(res.abs().max()) < 1e-8 * max(1.0, float(p.source(x).abs().max()))


# -- jets ------------------------------------------------------------------------------------------
def _directions(p, kind: str):
    D = p.input_dim
    if kind == "dense":
        v = torch.randn(3, D, generator=torch.Generator().manual_seed(5), dtype=F64)
        return DenseDirections(v), v
    index = torch.tensor([0, D - 1, D // 2])  # includes time for time-dependent problems
    return CoordinateDirections(index, D, F64), torch.eye(D, dtype=F64)[index]


@pytest.mark.parametrize("kind", ["dense", "coordinate"])
@pytest.mark.parametrize("pid", PROBLEMS)
def test_ansatz_jets_match_autodiff(pid, kind):
    p = _make(pid, 5)
    x = _interior(p, n=4)
    dirs, v = _directions(p, kind)
    order = 4
    a_jet, b_jet = p.ansatz_jet(x, dirs, order)
    a_ref = ad.directional_derivatives(lambda y: p.ansatz(y)[0], x, v, order)
    b_ref = ad.directional_derivatives(lambda y: p.ansatz(y)[1], x, v, order)
    for k in range(order + 1):
        _close(a_jet.derivative(k), a_ref[k], 1e-10)
        _close(b_jet.derivative(k), b_ref[k], 1e-10)
    a, b = p.ansatz(x)
    _close(a_jet.value, a.unsqueeze(1).expand(-1, 3), 1e-14)
    _close(b_jet.value, b.unsqueeze(1).expand(-1, 3), 1e-14)


@pytest.mark.parametrize("kind", ["dense", "coordinate"])
@pytest.mark.parametrize("pid", ["poisson-2body-v1", "biharmonic-clamped-3body-v1", "heat-v1", "wave-v1",
                                 "sine-gordon-3body-scaled-v1"])
def test_model_jets_match_autodiff(pid, kind):
    """u = A N + B through pinnbench.maths.model.PINN.jet, against autodiff of the model itself."""
    p = _make(pid, 5)
    model = make_model(p, width=8, depth=2, generator=torch.Generator().manual_seed(3))
    x = _interior(p, n=4)
    dirs, v = _directions(p, kind)
    jet = model.jet(x, dirs, 4)
    ref = ad.directional_derivatives(model, x, v, 4)
    for k in range(5):
        _close(jet.derivative(k), ref[k], 1e-10)


# -- boundary --------------------------------------------------------------------------------------
def _boundary_points(p, n: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Points of every boundary piece of the problem's domain."""
    g = torch.randn(n, p.dim, generator=gen, dtype=F64)
    unit = g / g.norm(dim=1, keepdim=True)
    if p.time_dependent:
        t = torch.rand(n, 1, generator=gen, dtype=F64)
        inside = _interior(p, n, seed=11)
        initial = torch.cat([inside[:, :-1], torch.full((n, 1), p.condition_time, dtype=F64)],
                            dim=1)  # the initial (heat, wave) or terminal (hjb-lin, bsb) slice
        return [torch.cat([unit, t], dim=1), initial]
    lo, hi = _radii(p)
    return [unit * r for r in (lo, hi) if r > 0]


@pytest.mark.parametrize("pid", PROBLEMS)
def test_ansatz_matches_boundary_data(pid):
    p = _make(pid, 6)
    model = make_model(p, width=8, depth=2, generator=torch.Generator().manual_seed(3))
    gen = torch.Generator().manual_seed(2)
    for xb in _boundary_points(p, 16, gen):
        a, b = p.ansatz(xb)
        u = p.exact(xb)
        assert float(a.abs().max()) < 1e-12
        _close(b, u, 1e-12)
        _close(model(xb), u, 1e-12)  # any N: u = A N + B equals u* on the boundary
    x = _interior(p, 16)
    a, _ = p.ansatz(x)
    assert float(a.abs().min()) > 1e-3  # A vanishes only on the boundary


def _normal_derivative(fn, xb):
    """d fn / dn on points of a sphere centred at 0 (n = x / ||x||), by autograd."""
    return (ad.gradient(fn, xb) * xb).sum(dim=1) / xb.norm(dim=1)


@pytest.mark.parametrize("pid", [p for p in PROBLEMS if any(
    "du/dn" in bc for bc in make_problem(p, dim=6).boundary_conditions)])
def test_clamped_ansatz_has_zero_normal_derivative(pid):
    """Where a problem states du/dn = 0, u = A N + B satisfies it for any N (to 1e-10), and so
    does u*."""
    p = _make(pid, 6)
    model = make_model(p, width=8, depth=2, generator=torch.Generator().manual_seed(3))
    for xb in _boundary_points(p, 16, torch.Generator().manual_seed(2)):
        scale = 1.0 + float(ad.gradient(p.exact, _interior(p, 16)).abs().max())
        assert float(_normal_derivative(model, xb).abs().max()) < 1e-10 * scale
        assert float(_normal_derivative(p.exact, xb).abs().max()) < 1e-10 * scale


def _radial_biharmonics(d: int):
    """A basis of the radial solutions of Lap^2 w = 0 in R^d minus the origin (d odd): 1, r^2,
    r^(2-d), r^(4-d), as functions of r, with their r-derivatives."""
    powers = [0.0, 2.0, 2.0 - d, 4.0 - d]
    values = [(lambda r, k=k: r**k) for k in powers]
    return values, [(lambda r, k=k: k * r ** (k - 1)) for k in powers]


@pytest.mark.parametrize("pid", [p for p in PROBLEMS if make_problem(p, dim=5).order == 4])
def test_fourth_order_well_posed_flag_against_the_radial_counterexample(pid):
    """Issue 12's counterexample: w radial biharmonic, w(r_in) = w(r_out) = 0, is in the ansatz
    (w / A bounded) unless A vanishes to second order on a sphere where w' does not. The flag
    ``well_posed`` must say whether a non-zero such w exists (then u* + alpha w has zero
    residual for every alpha)."""
    d = 5
    p = _make(pid, d)
    values, slopes = _radial_biharmonics(d)
    x = torch.randn(4, d, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = x / x.norm(dim=1, keepdim=True) * 1.5
    for w in values:  # the basis is biharmonic (checked, not assumed)
        assert float(ad.bilaplacian(lambda y: w(y.norm(dim=1)), x).abs().max()) < 1e-9
    lo, hi = p.annulus
    rows = [[w(torch.tensor(r, dtype=F64)) for w in values] for r in (lo, hi)]
    for r in (lo, hi):  # A's order of vanishing on the sphere of radius r
        xb = torch.randn(8, d, generator=torch.Generator().manual_seed(1), dtype=F64)
        xb = xb / xb.norm(dim=1, keepdim=True) * r
        a_n = _normal_derivative(lambda y: p.ansatz(y)[0], xb)
        if float(a_n.abs().max()) < 1e-10:  # double zero: w / A bounded needs w'(r) = 0 too
            rows.append([dw(torch.tensor(r, dtype=F64)) for dw in slopes])
    m = torch.tensor([[float(v) for v in row] for row in rows], dtype=F64)
    admissible_dimension = 4 - int(torch.linalg.matrix_rank(m, rtol=1e-10))
    assert p.well_posed == (admissible_dimension == 0), admissible_dimension
    if not p.well_posed:
        assert p.ill_posed_reason


def test_radial_product_rule_gives_the_published_source():
    """With q = A (not A^2) the clamped problem's source formula is the v1 source."""
    p = _make("biharmonic-3body-v1", 7)
    x = _interior(p, 5)
    s = x.square().sum(dim=1)
    a = (1 - s) * (4 - s)
    q = [a, 2 * s - 5, 2.0, 0.0, 0.0]
    got = radial_product_bilaplacian(q, s, 7, ThreeBody.sums(x, p.coefficients, 4))
    _close(got, p.source(x), 1e-12)
    assert isinstance(_make("biharmonic-clamped-3body-v1", 7), ClampedBiharmonicThreeBody)


@pytest.mark.parametrize("pid", ["heat-v1", "wave-v1", "hjb-lin-v1", "bsb-v1"])
def test_time_ansatz_is_not_the_solution_inside(pid):
    p = _make(pid, 5)
    x = _interior(p, 64)
    _, b = p.ansatz(x)
    assert float((b - p.exact(x)).abs().max()) > 1e-2


def test_wave_initial_velocity_is_zero_for_any_network():
    p = _make("wave-v1", 5)
    model = make_model(p, width=8, depth=2, generator=torch.Generator().manual_seed(3))
    x = _interior(p, 8)
    x[:, -1] = 0.0
    assert float(ad.dt(model, x).abs().max()) < 1e-12
    assert float(ad.dt(p.exact, x).abs().max()) < 1e-12


# -- samplers --------------------------------------------------------------------------------------
def _ks_uniform(samples: torch.Tensor, lo: float, hi: float) -> float:
    """Kolmogorov-Smirnov statistic of samples against U[lo, hi]."""
    u = ((samples.double() - lo) / (hi - lo)).sort().values
    n = u.numel()
    i = torch.arange(1, n + 1, dtype=F64)
    return float(torch.maximum(i / n - u, u - (i - 1) / n).max())


KS_CRIT_001 = 1.95  # sqrt(n) * D at level 0.001


@pytest.mark.parametrize("pid", PROBLEMS)
def test_sampler_domain_and_radial_law(pid):
    n = 4000
    p = make_problem(pid, dim=7, seed=1)  # float32, the default
    x = p.sample_interior(n, torch.Generator().manual_seed(9))
    assert x.shape == (n, p.input_dim) and x.dtype == torch.float32
    r = x[:, : p.dim].double().norm(dim=1)
    lo, hi = _radii(p)
    assert float(r.min()) >= lo * (1 - 1e-6) and float(r.max()) <= hi * (1 + 1e-6)
    assert _ks_uniform(r, lo, hi) * math.sqrt(n) < KS_CRIT_001
    # the test can fail: volume-uniform radii (r ~ U^(1/d)) are rejected
    assert _ks_uniform(lo + (hi - lo) * ((r - lo) / (hi - lo)) ** 0.5, lo, hi) * math.sqrt(n) > KS_CRIT_001
    if p.time_dependent:
        assert _ks_uniform(x[:, -1], 0.0, 1.0) * math.sqrt(n) < KS_CRIT_001


# -- determinism -----------------------------------------------------------------------------------
@pytest.mark.parametrize("pid", PROBLEMS)
def test_same_seed_same_problem_different_seed_different(pid):
    a, b, c = (make_problem(pid, dim=6, seed=s, dtype=F64) for s in (3, 3, 4))
    if hasattr(a, "coefficients"):
        assert torch.equal(a.coefficients, b.coefficients)
        assert not torch.allclose(a.coefficients, c.coefficients)
        # float32 coefficients are the float64 ones rounded: the same c in either dtype
        f32 = make_problem(pid, dim=6, seed=3)
        assert torch.equal(f32.coefficients, a.coefficients.float())
    xa = a.sample_interior(5, torch.Generator().manual_seed(1))
    xb = b.sample_interior(5, torch.Generator().manual_seed(1))
    xc = b.sample_interior(5, torch.Generator().manual_seed(2))
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)
    (ta, ua), (tb, ub), (tc, uc) = (next(q.test_chunks()) for q in (a, b, c))
    assert torch.equal(ta, tb) and torch.equal(ua, ub)
    assert not torch.equal(ta, tc)
    assert torch.equal(ua, a.exact(ta))


# -- chunking and scale ----------------------------------------------------------------------------
@pytest.mark.parametrize("pid", PROBLEMS)
def test_blocked_evaluation_equals_one_block(pid, monkeypatch):
    """Tiny blocks (with the two/three-body halos) give the same numbers as a single block."""
    p = _make(pid, 23)
    x = _interior(p, 5)
    dirs, _ = _directions(p, "dense")
    def evaluate():
        a_jet, b_jet = p.ansatz_jet(x, dirs, 3)
        return (p.exact(x), p.source(x), *p.ansatz(x), a_jet[1], b_jet[0], b_jet[1], b_jet[3])

    whole = evaluate()
    monkeypatch.setattr(_chunked, "BLOCK_ELEMENTS", 5 * 4)  # 4 columns per block (2 with V = 3)
    blocked = evaluate()
    for w, b in zip(whole, blocked):
        _close(b, w, 1e-12)


def test_power_sum_fallback_for_other_directions():
    """A Directions type that is neither dense nor coordinate goes through dirs.power_sum."""
    class Plain(Directions):
        def __init__(self, v):
            self.inner = DenseDirections(v)
            self.count, self.dim = v.shape

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def power_sum(self, y, k):
            return self.inner.power_sum(y, k)

    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    v = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=F64)
    fns = [torch.cosh, torch.sinh, torch.cosh]
    expected = [fn(x[:, :5]) @ (v[:, :5] ** k).T for k, fn in enumerate(fns, start=1)]
    for dirs in (Plain(v), DenseDirections(v)):
        for got, ref in zip(_chunked.spatial_power_sums(x, fns, dirs, 5), expected, strict=True):
            _close(got, ref, 1e-13)
    idx = torch.tensor([0, 5, 2])
    got = _chunked.spatial_power_sums(x, fns, CoordinateDirections(idx, 6, F64), 5)
    for fn, g in zip(fns, got, strict=True):
        _close(g, fn(x[:, idx]) * (idx < 5).double(), 1e-13)


MEMORY_SCRIPT = """
import gc, json, sys, torch
from pinnbench import make_problem
from pinnbench.maths.directions import CoordinateDirections, DenseDirections
from pinnbench.memory import current_cpu_bytes, peak_cpu_bytes, reset_peak_cpu
from pinnbench.problems import _chunked
d, n, block, jets = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
if block:
    _chunked.BLOCK_ELEMENTS = block
for pid in sys.argv[5:]:
    p = make_problem(pid, dim=d, seed=0)
    x = p.sample_interior(n, torch.Generator().manual_seed(0))
    dense = DenseDirections(torch.randn(4, p.input_dim, generator=torch.Generator().manual_seed(1)))
    coord = CoordinateDirections(torch.tensor([0, p.input_dim - 1, 7]), p.input_dim)
    p.warm_up(n)  # where the closed forms are compiled (pinnbench.maths.fused), that is set-up
    gc.collect()
    assert reset_peak_cpu()
    base = current_cpu_bytes()
    u, f = p.exact(x), p.source(x)
    if jets:
        p.ansatz(x), p.ansatz_jet(x, dense, 4), p.ansatz_jet(x, coord, 4)
    print(json.dumps({"id": pid, "input_bytes": x.numel() * x.element_size(),
                      "peak_over_baseline": peak_cpu_bytes() - base,
                      "finite": bool(torch.isfinite(u).all() and torch.isfinite(f).all())}))
    del p, x, dense, coord, u, f
"""


#: one thread (OpenMP spinning on a busy CPU slows small blocked ops 100-fold), and every
#: allocation of 1 MiB or more mmapped and unmapped on free (glibc), so that the resident set
#: follows live memory and a full-width temporary shows up even after earlier problems ran
MEASURE_ENV = {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(2**20),
               # the eager blocks (the compiled ones: tests/test_fused.py, slow)
               "PINNBENCH_COMPILE": "0"}


def _measure(pids, d, n, block, jets):
    """Peak resident memory of exact + source (+ ansatz and jets) over the baseline after the
    batch is sampled, per problem, in one fresh single-threaded process."""
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(d), str(n), str(block),
                          str(int(jets)), *pids], check=True, capture_output=True, text=True,
                         timeout=600, env={**os.environ, **MEASURE_ENV})
    return [json.loads(line) for line in out.stdout.strip().splitlines()]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a resettable VmHWM")
def test_no_full_width_temporaries():
    """With 256 KiB blocks, exact + source + ansatz + ansatz_jet at n = 64, d = 10^5 stay well
    below the size of one (n, D) array (25.6 MB): nothing materialises a full-width temporary."""
    pids = ["poisson-2body-v1", "allen-cahn-3body-v1", "biharmonic-3body-v1",
            "biharmonic-clamped-3body-v1", "biharmonic-clamped-2body-scaled-v1", "heat-v1",
            "wave-v1", "hjb-lin-v1", "bsb-v1"]
    results = _measure(pids, 10**5, 64, 2**16, jets=True)
    assert [m["id"] for m in results] == pids
    for m in results:
        assert m["finite"], m
        assert m["peak_over_baseline"] < 0.5 * m["input_bytes"], m


@pytest.mark.slow
def test_memory_at_ten_million_dimensions():
    """16 float32 points at d = 10^7 (610 MiB): exact + source need well under 2 GiB beyond the
    batch (measured ~180 MiB two-body, ~210 MiB three-body with the default 16 MiB blocks)."""
    for m in _measure(["poisson-2body-v1", "poisson-3body-v1", "biharmonic-clamped-3body-v1",
                       "biharmonic-clamped-2body-scaled-v1"], 10**7, 16, 0, jets=False):
        assert m["finite"], m
        assert m["peak_over_baseline"] < 2**29, m


def test_column_blocks_cover_once():
    blocks = list(_chunked.column_blocks(16, 10**7))
    assert blocks[0][0] == 0 and blocks[-1][1] == 10**7
    assert all(b0[1] == b1[0] for b0, b1 in zip(blocks, blocks[1:]))
    assert max(b - a for a, b in blocks) * 16 <= _chunked.BLOCK_ELEMENTS


def test_a_gpu_walks_the_columns_in_a_fixed_number_of_blocks():
    """On a GPU a block costs launches, not cache: 116 rows (100 points and 16 probes) take the
    CPU's 277 blocks at d = 1e7 and DEVICE_BLOCKS on CUDA (the H200's 148 ms of data per bp step
    came from the CPU's blocks, reports/gpu-h200/run3), and never narrower ones than the CPU's
    (d = 1e4 is one block on both)."""
    cpu = list(_chunked.column_blocks(116, 10**7, torch.device("cpu")))
    gpu = list(_chunked.column_blocks(116, 10**7, "cuda"))
    assert len(cpu) == len(list(_chunked.column_blocks(116, 10**7))) == 277
    assert len(gpu) == _chunked.DEVICE_BLOCKS == 16
    assert gpu[0][0] == 0 and gpu[-1][1] == 10**7
    assert all(b0[1] == b1[0] for b0, b1 in zip(gpu, gpu[1:]))
    assert list(_chunked.column_blocks(116, 10**4, "cuda")) == [(0, 10**4)]


def test_the_source_on_simulated_cuda_uses_the_device_blocks(monkeypatch):
    """The closed forms pass their batch's device on: the two-body source at d = 400 walks
    BLOCK_ELEMENTS-sized blocks on the CPU (here 5 columns of 16 points, or fewer) and at most
    DEVICE_BLOCKS on (simulated) CUDA, the same numbers."""
    from cuda_sim import simulated_cuda

    seen = []
    real = _chunked.column_blocks

    def spy(n_rows, n_cols, device=None):
        blocks = list(real(n_rows, n_cols, device))
        seen.append(len(blocks))
        return iter(blocks)

    monkeypatch.setattr(_chunked, "BLOCK_ELEMENTS", 16 * 5)
    monkeypatch.setattr(_chunked, "column_blocks", spy)
    from pinnbench.problems import _many_body as many_body
    from pinnbench.seeds import generator
    monkeypatch.setattr(many_body, "column_blocks", spy)
    out = {}
    for device in ("cpu", "cuda"):
        seen.clear()
        with simulated_cuda() if device == "cuda" else contextlib.nullcontext():
            p = make_problem("poisson-2body-v1", dim=400, seed=0, device=device)
            x = p.sample_interior(16, generator(0, device))
            out[device] = (p.source(x).cpu(), list(seen))
    assert min(out["cpu"][1]) >= 80 and out["cuda"][1], out
    assert max(out["cuda"][1]) <= _chunked.DEVICE_BLOCKS, out
    torch.testing.assert_close(out["cuda"][0], out["cpu"][0], rtol=1e-6, atol=0)


# -- options ---------------------------------------------------------------------------------------
def test_scaled_ids_use_radius_sqrt_dim():
    p = make_problem("poisson-2body-scaled-v1", dim=9, seed=0)
    assert p.radius == 3.0 and p.options == {"radius": "sqrt-dim"}
    assert make_problem("poisson-2body-v1", dim=9).radius == 1.0
    assert make_problem("poisson-2body-v1", dim=9, radius=2.5).radius == 2.5
    for bad in (0, -1.0, float("nan"), True, "big"):
        with pytest.raises(ValueError, match="radius must be"):
            resolve_radius(bad, 4)
    with pytest.raises(ValueError, match="allowed: radius"):
        make_problem("poisson-2body-v1", dim=4, radios=2.0)
    with pytest.raises(ValueError, match="takes none"):
        make_problem("heat-v1", dim=4, radius=2.0)


def test_two_body_at_radius_one_is_nearly_affine_at_d100():
    """The docstring's warning, measured: at d = 100 in the unit ball, u2 is fitted by a + b.x
    to ~1e-2 relative (least squares), while the scaled problem is not (> 0.3)."""
    def affine_misfit(pid):
        p = make_problem(pid, dim=100, seed=0, dtype=F64)
        x = p.sample_interior(2000, torch.Generator().manual_seed(0))
        u2 = p.exact(x) / p.ansatz(x)[0]
        feats = torch.cat([torch.ones(x.shape[0], 1, dtype=F64), x], dim=1)
        sol = torch.linalg.lstsq(feats, u2.unsqueeze(1)).solution
        return float((feats @ sol - u2.unsqueeze(1)).norm() / u2.norm())
    assert affine_misfit("poisson-2body-v1") < 0.05
    assert affine_misfit("poisson-2body-scaled-v1") > 0.3


# -- gPINN -----------------------------------------------------------------------------------------
def test_ball_problems_support_gpinn():
    ball = [p for p in PROBLEMS if isinstance(make_problem(p, dim=4), BallProblem)]
    assert len(ball) == 12 and all(make_problem(p, dim=4).supports_gpinn for p in ball)


@pytest.mark.parametrize("pid", [p for p in PROBLEMS if make_problem(p, dim=4).supports_gpinn])
def test_source_grad_matches_autodiff(pid):
    p = _make(pid, 8)
    x = _interior(p, 5)
    index = torch.tensor([0, 7, 3, 3, 1, 6])
    got = p.source_grad(x, index)
    ref = ad.gradient(p.source, x)[:, index]
    assert got.shape == (5, 6)
    _close(got, ref, 1e-10)


def test_source_grad_rejects_bad_indices():
    p = _make("poisson-2body-v1", 4)
    x = _interior(p, 2)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        p.source_grad(x, torch.tensor([4]))
    with pytest.raises(ValueError, match="integer"):
        p.source_grad(x, torch.tensor([0.5]))


SAMPLER_SCRIPT = """
import torch
from pinnbench.memory import current_cpu_bytes, peak_cpu_bytes, reset_peak_cpu
from pinnbench.maths.problem import radius_uniform_ball
reset_peak_cpu(); base = current_cpu_bytes()
x = radius_uniform_ball(16, 3 * 10**6, torch.Generator().manual_seed(0))
print(peak_cpu_bytes() - base, x.numel() * x.element_size())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a resettable VmHWM")
def test_the_ball_sampler_holds_one_batch_not_two():
    """x = r g / ||g|| is scaled in place: drawing 16 x 3e6 points peaks at about one batch
    (192 MB), not two (at d = 1e7 the second copy was another 4 GB)."""
    out = subprocess.run([sys.executable, "-c", SAMPLER_SCRIPT], check=True, capture_output=True,
                         text=True, timeout=300, env={**os.environ, **MEASURE_ENV})
    peak, batch = map(int, out.stdout.split())
    assert batch <= peak < 1.4 * batch, (peak, batch)


@pytest.mark.parametrize("pid", PROBLEMS)
def test_residual_is_its_formula_bit_for_bit(pid):
    """``residual`` skips the ops of an exact 0.0 pointwise part and a 1.0 coefficient (issue 22:
    a step's ATen ops); the numbers are those of the plain formula (pointwise(u) - f) + sum
    coef * T, bit for bit: 0 - f + T is T - f in IEEE arithmetic, 1.0 * T is T."""
    p = make_problem(pid, dim=5, seed=7, dtype=torch.float32)
    x = p.sample_interior(6, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    terms = {t.name: torch.randn(6, generator=g) for t in p.operator.terms}
    u = torch.randn(6, generator=g)
    want = p.pointwise(u) - p.source(x)
    for t in p.operator.terms:
        want = want + t.coef * terms[t.name]
    assert torch.equal(p.residual(terms, u, x), want)


@pytest.mark.parametrize("pid", ["poisson-2body-v1", "poisson-2body-scaled-v1",
                                 "poisson-3body-v1"])
def test_the_balls_boundary_jet_is_one_minus_the_scaled_sqnorm_jet_bit_for_bit(pid):
    """The ball's A = 1 - S / R^2 is built coefficient by coefficient in fewer ops (issue 22:
    no negation per coefficient, no product by 1 on the unit ball); the numbers are those of
    the plain jet arithmetic 1 - spatial_sqnorm_jet / R^2, bit for bit, on the unit ball and on
    R = sqrt(d), from the points and probes as from the streamed reductions."""
    from pinnbench.maths.estimators.probes import dense_probes
    from pinnbench.problems._chunked import spatial_sqnorm_jet, sqnorm

    p = make_problem(pid, dim=37, seed=3, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    x = p.sample_interior(9, g)
    for kind in ("rademacher", "gaussian"):
        dirs = dense_probes(kind, 5, 37, 37, g, torch.float32, torch.device("cpu"))
        want = 1.0 - spatial_sqnorm_jet(x, dirs, 2) / p.radius**2
        for a in (p.ansatz_jet(x, dirs, 2)[0],
                  p.ansatz_jet_from(sqnorm(x), dirs.dot(x), dirs.sqnorm(), 2)[0]):
            assert len(a.coeffs) == len(want.coeffs)
            for c, w in zip(a.coeffs, want.coeffs):
                assert torch.equal(c.expand_as(w), w), kind
