"""One rank of a sharded training run: the problem's shard view, the sharded model, the solver,
the steps, the error on the sharded test set, and what each rank measured (issue 25;
docs/sharding.md).

``train_rank(payload, comm, rank, ranks, report)`` is the target :func:`pinnbench.cells.shard_launch.
run_ranks` calls on every rank (``comm`` on the process group), and runs as well in the calling
process with ``Collectives(1)`` (one rank, no process group): the reference a sharded run must
equal to rounding. Its payload: ``problem``, ``dim``, ``solver``, ``steps``, ``seed``,
``width``, ``depth``, ``dtype``, ``device`` and ``block_columns`` (the shard blocks' width, part of the
data's definition: every R with the same blocks draws the same numbers).

The model and solver streams are the cell's (:func:`pinnbench.seeds.cell_generator`, "model"
and "solver"), the same on every rank; each rank checks that the others agree on them.
"""

from __future__ import annotations

import time

from pinnbench import memory
from pinnbench.maths.problem import DTYPES
from pinnbench.seeds import cell_generator, cell_stream_seed
from pinnbench.cells.sharded_ball import shard_skip, shard_view
from pinnbench.cells.sharded_measurement import shard_block_columns
from pinnbench.cells.sharding import Collectives, ShardPlan, make_sharded_model

#: payload keys and their defaults
DEFAULTS = {"steps": 10, "seed": 0, "width": 128, "depth": 3, "dtype": "float32",
            "block_columns": None, "device": "cpu"}


def build(payload: dict, comm: Collectives, rank: int, ranks: int):
    """(view, model, solver) of this rank, set up."""
    import pinnbench
    from pinnbench.solver import solver_from_spec

    p = {**DEFAULTS, **payload}
    comm.check_same("the cell's seed", cell_stream_seed(p["seed"], "cell"))
    problem = pinnbench.make_problem(p["problem"], dim=p["dim"], seed=p["seed"],
                                     dtype=DTYPES[p["dtype"]], device=p["device"])
    solver = solver_from_spec(p["solver"], steps=p.get("steps"))
    why = shard_skip(problem, solver)
    if why:
        raise ValueError(why)
    width = p["block_columns"] or shard_block_columns(problem.dim, solver.params["points"])
    plan = ShardPlan(problem.dim, width, ranks, rank, time=problem.input_dim - problem.dim)
    view = shard_view(problem, plan, comm)
    model = make_sharded_model(view, plan, comm, p["width"], p["depth"],
                               generator=cell_generator(p["seed"], "model", problem.device))
    solver.setup(view, model, cell_generator(p["seed"], "solver", problem.device))
    return view, model, solver


def train_rank(payload: dict, comm: Collectives, rank: int, ranks: int, report=None) -> dict:
    """``steps`` steps on this rank; the losses, the test error and the measurements."""
    from pinnbench.judge.metrics import evaluate

    memory.reset_peak_cpu()
    baseline = memory.current_cpu_bytes()
    view, model, solver = build(payload, comm, rank, ranks)
    steps = {**DEFAULTS, **payload}["steps"]
    losses, times, comm_s = [], [], []
    for _ in range(steps):
        c0, t0 = comm.time_s, time.perf_counter()
        losses.append(float(solver.step()))  # a 0-d tensor from bp (no host read in a step)
        times.append(time.perf_counter() - t0)
        comm_s.append(comm.time_s - c0)
    metrics = evaluate(model, view)
    w0 = model.params[0]
    return {
        "status": "ok", "rank": rank, "ranks": ranks, "columns": [view.plan.lo, view.plan.hi],
        "losses": losses, "rel_l2": metrics["rel_l2"],
        "time_per_step_s": sorted(times)[len(times) // 2] if times else None,
        "comm_time_per_step_s": sorted(comm_s)[len(comm_s) // 2] if comm_s else None,
        "data_time_s": solver.data_time_s,
        "collectives": comm.calls, "bytes_communicated": comm.bytes,
        "w0_bytes": w0.numel() * w0.element_size(),
        "peak_cpu_bytes": memory.peak_cpu_bytes(), "baseline_cpu_bytes": baseline,
        "w0_sum": float(w0.detach().sum()),
    }


def reference(payload: dict) -> dict:
    """:func:`train_rank` in this process as one rank (no process group)."""
    return train_rank(payload, Collectives(1), 0, 1)
