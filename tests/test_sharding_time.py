"""The time-dependent families sharded (issue 25; docs/sharding.md): heat and wave, the time
column owned by the last rank. One rank against the dense PINN and the problem's own closed
forms on the same sample; 2 gloo processes train like 1 with bp (stde, hte, sdgd, sparse stde),
sdze and zo, in float64 to 1e-10."""

from __future__ import annotations

import math

import pytest
import torch

import pinnbench
from pinnbench.cells.shard_launch import run_ranks
from pinnbench.cells.sharded_ball import shard_skip
from pinnbench.cells.sharded_cell import build, reference
from pinnbench.cells.sharding import Collectives, ShardPlan
from pinnbench.maths.directions import CoordinateDirections, DenseDirections
from pinnbench.maths.estimators import draw_probes, estimate_terms
from pinnbench.maths.model import PINN
from pinnbench.solver import solver_from_spec

from shard_targets import one_step

TIME = ("heat-v1", "wave-v1")
#: 7 blocks of 9 columns (the last narrower), as tests/test_sharding.py's SMALL
SMALL = {"dim": 60, "solver": "bp[points=8,probes=4,lr=1e-2]", "steps": 3, "seed": 3,
         "width": 16, "depth": 2, "dtype": "float64", "block_columns": 9}
RTOL = 1e-10
BP = "bp[points=8,probes=4,lr=1e-2"

pytestmark = pytest.mark.usefixtures("one_thread")


def close(a, b, rtol=RTOL):
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return torch.allclose(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


def test_the_time_column_is_the_last_ranks_last_block():
    plans = [ShardPlan(60, 9, 3, r, time=1) for r in range(3)]
    assert [p.input_columns for p in plans] == [p.columns for p in plans[:2]] + [
        plans[2].columns + 1]
    assert sum(p.input_columns for p in plans) == 61 == plans[0].input_dim
    *_, last = plans[2].input_blocks()
    assert last == (plans[2].columns, plans[2].columns + 1, plans[2].n_blocks)
    assert [b[2] for p in plans[:2] for b in p.input_blocks()] == list(range(*plans[0].blocks)) \
        + list(range(*plans[1].blocks))


def test_heat_and_wave_are_sharded_with_every_solver_the_balls_have():
    for pid in TIME:
        p = pinnbench.make_problem(pid, dim=10)
        assert shard_skip(p) == ""
        for spec in ("bp", "bp[estimator=hte]", "bp[estimator=sdgd]", "bp[dist=coordinate]",
                     "sdze", "zo", "zo[crns=true]"):
            assert shard_skip(p, solver_from_spec(spec)) == "", (pid, spec)
        assert "estimator=exact" in shard_skip(p, solver_from_spec("bp[estimator=exact]"))


@pytest.mark.parametrize("problem_id,estimator", [
    ("heat-v1", "stde"), ("wave-v1", "stde"), ("wave-v1", "stde,dist=gaussian"),
    ("heat-v1", "hte"), ("wave-v1", "hte"), ("wave-v1", "sdgd"), ("heat-v1", "sdgd"),
    ("wave-v1", "stde,dist=coordinate")])
def test_one_rank_equals_the_dense_pinn_on_the_same_sample(problem_id, estimator):
    """The sharded view at R = 1 (t the last column of the one shard) against the PINN with the
    dense first layer, the problem's own ansatz, source and exact solution, and the estimate on
    the same points and probes (the time direction included): the same loss and gradients."""
    payload = {**SMALL, "problem": problem_id, "solver": f"{BP},estimator={estimator}]"}
    got = one_step(payload, Collectives(1), 0, 1)
    problem = pinnbench.make_problem(problem_id, dim=SMALL["dim"], seed=SMALL["seed"],
                                     dtype=torch.float64)
    x = torch.tensor(got["x"], dtype=torch.float64)
    assert x.shape == (8, 61) and bool(((x[:, -1] >= 0) & (x[:, -1] <= 1)).all())
    assert close(got["source"], problem.source(x).tolist(), 1e-12)
    view, sharded, bp = build(payload, Collectives(1), 0, 1)
    assert close(view.exact_of(x, None).tolist(), problem.exact(x).tolist(), 1e-12)
    a, b = view.ansatz(x)
    a0, b0 = problem.ansatz(x)
    assert close(a.tolist(), a0.tolist(), 1e-12) and close(b.tolist(), b0.tolist(), 1e-12)
    params = [p.detach().clone().requires_grad_(True) for p in sharded.params]
    dense = PINN(problem, params)
    method = estimator.split(",")[0]
    drawn = draw_probes(problem, method, torch.Generator().manual_seed(0), 4,
                        dtype=torch.float64, **bp.estimator_options)
    (group,) = drawn.groups.values()
    if "v" in got:
        group.dirs = DenseDirections(torch.tensor(got["v"], dtype=torch.float64))
    else:
        assert all(got["owned"])
        group.dirs = CoordinateDirections(torch.tensor(got["index"]), 61, torch.float64)
    u, terms = estimate_terms(dense, x, method, probes=4, drawn=drawn, **bp.estimator_options)
    loss = problem.residual(terms, u, x).square().mean()
    loss.backward()
    assert math.isclose(got["loss"], float(loss.detach()), rel_tol=1e-12)
    assert close(got["grad_w0"], params[0].grad.tolist(), 1e-11)
    assert close(got["grad_b0"], params[1].grad.tolist(), 1e-11)
    assert close(got["grad_w1"], params[2].grad.tolist(), 1e-11)


def _one_step_groups(payload):
    """One rank's step: its points, every probe group's directions, the loss and gradients."""
    view, model, solver = build(payload, Collectives(1), 0, 1)
    data = solver.draw()
    loss = solver.residual_loss(data)
    loss.backward()
    return view, model, solver, data, loss


@pytest.mark.parametrize("estimator", ["stde", "stde,dist=gaussian", "hte", "sdgd"])
def test_one_rank_hjb_lin_equals_the_dense_pinn_on_the_same_sample(estimator):
    """HJB-Lin (dt, the Laplacian and (1/d) sum_i |du/dx_i|^c on sampled coordinates: with dense
    probes two probe groups, with sdgd one) on the sharded view at R = 1 against autodiff
    through the dense PINN on the same points and probes: the same u*, A, B, loss, gradients."""
    payload = {**SMALL, "problem": "hjb-lin-v1", "solver": f"{BP},estimator={estimator}]"}
    view, sharded, bp, data, loss = _one_step_groups(payload)
    problem = pinnbench.make_problem("hjb-lin-v1", dim=SMALL["dim"], seed=SMALL["seed"],
                                     dtype=torch.float64)
    x = data.x
    assert close(data.source.tolist(), problem.source(x).tolist(), 1e-12)
    assert close(view.exact_of(x, None).tolist(), problem.exact(x).tolist(), 1e-12)
    for got, want in zip(view.ansatz(x), problem.ansatz(x)):
        assert close(got.tolist(), want.tolist(), 1e-12)
    params = [p.detach().clone().requires_grad_(True) for p in sharded.params]
    dense = PINN(problem, params)
    method = estimator.split(",")[0]
    drawn = draw_probes(problem, method, torch.Generator().manual_seed(0), 4,
                        dtype=torch.float64, **bp.estimator_options)
    mine = data.probes[0].groups
    assert list(drawn.groups) == list(mine)  # the same groups in the same order
    for kind, group in drawn.groups.items():
        dirs = mine[kind].dirs
        group.dirs = (DenseDirections(dirs.v) if hasattr(dirs, "v") else
                      CoordinateDirections(dirs.index, 61, torch.float64))
    u, terms = estimate_terms(dense, x, method, probes=4, drawn=drawn, **bp.estimator_options)
    ref = problem.residual(terms, u, x).square().mean()
    ref.backward()
    assert math.isclose(float(loss.detach()), float(ref.detach()), rel_tol=1e-12)
    for p, q in zip(sharded.params[:3], params[:3]):
        assert close(p.grad.tolist(), q.grad.tolist(), 1e-11)


def test_bsb_is_not_sharded_and_says_why():
    hjb = pinnbench.make_problem("hjb-lin-v1", dim=10)
    for spec in ("sdze", "zo", "sdze[dist=coordinate]"):  # grad_power_mean samples coordinates
        assert shard_skip(hjb, solver_from_spec(spec)) == "", spec
    assert "estimator=fd" in shard_skip(hjb, solver_from_spec("zo[estimator=fd]"))
    assert "reverse mode in x" in shard_skip(pinnbench.make_problem("bsb-v1", dim=10))


#: the zeroth-order solvers with sampled coordinates (sparse stde probes; HJB-Lin's gradient term)
ZO_COORDINATES = ("sdze[points=8,probes=4,dist=coordinate]",
                  "sdze[points=8,probes=4,dist=coordinate,subspace=false]",
                  "zo[points=8,probes=4,dist=coordinate,crns=true]")


def test_two_ranks_train_like_one_with_zeroth_order_solvers_on_sampled_coordinates():
    """sdze (low rank: V's row of a coordinate read on its owner and summed with the products;
    full Gaussian: z0's column likewise) and zo with dist=coordinate on a ball, on wave (e_t a
    coordinate too) and on HJB-Lin (whose gradient term always samples coordinates), and sdze
    and zo with dense probes on HJB-Lin (two probe groups): 2 ranks train like 1."""
    payloads = [{**SMALL, "problem": pid, "solver": s}
                for pid in ("allen-cahn-3body-v1", "wave-v1") for s in ZO_COORDINATES]
    payloads += [{**SMALL, "problem": "hjb-lin-v1", "solver": s} for s in (
        "sdze[points=8,probes=4]", "zo[points=8,probes=4,crns=true]", ZO_COORDINATES[0])]
    out = run_ranks("shard_targets:runs", {"runs": payloads}, 2, timeout_s=900,
                    collective_timeout_s=120)
    assert out.ok, out.failure
    for i, p in enumerate(payloads):
        ref = reference(p)
        what = f"{p['problem']} {p['solver']}"
        r0, r1 = (out.results[r]["runs"][i] for r in (0, 1))
        assert r0["losses"] == r1["losses"], what
        assert close(r0["losses"], ref["losses"]), what
        assert math.isclose(r0["rel_l2"], ref["rel_l2"], rel_tol=RTOL), what
        assert math.isclose(r0["w0_sum"] + r1["w0_sum"], ref["w0_sum"], rel_tol=1e-9), what
        assert len(set(ref["losses"])) == len(ref["losses"]), what


def _payloads():
    runs = [{**SMALL, "problem": pid, "solver": s} for pid in TIME for s in (
        f"{BP}]", f"{BP},estimator=hte]", f"{BP},estimator=sdgd]",
        f"{BP},estimator=stde,dist=coordinate]", "sdze[points=8,probes=4]",
        "zo[points=8,probes=4,crns=true]")]
    runs += [{**SMALL, "problem": "hjb-lin-v1", "solver": s} for s in (
        f"{BP}]", f"{BP},estimator=hte]", f"{BP},estimator=sdgd,loss=unbiased]")]
    runs += [{**SMALL, "problem": "wave-v1", "solver": s} for s in (
        f"{BP},estimator=hte,dist=gaussian,loss=unbiased]",
        "sdze[points=8,probes=4,subspace=false]", "zo[points=8,probes=4,lr=0.03]")]
    return runs


def test_two_ranks_train_like_one_on_heat_wave_and_hjb_lin():
    """bp (stde, hte, sdgd, sparse stde, hte unbiased), sdze (low rank and full Gaussian) and zo
    (with and without common random numbers) on heat and wave, bp (stde, hte, sdgd unbiased) on
    HJB-Lin, 2 ranks (the second holds the
    time column): the same losses at every step, the same test error and W0 as 1 rank, to
    rounding in float64; the loss is the same number on both ranks."""
    payloads = _payloads()
    out = run_ranks("shard_targets:runs", {"runs": payloads}, 2, timeout_s=900,
                    collective_timeout_s=120)
    assert out.ok, out.failure
    for i, p in enumerate(payloads):
        ref = reference(p)
        what = f"{p['problem']} {p['solver']}"
        r0, r1 = (out.results[r]["runs"][i] for r in (0, 1))
        assert r0["columns"] == [0, 36] and r1["columns"] == [36, 60], what
        assert r0["losses"] == r1["losses"], what
        assert close(r0["losses"], ref["losses"]), what
        assert math.isclose(r0["rel_l2"], ref["rel_l2"], rel_tol=RTOL), what
        assert math.isclose(r0["w0_sum"] + r1["w0_sum"], ref["w0_sum"], rel_tol=1e-9), what
        assert len(set(ref["losses"])) == len(ref["losses"]), what  # the steps moved
        assert r1["w0_bytes"] == r0["w0_bytes"] * 25 // 36, what  # 24 columns + t, 36


def test_probe_groups_never_draw_from_a_column_block_s_generator():
    """HJB-Lin with dense probes draws two groups per probe set: the Laplacian's column stream
    (block k from derive_seed(set seed, k)) and grad_power_mean's sampled coordinates. With the
    group seeded by derive_seed(set seed, 1), the coordinates came from block 1's generator."""
    from pinnbench.cells.sharded_ball import probe_group_seed
    from pinnbench.seeds import derive_seed

    for set_seed in (0, 1, 12345, 2**62 + 7):
        assert probe_group_seed(set_seed, 0) == set_seed
        blocks = {derive_seed(set_seed, k) for k in range(4096)}
        groups = [probe_group_seed(set_seed, i) for i in range(1, 5)]
        assert len(set(groups)) == len(groups) and set_seed not in groups
        assert not blocks & set(groups)
