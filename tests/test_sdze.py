"""sdze and its perturbation maths: regeneration, scaling, unbiasedness, matrix-free evaluation,
exact restore, common random numbers, no parameter-sized buffers, convergence (slow)."""

import gc
import math

import pytest
import torch

import pinnbench.solvers._zo_perturbations as pt
from pinnbench import evaluate, make_model, make_problem, make_solver
from pinnbench.maths.directions import CoordinateDirections, DenseDirections
from pinnbench.seeds import cell_generator
from pinnbench.solver import solver_from_spec
from pinnbench.solvers._zo_evaluation import FirstLayerCache, shifted_batch
from pinnbench.solvers._zo_perturbations import (GaussianMatrix, Perturbation, SubspaceBasis,
                                                 make_bases)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_chunks(monkeypatch):
    """Force many chunks so that the chunked code paths are the ones tested."""
    monkeypatch.setattr(pt, "CHUNK_ELEMENTS", 24)


# -- regeneration ---------------------------------------------------------------------------------
def test_basis_regenerates_identically(small_chunks):
    a = SubspaceBasis(6, 40, 3, seed=7, dtype=torch.float64, device="cpu")
    b = SubspaceBasis(6, 40, 3, seed=7, dtype=torch.float64, device="cpu")
    c = SubspaceBasis(6, 40, 3, seed=8, dtype=torch.float64, device="cpu")
    assert torch.equal(a.u, b.u) and torch.equal(a.v_dense(), b.v_dense())
    assert torch.equal(a.v_dense(), a.v_dense())  # regenerated at every use, same numbers
    assert not torch.equal(a.v_dense(), c.v_dense()) and not torch.equal(a.u, c.u)
    assert a.v_dense().shape == (40, 3) and len(list(a.v_chunks())) == 5  # 24 // 3 = 8 rows


def test_a_chunk_of_v_is_drawn_as_its_transpose(small_chunks):
    """Chunk [j0, j1) of V is V[j0:j1]^T = an (r, j1 - j0) draw from V's generator (module
    docstring), so that a block of several bases' V_e^T can be drawn in place, row block by
    row block; v_chunks are its views."""
    from pinnbench.seeds import derive_seed, generator

    b = SubspaceBasis(6, 40, 3, seed=7, dtype=torch.float64, device="cpu")
    g = generator(derive_seed(7, 1), torch.device("cpu"))
    for (j0, j1, c), (k0, k1, v) in zip(b.vt_chunks(), b.v_chunks()):
        assert torch.equal(c, torch.randn(3, j1 - j0, generator=g, dtype=torch.float64))
        assert (k0, k1) == (j0, j1) and torch.equal(v, c.T)
    assert torch.equal(b.vt_dense(), b.v_dense().T) and b.vt_dense().is_contiguous()


@pytest.mark.parametrize("kind", ["gaussian", "orthonormal", "kept"])
def test_a_chunk_drawn_into_a_block_has_the_numbers_drawn_alone(small_chunks, kind):
    """``vt_chunks(into)`` writes each chunk into the tensor ``into`` gives (rows of a bigger
    block) and yields it: the same numbers as without (a Gaussian draw, the orthonormal map, a
    kept chunk copied), and the block holds them."""
    cls = pt.OrthonormalSubspaceBasis if kind == "orthonormal" else SubspaceBasis
    b = cls(6, 40, 3, seed=3, dtype=torch.float32, device="cpu")
    if kind == "kept":
        b.keep_v()
    want = [c.clone() for _, _, c in b.vt_chunks()]
    blocks = []

    def into(j0, j1):
        blocks.append(torch.full((7, j1 - j0), float("nan")))
        return blocks[-1][2:5]

    got = list(b.vt_chunks(into))
    assert len(got) == len(want) == len(blocks) == 5
    for (_, _, c), w, block in zip(got, want, blocks):
        assert torch.equal(c, w) and torch.equal(block[2:5], w)
        assert c.data_ptr() == block[2:5].data_ptr()
        assert block[:2].isnan().all() and block[5:].isnan().all()


def test_chunked_operations_match_dense(small_chunks, gen):
    basis = SubspaceBasis(6, 40, 3, seed=1, dtype=torch.float64, device="cpu")
    v = basis.v_dense()
    y = torch.randn(5, 40, generator=gen, dtype=torch.float64)
    idx = torch.tensor([39, 0, 17, 8])
    a = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 40, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(basis.project(y), y @ v, rtol=1e-12, atol=1e-12)
    assert torch.equal(basis.v_rows(idx), v[idx])
    w2 = w.clone()
    basis.add_to_(w2, a)
    torch.testing.assert_close(w2, w + a @ v.T, rtol=1e-12, atol=1e-12)

    g = GaussianMatrix((6, 40), seed=3, dtype=torch.float64, device="cpu")
    z = g.dense()
    assert torch.equal(z, g.dense()) and len(list(g.chunks())) == 10  # 24 // 6 = 4 columns
    torch.testing.assert_close(g.apply(y), y @ z.T, rtol=1e-12, atol=1e-12)
    assert torch.equal(g.columns(idx), z[:, idx].T)
    w3 = w.clone()
    g.add_to_(w3, 0.5)
    torch.testing.assert_close(w3, w + 0.5 * z, rtol=1e-12, atol=1e-12)


def test_lowrank_direction_is_u_xi_vt_over_r():
    params = [torch.zeros(6, 9, dtype=torch.float64), torch.zeros(6, dtype=torch.float64),
              torch.zeros(1, 6, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)]
    bases = make_bases(params, rank=2, seed=5)
    assert bases[0] is not None and bases[1] is None and bases[2] is None  # 1 x 6 is too thin
    d = Perturbation(params, seed=11, bases=bases)
    z = d.dense(0)
    b = bases[0]
    torch.testing.assert_close(z, b.u @ d.xis[0] @ b.v_dense().T / 2)
    assert torch.linalg.matrix_rank(z).item() == 2
    d.add_to_(params, 1.0)
    torch.testing.assert_close(params[0], z)
    assert torch.equal(params[1], d.dense(1))


def test_entries_have_unit_variance():
    """E[z_ij^2] = 1 and E[z_ij z_kl] = 0 over bases and Xi: the scaling of a full Gaussian."""
    n = 4000
    zs = torch.stack([SubspaceBasis(5, 7, 2, seed=s, dtype=torch.float64, device="cpu")
                      .dense(torch.randn(2, 2, generator=torch.Generator().manual_seed(10**6 + s),
                                         dtype=torch.float64)) for s in range(n)])
    second = (zs**2).mean(0)  # E z^2 = 1, and z^2 has variance E z^4 - 1 = 8 here (<= 3^3 - 1)
    assert abs(second.mean().item() - 1.0) < 6 * math.sqrt(27 / (n * 35))
    cross = (zs[:, 0, 0] * zs[:, 3, 5]).mean().item()
    assert abs(cross) < 6 * math.sqrt(27 / n)


# -- unbiasedness on a quadratic ------------------------------------------------------------------
def _quadratic(params, scales, shifts):
    return sum(0.5 * (s * (p - c) ** 2).sum() for p, s, c in zip(params, scales, shifts))


def _spsa(params, direction, eps, scales, shifts):
    z = [direction.dense(i) for i in range(len(params))]
    plus = [p + eps * zi for p, zi in zip(params, z)]
    minus = [p - eps * zi for p, zi in zip(params, z)]
    q = (_quadratic(plus, scales, shifts) - _quadratic(minus, scales, shifts)) / (2 * eps)
    return [q * zi for zi in z]


@pytest.mark.parametrize("fixed_basis", [True, False])
def test_spsa_unbiased_on_quadratic(fixed_basis):
    """For L = sum 0.5 s (theta - c)^2 the central quotient is exactly z . grad L, so
    E[g_hat] = E[z z^T] grad L: U U^T G V V^T / r^2 for a fixed basis (the projected gradient),
    and grad L itself when the basis is redrawn (biases: always grad L)."""
    g = torch.Generator().manual_seed(0)
    shapes = [(6, 8), (6,)]
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    scales = [torch.rand(s, generator=g, dtype=torch.float64) + 0.5 for s in shapes]
    shifts = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    grad = [s * (p - c) for p, s, c in zip(params, scales, shifts)]
    n, rank = 4000, 3
    samples = []
    bases = make_bases(params, rank, seed=99)
    for k in range(n):
        if not fixed_basis:
            bases = make_bases(params, rank, seed=k)
        samples.append(_spsa(params, Perturbation(params, seed=10**7 + k, bases=bases), 1e-3,
                             scales, shifts))
    for i in range(2):
        stack = torch.stack([s[i] for s in samples])
        mean, se = stack.mean(0), stack.std(0) / math.sqrt(n)
        expected = grad[i]
        if i == 0 and fixed_basis:
            b = bases[0]
            v = b.v_dense()
            expected = b.u @ b.u.T @ grad[0] @ v @ v.T / rank**2
        z_score = ((mean - expected).abs() / se).max().item()
        assert z_score < 5.0, (i, z_score)
        if i == 0 and fixed_basis:  # and it is not the full gradient
            assert ((mean - grad[0]).abs() / se).max().item() > 5.0


# -- matrix-free evaluation -----------------------------------------------------------------------
@pytest.mark.parametrize("subspace", [True, False])
def test_shifted_pinn_matches_materialised(subspace, small_chunks):
    """A batch of shifted networks theta + c_j z_k (three factors, two perturbations): set
    j * 2 + k of its value and jets is the network with the materialised parameters."""
    problem = make_problem("poisson-2body-v1", dim=9, seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    model = make_model(problem, width=12, depth=2, generator=g)
    bases = make_bases(model.params, 3, seed=4) if subspace else [None] * len(model.params)
    zs = [Perturbation(model.params, seed=s, bases=bases) for s in (21, 22)]
    cs = [0.3, -0.3, 0.7]
    materialised = [[p + c * z.dense(i) for i, p in enumerate(model.params)]
                    for c in cs for z in zs]
    x = problem.sample_interior(5, g)
    cache = FirstLayerCache(model.params[0], bases[0], x)
    shifted = shifted_batch(model, zs, cs, cache)
    y = x + 0.01  # not the pinned points: computed without the cache
    u_x, u_y = shifted(x), shifted(y)
    assert u_x.shape == (len(materialised), 5)
    for b, params in enumerate(materialised):
        torch.testing.assert_close(u_x[b], model(x, params), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(u_y[b], model(y, params), rtol=1e-12, atol=1e-12)
    for dirs in (DenseDirections(torch.randn(4, 9, generator=g, dtype=torch.float64)),
                 CoordinateDirections(torch.tensor([0, 8, 3]), 9, torch.float64)):
        for _ in range(2):  # second pass hits the cache
            j1 = shifted.jet(x, dirs, 2)
            for b, params in enumerate(materialised):
                j2 = model.jet(x, dirs, 2, params)
                for k in range(3):
                    torch.testing.assert_close(j1[k][b], j2[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("problem_id,spec", [
    ("poisson-2body-v1", "sdze[q=3]"),
    ("poisson-2body-v1", "sdze[q=2,subspace=false]"),
    ("poisson-2body-v1", "sdze[q=2,loss=unbiased,dist=gaussian]"),
    ("poisson-2body-v1", "sdze[q=2,dist=coordinate]"),
    ("allen-cahn-2body-v1", "sdze[q=2,rank=3]"),
    ("biharmonic-3body-v1", "sdze[q=2]"),  # order-4 jets
    ("heat-v1", "sdze[q=2]"),  # the time row rides along the spatial probes
    ("hjb-lin-v1", "sdze[q=2]"),  # sampled coordinates: |grad u|^c
])
def test_batched_losses_equal_one_at_a_time(problem_id, spec):
    """With common random numbers the 2q losses of a step come from one batched pass; they equal
    the losses of the 2q shifted networks evaluated one at a time on the same sample (float64,
    1e-12 relative), in the order (L(theta + eps z_k), L(theta - eps z_k)) row by row."""
    problem = make_problem(problem_id, dim=6, seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    model = make_model(problem, width=12, depth=2, generator=g)
    solver = make_solver(spec, problem, model, generator=g)
    assert solver._batched
    step = solver.begin_step(777)
    try:
        batched = solver.pair_losses(step)
        solver._batched = False
        one_at_a_time = solver.pair_losses(step)
    finally:
        solver.end_step(step)
    assert batched.shape == (solver.q, 2)
    torch.testing.assert_close(batched, one_at_a_time, rtol=1e-12, atol=0.0)
    assert (batched[:, 0] != batched[:, 1]).all()  # + and - differ: no set served twice


@pytest.mark.parametrize("problem_id,spec,why", [
    ("poisson-2body-v1", "sdze[crns=false]", "each evaluation its own sample"),
    ("poisson-2body-v1", "sdze[estimator=fd]", "stencils"),
    ("poisson-2body-v1", "sdze[loss=gpinn]", "the gPINN term"),
    ("bsb-v1", "sdze", "the drift by reverse mode"),
])
def test_what_is_evaluated_one_at_a_time(problem_id, spec, why):
    problem = make_problem(problem_id, dim=6, seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    model = make_model(problem, width=8, depth=2, generator=g)
    solver = make_solver(spec, problem, model, generator=g)
    assert not solver._batched, why
    assert math.isfinite(float(solver.step()))


def test_cache_never_stale():
    problem = make_problem("poisson-2body-v1", dim=5, seed=0, dtype=torch.float64)
    model = make_model(problem, width=4, depth=1, generator=torch.Generator().manual_seed(0))
    x = problem.sample_interior(3, torch.Generator().manual_seed(1))
    cache = FirstLayerCache(model.params[0], None, x)
    before = cache.points(x)[0].clone()
    model.params[0].add_(1.0)
    torch.testing.assert_close(cache.points(x)[0], x @ model.params[0].T)
    assert not torch.equal(before, cache.points(x)[0])


# -- solvers --------------------------------------------------------------------------------------
def _setup(spec, dim=20, width=16, seed=0):
    problem = make_problem("poisson-2body-v1", dim=dim, seed=seed)
    g = torch.Generator().manual_seed(seed)
    model = make_model(problem, width=width, depth=3, generator=g)
    return problem, model, make_solver(spec, problem, model, generator=g)


def test_difference_quotients_leave_state_untouched():
    """Evaluation never writes theta: bit-identical parameters, same step count, and a step
    afterwards equals a step without the quotient calls."""
    problem, model, s = _setup("sdze[points=16,probes=4]")
    s.step()
    before = [p.clone() for p in model.params]
    q = s.difference_quotients(torch.Generator().manual_seed(3))
    assert len(q) == s.q and all(math.isfinite(v) for v in q)
    assert all(torch.equal(a, b) for a, b in zip(before, model.params)) and s.t == 1
    loss = s.step()
    _, model2, s2 = _setup("sdze[points=16,probes=4]")
    s2.step()
    assert s2.step() == loss
    assert all(torch.equal(a, b) for a, b in zip(model.params, model2.params))


def test_in_place_round_trip_is_close_not_claimed_exact(gen):
    """MeZO's +eps, -2eps, +eps restore (zo) drifts by at most a few ulps per entry."""
    params = [torch.randn(16, 50, generator=gen), torch.randn(16, generator=gen)]
    orig = [p.clone() for p in params]
    d = Perturbation(params, seed=5, bases=[None, None])
    for a in (1e-3, -2e-3, 1e-3):
        d.add_to_(params, a)
    for p, o in zip(params, orig):
        assert (p - o).abs().max().item() <= 8 * torch.finfo(torch.float32).eps * o.abs().max()


def test_crns_reduces_quotient_variance_100x():
    """docs/domain.md §3: without common random numbers the quotient carries
    Var_omega[L] / (2 eps^2); with them that term cancels."""
    var = {}
    for crns in ("true", "false"):
        _, _, s = _setup(f"sdze[crns={crns},q=1,eps=1e-3,points=16,probes=4]")
        g = torch.Generator().manual_seed(42)
        qs = torch.tensor([s.difference_quotients(g)[0] for _ in range(200)], dtype=torch.float64)
        var[crns] = qs.var().item()
    assert var["false"] >= 100 * var["true"], var


def _reachable_tensors(root, exclude):
    """Tensors reachable from ``root`` through attributes, dicts, lists, tuples and torch
    optimizer state (the objects a solver keeps), minus the ``exclude`` storages."""
    seen, out, stack = set(), [], [root]
    skip = {id(e.untyped_storage()) for e in exclude}
    ex_ptrs = {e.untyped_storage().data_ptr() for e in exclude}
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, str, bytes, int, float, torch.Generator)):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if obj.untyped_storage().data_ptr() not in ex_ptrs and id(obj.untyped_storage()) not in skip:
                out.append(obj)
            if obj.grad is not None:
                stack.append(obj.grad)
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in ("pinnbench",
                                                                                 "torch"):
            stack.extend(vars(obj).values())
        elif hasattr(obj, "__slots__"):
            stack.extend(getattr(obj, s) for s in obj.__slots__ if hasattr(obj, s))
    return out


@pytest.mark.parametrize("spec,param_sized", [("sdze", False), ("zo[momentum=0]", False),
                                              ("sdze[momentum=0.9]", False),  # low-rank form
                                              ("sdze[subspace=false,momentum=0.9]", True),  # dense
                                              ("zo", False),  # tuned default: no momentum
                                              ("zo[momentum=0.9]", True),  # dense momentum
                                              ("bp", True)])  # Adam: the check can fail
def test_no_parameter_sized_buffers(spec, param_sized):
    spec = spec[:-1] + ",points=8]" if "[" in spec else spec + "[points=8]"
    problem, model, s = _setup(spec, dim=2000, width=64)
    for _ in range(2):
        s.step()
    gc.collect()
    w0 = model.params[0].numel()
    found = _reachable_tensors(s, model.params)
    big = [tuple(t.shape) for t in found if t.numel() >= w0 // 8]
    grads = [p.grad is not None for p in model.params]
    if param_sized:
        assert big or any(grads), f"{spec}: expected a parameter-sized buffer"
    else:
        assert not big and not any(grads), f"{spec}: parameter-sized buffers {big}"
        assert sum(t.numel() for t in found) < w0 // 4


# -- convergence (slow) ---------------------------------------------------------------------------
def _train(spec, steps, width, dim=100, seed=0):
    problem, model, s = _setup(spec, dim=dim, width=width, seed=seed)
    losses = [s.step() for _ in range(steps)]
    rel_l2 = evaluate(model, problem)["rel_l2"]
    print(f"{spec}: width {width}, d {dim}, {steps} steps: rel_l2 {rel_l2:.4g}")
    return rel_l2, losses


@pytest.mark.slow
def test_bp_converges_poisson_d100():
    rel_l2, _ = _train("bp", 500, width=128)  # measured: 7.6e-3 at step 500
    assert rel_l2 <= 2e-2, rel_l2


@pytest.mark.slow
def test_sdze_converges_and_naive_zo_does_not_poisson_d100():
    rel_sdze, _ = _train("sdze", 1000, width=32)
    assert rel_sdze <= 3e-2, rel_sdze
    rel_zo, losses = _train("zo[lr=3e-3,eps=1e-4,q=4]", 1000, width=32)
    assert not math.isfinite(losses[-1]) or not rel_zo <= 1.5 * rel_sdze, (rel_zo, rel_sdze)


def test_the_planned_momentum_block_is_the_step_s_largest_allocation():
    """SDZE.state_bytes counts the momentum update's (E r, rows) block, E = 44 live terms at
    beta 0.9: measured, it is the stationary step's largest allocation, to the byte (here
    d = 2e4 < 2^22 / r, so rows = d: 44 x 7 x 2e4 x 4 bytes; the held V of W0 apart)."""
    from torch.profiler import profile, ProfilerActivity

    d = 20_000
    problem = make_problem("poisson-2body-v1", dim=d, seed=0)
    model = make_model(problem, width=8, depth=2, generator=cell_generator(0, "model"))
    solver = solver_from_spec("sdze[points=8,probes=4]")
    solver.setup(problem, model, cell_generator(0, "solver"))
    for _ in range(solver.steady_state_steps):
        solver.step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        solver.step()
    largest = max(e.self_cpu_memory_usage for e in prof.events())
    assert largest == solver.state_bytes(0, d, 4) - d * 7 * 4 == 44 * 7 * d * 4
    assert solver_from_spec("sdze[momentum=0]").state_bytes(0, d, 4) == d * 7 * 4
