"""The sharded input dimension (issue 25): the shard plan, one rank against the unsharded code
on the same sample, and 2 gloo processes against 1 (the same points bit for bit, the same losses,
gradients and errors to rounding), and the failure paths of the launcher."""

from __future__ import annotations

import math

import pytest
import torch

import pinnbench
from pinnbench.maths.directions import DenseDirections
from pinnbench.maths.estimators import draw_probes, estimate_terms
from pinnbench.maths.model import PINN
from pinnbench.cells.shard_launch import run_ranks
from pinnbench.cells.sharded_ball import ShardedBall, shard_skip
from pinnbench.cells.sharded_cell import build, reference
from pinnbench.cells.sharding import Collectives, ShardPlan
from pinnbench.solver import solver_from_spec
from pinnbench.maths.streaming import RadialBallStream

from shard_targets import one_step

BALL = ("poisson-2body-v1", "poisson-3body-v1", "allen-cahn-2body-v1", "allen-cahn-3body-v1",
        "sine-gordon-2body-v1", "sine-gordon-3body-v1", "poisson-2body-scaled-v1",
        "allen-cahn-3body-scaled-v1")
#: a small float64 cell: 7 blocks of 9 columns (the last narrower), odd so shards are uneven
SMALL = {"dim": 60, "solver": "bp[points=8,probes=4,lr=1e-2]", "steps": 3, "seed": 3,
         "width": 16, "depth": 2, "dtype": "float64", "block_columns": 9}
RTOL = 1e-10

pytestmark = pytest.mark.usefixtures("one_thread")


def close(a, b, rtol=RTOL):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return torch.allclose(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


# -- the plan ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim,width,ranks", [(60, 9, 1), (60, 9, 2), (60, 9, 3), (60, 9, 7),
                                             (10, 4, 2), (1000, 64, 4)])
def test_plan_partitions_the_columns_in_whole_blocks(dim, width, ranks):
    plans = [ShardPlan(dim, width, ranks, r) for r in range(ranks)]
    assert plans[0].lo == 0 and plans[-1].hi == dim
    for a, b in zip(plans, plans[1:]):
        assert a.hi == b.lo and a.lo % width == 0 and a.columns > 0
    assert sum(p.columns for p in plans) == dim
    sizes = [p.blocks[1] - p.blocks[0] for p in plans]
    assert max(sizes) - min(sizes) <= 1


def test_plan_refuses_more_ranks_than_blocks_and_narrow_blocks():
    with pytest.raises(ValueError, match="fewer than the 3 ranks"):
        ShardPlan(8, 4, 3, 0)
    with pytest.raises(ValueError, match="at least 4 columns"):
        ShardPlan(8, 2, 1, 0)


# -- one rank against the unsharded code --------------------------------------------------------------
@pytest.mark.parametrize("problem_id", BALL)
def test_one_rank_equals_the_dense_pinn_on_the_same_sample(problem_id):
    """The sharded view at R = 1 against the PINN with the dense first layer, the problem's own
    ansatz and source, and the stde estimate on the same points and probes: the same loss and
    the same gradient of every parameter (autograd through the dense code is the reference)."""
    payload = {**SMALL, "problem": problem_id}
    got = one_step(payload, Collectives(1), 0, 1)
    problem = pinnbench.make_problem(problem_id, dim=SMALL["dim"], seed=SMALL["seed"],
                                     dtype=torch.float64)
    x = torch.tensor(got["x"], dtype=torch.float64)
    v = torch.tensor(got["v"], dtype=torch.float64)
    assert close(got["source"], problem.source(x).tolist(), 1e-12)
    _, sharded, _ = build(payload, Collectives(1), 0, 1)
    params = [p.detach().clone().requires_grad_(True) for p in sharded.params]
    dense = PINN(problem, params)
    drawn = draw_probes(problem, "stde", torch.Generator().manual_seed(0), 4,
                        dtype=torch.float64)
    (group,) = drawn.groups.values()
    group.dirs = DenseDirections(v)
    u, terms = estimate_terms(dense, x, "stde", probes=4, drawn=drawn)
    loss = problem.residual(terms, u, x).square().mean()
    loss.backward()
    assert math.isclose(got["loss"], float(loss.detach()), rel_tol=1e-12)
    assert close(got["grad_w0"], params[0].grad.tolist(), 1e-11)
    assert close(got["grad_b0"], params[1].grad.tolist(), 1e-11)
    assert close(got["grad_w1"], params[2].grad.tolist(), 1e-11)


@pytest.mark.parametrize("estimator,problem_id", [
    ("hte", "poisson-3body-v1"), ("hte,dist=gaussian", "sine-gordon-2body-v1"),
    ("sdgd", "allen-cahn-3body-v1"), ("stde,dist=coordinate", "poisson-2body-scaled-v1"),
    ("stde", "biharmonic-clamped-2body-v1"), ("hte", "biharmonic-clamped-3body-v1"),
    ("stde", "biharmonic-clamped-2body-scaled-v1")])
def test_one_rank_hte_and_sdgd_equal_the_dense_pinn_on_the_same_sample(estimator, problem_id):
    """hte (dense probes, Hessian-vector products through the pre-activations) and the
    coordinate estimators (sdgd; sparse stde) on the sharded view at R = 1, and the clamped
    biharmonic (its order-4 source from the shard's window sums, the jet of A^2 from
    s, x . v, ||v||^2), against the problem's own source and autodiff through the dense PINN on
    the same points and probes: the same source, loss and gradients."""
    from pinnbench.maths.directions import CoordinateDirections

    solver = f"bp[points=8,probes=6,lr=1e-2,estimator={estimator}]"
    payload = {**SMALL, "problem": problem_id, "solver": solver}
    got = one_step(payload, Collectives(1), 0, 1)
    problem = pinnbench.make_problem(problem_id, dim=SMALL["dim"], seed=SMALL["seed"],
                                     dtype=torch.float64)
    x = torch.tensor(got["x"], dtype=torch.float64)
    assert close(got["source"], problem.source(x).tolist(), 1e-12)
    _, sharded, bp = build(payload, Collectives(1), 0, 1)
    params = [p.detach().clone().requires_grad_(True) for p in sharded.params]
    dense = PINN(problem, params)
    method = estimator.split(",")[0]
    drawn = draw_probes(problem, method, torch.Generator().manual_seed(0), 6,
                        dtype=torch.float64, **bp.estimator_options)
    (group,) = drawn.groups.values()
    if "v" in got:
        group.dirs = DenseDirections(torch.tensor(got["v"], dtype=torch.float64))
    else:
        assert all(got["owned"]) and len(got["index"]) == 6
        group.dirs = CoordinateDirections(torch.tensor(got["index"]), SMALL["dim"],
                                          torch.float64)
    u, terms = estimate_terms(dense, x, method, probes=6, drawn=drawn, **bp.estimator_options)
    loss = problem.residual(terms, u, x).square().mean()
    loss.backward()
    assert math.isclose(got["loss"], float(loss.detach()), rel_tol=1e-12)
    assert close(got["grad_w0"], params[0].grad.tolist(), 1e-11)
    assert close(got["grad_w1"], params[2].grad.tolist(), 1e-11)


@pytest.mark.parametrize("problem_id,radii", [("poisson-3body-v1", (0.0, 1.0)),
                                               ("biharmonic-clamped-3body-v1", (1.0, 2.0))])
def test_points_are_the_streamed_radial_sample(problem_id, radii):
    """R = 1 draws exactly :class:`RadialBallStream`'s points (the streamed definition), in the
    ball or the clamped biharmonic's annulus."""
    problem = pinnbench.make_problem(problem_id, dim=50, seed=1, dtype=torch.float64)
    view = ShardedBall(problem, ShardPlan(50, 8, 1, 0), Collectives(1))
    x, halo = view.draw_points(6, 1234)
    assert halo is None
    r_min, r_max = radii
    assert torch.equal(x, RadialBallStream(6, 50, 8, 1234, r_min=r_min, r_max=r_max,
                                           dtype=torch.float64).dense())


def test_skips_say_why():
    ball = pinnbench.make_problem("poisson-2body-v1", dim=10)
    assert shard_skip(ball, solver_from_spec("bp")) == ""
    assert shard_skip(ball, solver_from_spec("sdze")) == ""
    assert shard_skip(ball, solver_from_spec("zo[momentum=0.9]")) == ""
    assert "stream=true" in shard_skip(ball, solver_from_spec("sdze[stream=true]"))
    assert "estimator=fd" in shard_skip(ball, solver_from_spec("zo[estimator=fd]"))
    assert "gPINN" in shard_skip(ball, solver_from_spec("sdze[loss=gpinn]"))
    assert "gPINN" in shard_skip(ball, solver_from_spec("bp[loss=gpinn]"))
    assert shard_skip(ball, solver_from_spec("bp[estimator=hte]")) == ""
    assert shard_skip(ball, solver_from_spec("bp[estimator=sdgd]")) == ""
    assert shard_skip(ball, solver_from_spec("bp[dist=coordinate]")) == ""
    assert "estimator=exact" in shard_skip(ball, solver_from_spec("bp[estimator=exact]"))
    assert "cuda_graph" in shard_skip(ball, solver_from_spec("bp[cuda_graph=true]"))
    from pinnbench.problems.ball import BallProblem
    from pinnbench.problems.biharmonic import ClampedBiharmonic
    from pinnbench.problems.terminal import HJBLin
    from pinnbench.problems.time_dependent import Heat, Wave

    for pid in pinnbench.list_problems():
        p = pinnbench.make_problem(pid, dim=10)
        sharded = isinstance(p, (BallProblem, ClampedBiharmonic, Heat, Wave, HJBLin))
        assert (shard_skip(p) == "") == sharded, pid
    assert "reverse mode in x" in shard_skip(pinnbench.make_problem("bsb-v1", dim=10))
    assert "only the ball" in shard_skip(pinnbench.make_problem("biharmonic-3body-v1", dim=10))
    clamped = pinnbench.make_problem("biharmonic-clamped-2body-v1", dim=10)
    assert shard_skip(clamped, solver_from_spec("bp[estimator=hte]")) == ""
    assert shard_skip(clamped, solver_from_spec("sdze")) == ""
    assert "nested reverse mode" in shard_skip(clamped, solver_from_spec("bp[estimator=sdgd]"))
    assert "biased for the bilaplacian" in shard_skip(clamped, solver_from_spec("zo[dist=rademacher]"))


# -- two gloo processes against one --------------------------------------------------------------------
def test_two_ranks_draw_the_same_points_and_gradients_as_one():
    payload = {**SMALL, "problem": "allen-cahn-3body-v1"}
    out = run_ranks("shard_targets:one_step", payload, 2, timeout_s=300,
                    collective_timeout_s=120)
    assert out.ok, out.failure
    ref = one_step(payload, Collectives(1), 0, 1)
    r0, r1 = out.results
    cat = [a + b for a, b in zip(r0["x"], r1["x"])]
    assert cat == ref["x"]  # bit for bit
    assert [a + b for a, b in zip(r0["v"], r1["v"])] == ref["v"]
    for r in (r0, r1):
        assert close(r["source"], ref["source"])
        assert math.isclose(r["loss"], ref["loss"], rel_tol=RTOL)
        assert close(r["grad_b0"], ref["grad_b0"]) and close(r["grad_w1"], ref["grad_w1"])
    assert r0["loss"] == r1["loss"]  # the replicated loss is the same number on every rank
    assert close([a + b for a, b in zip(r0["grad_w0"], r1["grad_w0"])], ref["grad_w0"])


def test_two_ranks_train_like_one_on_every_ball_family():
    """Training (bp, Adam) on 2 ranks: the same losses at every step and the same test error
    as 1 rank, to rounding, for every supported family (and the unbiased loss on gaussian
    probes)."""
    payloads = [{**SMALL, "problem": pid} for pid in BALL] + [
        {**SMALL, "problem": "poisson-3body-v1",
         "solver": "bp[points=8,probes=4,lr=1e-2,loss=unbiased,dist=gaussian]"}]
    out = run_ranks("shard_targets:runs", {"runs": payloads}, 2, timeout_s=600,
                    collective_timeout_s=120)
    assert out.ok, out.failure
    for i, p in enumerate(payloads):
        ref = reference(p)
        for rank in (0, 1):
            got = out.results[rank]["runs"][i]
            assert close(got["losses"], ref["losses"]), p["problem"]
            assert math.isclose(got["rel_l2"], ref["rel_l2"], rel_tol=RTOL), p["problem"]
            assert got["collectives"] > 0 and got["comm_time_per_step_s"] >= 0
        w0 = sum(out.results[r]["runs"][i]["w0_sum"] for r in (0, 1))
        assert math.isclose(w0, ref["w0_sum"], rel_tol=1e-9), p["problem"]
        assert ref["collectives"] == 0  # one rank needs no process group


HTE_SDGD = ("bp[points=8,probes=4,lr=1e-2,estimator=hte]",
            "bp[points=8,probes=4,lr=1e-2,estimator=hte,dist=gaussian,loss=unbiased]",
            "bp[points=8,probes=4,lr=1e-2,estimator=sdgd]",
            "bp[points=8,probes=4,lr=1e-2,estimator=sdgd,loss=unbiased]",
            "bp[points=8,probes=4,lr=1e-2,estimator=stde,dist=coordinate]")


def test_two_ranks_train_like_one_with_hte_and_sdgd():
    """bp with hte (dense probes per column block) and the coordinate estimators (sdgd, sparse
    stde: each sampled coordinate owned by one rank) on 2 ranks: the same losses at every step,
    test error and W0 as 1 rank."""
    payloads = [{**SMALL, "problem": pid, "solver": s}
                for pid in ("allen-cahn-3body-v1", "poisson-2body-scaled-v1") for s in HTE_SDGD]
    out = run_ranks("shard_targets:runs", {"runs": payloads}, 2, timeout_s=600,
                    collective_timeout_s=120)
    assert out.ok, out.failure
    for i, p in enumerate(payloads):
        ref = reference(p)
        for rank in (0, 1):
            got = out.results[rank]["runs"][i]
            assert close(got["losses"], ref["losses"]), p
            assert math.isclose(got["rel_l2"], ref["rel_l2"], rel_tol=RTOL), p
        w0 = sum(out.results[r]["runs"][i]["w0_sum"] for r in (0, 1))
        assert math.isclose(w0, ref["w0_sum"], rel_tol=1e-9), p


CLAMPED = ("biharmonic-clamped-2body-v1", "biharmonic-clamped-2body-scaled-v1",
           "biharmonic-clamped-3body-v1")


def test_two_ranks_train_like_one_on_the_clamped_biharmonic():
    """The clamped biharmonic (order 4 on an annulus; f from the order-4 window sums, A^2's jet
    from the summed s, x . v, ||v||^2) on 2 ranks: bp (stde, and hte unbiased), sdze and zo
    train like 1 rank (losses at every step, test error, W0)."""
    solvers = ("bp[points=8,probes=4,lr=1e-2]",
               "bp[points=8,probes=4,lr=1e-2,estimator=hte,loss=unbiased]",
               "sdze[points=8,probes=4]", "zo[points=8,probes=4,crns=true]")
    payloads = [{**SMALL, "problem": pid, "solver": s} for pid in CLAMPED for s in solvers[:2]]
    payloads += [{**SMALL, "problem": CLAMPED[1], "solver": s} for s in solvers[2:]]
    out = run_ranks("shard_targets:runs", {"runs": payloads}, 2, timeout_s=600,
                    collective_timeout_s=120)
    assert out.ok, out.failure
    for i, p in enumerate(payloads):
        ref = reference(p)
        for rank in (0, 1):
            got = out.results[rank]["runs"][i]
            assert close(got["losses"], ref["losses"]), p
            assert math.isclose(got["rel_l2"], ref["rel_l2"], rel_tol=RTOL), p
        w0 = sum(out.results[r]["runs"][i]["w0_sum"] for r in (0, 1))
        assert math.isclose(w0, ref["w0_sum"], rel_tol=1e-9), p


def test_two_ranks_split_the_sampled_coordinates_by_owner():
    """sdgd on 2 ranks: every rank samples the same coordinates, each is owned by exactly one
    rank (both own some here), and W0's gradient lands on the owner's columns only: summed
    over the ranks it is one rank's."""
    payload = {**SMALL, "problem": "sine-gordon-3body-v1",
               "solver": "bp[points=8,probes=12,lr=1e-2,estimator=sdgd]"}
    out = run_ranks("shard_targets:one_step", payload, 2, timeout_s=300,
                    collective_timeout_s=120)
    assert out.ok, out.failure
    ref = one_step(payload, Collectives(1), 0, 1)
    r0, r1 = out.results
    assert r0["index"] == r1["index"] == ref["index"]
    assert [a != b for a, b in zip(r0["owned"], r1["owned"])] == [True] * 12
    assert any(r0["owned"]) and any(r1["owned"])
    for r in (r0, r1):
        assert math.isclose(r["loss"], ref["loss"], rel_tol=RTOL)
    assert close([a + b for a, b in zip(r0["grad_w0"], r1["grad_w0"])], ref["grad_w0"])


# -- failures: clean, not a hang -----------------------------------------------------------------------
FAST = {"runs": [{**SMALL, "problem": "poisson-2body-v1", "steps": 2}]}


@pytest.mark.parametrize("target,expect", [
    ("raises", "rank 1 error: RuntimeError: planted failure on rank 1"),
    ("killed", "rank 1 was killed by SIGKILL"),
    ("other_seed", "disagree on the cell's seed"),
])
def test_a_failing_rank_fails_the_run_cleanly(target, expect):
    out = run_ranks(f"shard_targets:{target}", FAST, 2, timeout_s=300, collective_timeout_s=60)
    assert not out.ok
    assert expect in out.failure
    assert all(e is not None for e in out.ended)


def test_a_collective_that_never_completes_times_out():
    out = run_ranks("shard_targets:silent", {}, 2, timeout_s=300, collective_timeout_s=3)
    assert not out.ok
    assert out.failure.startswith("rank 0 error")
    assert max(e.elapsed_s for e in out.ended) < 120


# -- the cell: --ranks -----------------------------------------------------------------------------------
CELL = {"problem": "sine-gordon-2body-v1", "dim": 64, "solver": "bp[points=8,probes=4]",
        "steps": 4, "seed": 2, "width": 16, "depth": 2, "dtype": "float64", "warmup": 1,
        "floors": False, "timeout_s": 300.0}


def test_a_sharded_cell_records_every_rank_and_trains_like_one_rank():
    from pinnbench.cells.cell import run_cell
    from pinnbench.cells.sharded_measurement import shard_block_columns

    row = run_cell({**CELL, "ranks": 2})
    assert row["status"] == "ok", row["message"]
    assert row["ranks"] == 2
    ms = row["rank_measurements"]
    assert [m["rank"] for m in ms] == [0, 1] and all(m["how"] == "returned" for m in ms)
    assert ms[0]["columns"][0] == 0 and ms[0]["columns"][1] == ms[1]["columns"][0]
    assert ms[1]["columns"][1] == CELL["dim"]
    for m in ms:
        assert m["peak_cpu_bytes"] > 0 and m["time_per_step_s"] > 0
        assert 0 < m["comm_time_per_step_s"] < m["time_per_step_s"]
        assert m["collectives"] > 0 and m["bytes_communicated"] > 0
    ref = reference({**CELL, "block_columns": shard_block_columns(64, 8)})
    assert math.isclose(row["final_loss"], ref["losses"][-1], rel_tol=RTOL)
    assert math.isclose(row["final_rel_l2"], ref["rel_l2"], rel_tol=RTOL)


def test_a_failed_rank_makes_a_failed_row_that_names_it():
    from pinnbench.cells.cellspec import normalize_spec
    from pinnbench.cells.isolation import Ended
    from pinnbench.cells.shard_launch import RanksEnded
    from pinnbench.cells.sharded_measurement import cell_row

    spec = normalize_spec({**CELL, "ranks": 2})
    killed = Ended("killed", None, None, "was killed by SIGKILL (most likely ...)", 3.0)
    stopped = Ended("stopped", None, {"status": "ok", "curve": [{"step": 0}]},
                    "was stopped after another rank failed", 3.5)
    row = cell_row(spec, RanksEnded([stopped, killed], "rank 1 was killed by SIGKILL", 1), "t")
    assert row["status"] == "oom" and "rank 1 was killed" in row["message"]
    assert [m["how"] for m in row["rank_measurements"]] == ["stopped", "killed"]
    assert row["curve"] == [{"step": 0}]  # rank 0's partial row


def test_ranks_in_the_spec():
    from pinnbench.cells.cellspec import cell_id, normalize_spec

    one = normalize_spec(CELL)
    assert one["ranks"] == 1
    assert cell_id(one) == cell_id({k: v for k, v in one.items() if k != "ranks"})
    assert cell_id(normalize_spec({**CELL, "ranks": 2})) != cell_id(one)
    with pytest.raises(ValueError, match="not a time budget"):
        normalize_spec({**CELL, "ranks": 2, "time_budget_s": 10.0})
    with pytest.raises(ValueError, match="ranks must be an integer >= 1"):
        normalize_spec({**CELL, "ranks": 0})


def test_run_refuses_bad_ranks_with_a_usage_error(capsys):
    from pinnbench.cli import main

    assert main(["run", "--ranks", "0", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--ranks must be an integer >= 1" in err and "Traceback" not in err
    assert main(["run", "--ranks", "2", "--time-budget", "5", "--steps", "3", "--dims", "64",
                 "--problems", "poisson-2body-v1", "--solvers", "bp", "--dry-run"]) == 2
    assert "not a time budget" in capsys.readouterr().err


def test_two_ranks_hold_half_the_d_sized_state_at_d_1e6(monkeypatch):
    """d = 10^6, float32: W0 (32 x d), its gradient and Adam's moments, the step's points and
    probes and the test set (100 x D) are the d-sized state. Each of 2 ranks holds half of W0
    exactly, and its peak RSS grows from d = 10^4 to 10^6 (the same process, after the first
    run: what does not grow with d, the imports, the process group, is taken out) by at most
    0.6 of what one rank's grows. With glibc's fixed mmap threshold, as sdze's test
    (tests/test_sharding_zo.py): with the dynamic one rank 0 grew by 0.63 in one run under load
    (0.56 on rank 1; the same code passed before and after), freed blocks kept in the heap by
    allocation history."""
    monkeypatch.setenv("PINNBENCH_COMPILE", "0")  # eager closed forms: no compile in the peak
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    payload = {"runs": [{"problem": "poisson-2body-v1", "dim": d, "steps": 2, "seed": 0,
                         "solver": "bp[points=8,probes=4]", "width": 32, "depth": 1,
                         "dtype": "float32"} for d in (10**4, 10**6)]}
    grown = {}
    for ranks in (1, 2):
        out = run_ranks("shard_targets:runs", payload, ranks, timeout_s=600,
                        collective_timeout_s=300)
        assert out.ok, out.failure
        assert sum(r["runs"][1]["w0_bytes"] for r in out.results) == 32 * 10**6 * 4
        grown[ranks] = [r["runs"][1]["peak_cpu_bytes"] - r["runs"][0]["peak_cpu_bytes"]
                        for r in out.results]
    (one,) = grown[1]
    assert one > 4 * 32 * 10**6 * 4  # at least W0, its gradient and two moments
    for g in grown[2]:
        assert g < 0.6 * one, (grown, one)


def test_torchrun_runs_the_same_sharded_cell(tmp_path):
    """The torchrun entry point (docs/sharding.md, across machines) gives the row the isolation
    launcher gives: the same losses and errors, every rank's measurements."""
    import json
    import os
    import subprocess
    import sys

    from pinnbench.cells.cell import run_cell

    spec = {**CELL, "ranks": 2}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m",
                           "pinnbench.cells.sharded_measurement", str(tmp_path / "spec.json"),
                           str(tmp_path / "row.json")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads((tmp_path / "row.json").read_text())
    ref = run_cell(spec)
    assert row["status"] == ref["status"] == "ok"
    assert row["cell_id"] == ref["cell_id"]
    assert math.isclose(row["final_loss"], ref["final_loss"], rel_tol=RTOL)
    assert math.isclose(row["final_rel_l2"], ref["final_rel_l2"], rel_tol=RTOL)
    assert [m["rank"] for m in row["rank_measurements"]] == [0, 1]
    assert all(m["comm_time_per_step_s"] > 0 for m in row["rank_measurements"])


def test_torchrun_entry_refuses_a_spec_for_another_world(tmp_path, monkeypatch, capsys):
    import json

    from pinnbench.cells.sharded_measurement import main

    (tmp_path / "spec.json").write_text(json.dumps({**CELL, "ranks": 3}))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([str(tmp_path / "spec.json"), str(tmp_path / "row.json")]) == 2
    assert "ranks=3 but the world has 2" in capsys.readouterr().err


def test_a_sharded_cell_of_an_unsharded_solver_or_family_is_skipped_with_the_reason():
    from pinnbench.cells.cell import run_cell

    row = run_cell({**CELL, "solver": "sdze[estimator=fd]", "ranks": 2})
    assert row["status"] == "skipped" and "estimator=fd" in row["message"]
    assert [m["how"] for m in row["rank_measurements"]] == ["returned", "returned"]


def test_a_rank_that_fails_in_a_run_fails_its_cell_and_the_store_records_it(tmp_path):
    """pinnbench run --ranks 2 where rank 1 raises in its first step (a plugin problem): the
    cell is an `error` row naming rank 1, with how each rank ended, and the run goes on."""
    from pathlib import Path

    from pinnbench.cli import main
    from pinnbench.cells.store import load_results

    plugin = str(Path(__file__).with_name("shard_plugin.py"))
    store = tmp_path / "s.sqlite"
    code = main(["run", "--problems", "shard-fails-on-rank-1-v1,poisson-2body-v1", "--solvers",
                 "bp[points=8,probes=4]", "--dims", "64", "--steps", "3", "--width", "8",
                 "--depth", "1", "--ranks", "2", "--import", plugin, "--store", str(store),
                 "--no-report", "--no-floors", "--timeout", "300"])
    assert code == 1  # a sweep with an error cell
    rows = {r["problem"]: r for _, r in load_results(store).iterrows()}
    bad, good = rows["shard-fails-on-rank-1-v1"], rows["poisson-2body-v1"]
    assert bad["status"] == "error" and bad["ranks"] == 2
    assert "rank 1 error" in bad["message"] and "planted failure" in bad["message"]
    assert [m["how"] for m in bad["rank_measurements"]][1] == "returned"
    assert good["status"] == "ok" and len(good["rank_measurements"]) == 2


def test_the_sharded_path_keeps_every_tensor_on_its_device_in_the_cuda_simulation():
    """One rank on (simulated) CUDA: no tensor left on the wrong device, no CPU generator on a
    CUDA draw, the test set drawn on the CPU and copied over; the numbers of the CPU run."""
    from cuda_sim import simulated_cuda

    payload = {**SMALL, "problem": "allen-cahn-3body-v1", "steps": 2}
    expected = reference(payload)
    with simulated_cuda() as sim:
        got = reference({**payload, "device": "cuda"})
    assert sim.errors == [] and sim.cuda_ops > 100
    assert got["losses"] == expected["losses"] and got["rel_l2"] == expected["rel_l2"]


def test_a_sharded_cells_ranks_split_the_free_cores(monkeypatch):
    """CPU threads per process = free physical cores / (cells at once x ranks)."""
    from pinnbench.cells import machine_load
    from pinnbench.cells.sweep import SweepConfig, plan

    monkeypatch.setattr(machine_load, "physical_cores", lambda: 8)
    monkeypatch.setattr(machine_load, "load_average", lambda: 0.0)
    config = dict(problems=["poisson-2body-v1"], solvers=["bp"], dims=[64], steps=2)
    assert [c["threads"] for c in plan(SweepConfig(**config, ranks=2, jobs=2))] == [2]
    assert [c["threads"] for c in plan(SweepConfig(**config))] == [8]


@pytest.mark.parametrize("problem_id", ["allen-cahn-3body-v1", "biharmonic-clamped-2body-v1",
                                        "wave-v1", "hjb-lin-v1"])
def test_the_sharded_sets_are_evaluated_in_column_block_order(problem_id):
    """An evaluation draws each of the shard's column blocks once (the first twice more or less
    a halo block: the closed forms, kept), never once per row chunk (the old row-chunked set
    drew every block again for each of its chunks: ~180 s an evaluation at d = 2e7); and its
    (u, u*) are the model and the closed forms at the whole set's points, drawn row-wise, to
    rounding, on both sets (their own seeds)."""
    from pinnbench.maths.problem import TEST_STREAM, VALIDATION_STREAM
    from pinnbench.seeds import draw_seed

    view, model, solver = build({**SMALL, "problem": problem_id, "steps": 1}, Collectives(1), 0, 1)
    solver.step()
    shard_blocks = view.plan.blocks[1] - view.plan.blocks[0]
    for split, stream in (("test", TEST_STREAM), ("validation", VALIDATION_STREAM)):
        (u, u_star), = view.predictions(model, split)
        drawn = view._sets[split].blocks_drawn
        assert shard_blocks < drawn <= 2 * shard_blocks + 1, (split, drawn)
        (again, again_star), = view.predictions(model, split)
        assert view._sets[split].blocks_drawn - drawn == shard_blocks  # one draw a block
        assert torch.equal(again, u) and torch.equal(again_star, u_star)
        x, halo = view.draw_points(view.n_test, draw_seed(view.base.cpu_generator(stream)), "cpu")
        with torch.no_grad():
            assert close(u, model(x), rtol=1e-12) and close(u_star, view.exact_of(x, halo), 1e-12)
    with pytest.raises(TypeError, match="column-block order"):
        view.test_chunks()
