"""A sharded cell (``ranks`` > 1; issue 25, docs/sharding.md): each rank runs the cell's
measurement (:func:`pinnbench.cells.measurement.execute`) on its shard, and the cell's row is rank 0's
with every rank's measurements (``rank_measurements``), or, when a rank failed, the row of a
failed cell that says which rank and how.

A rank's problem is the shard view (:class:`pinnbench.cells.sharded_ball.ShardedBall`), its model the
sharded PINN (:func:`pinnbench.cells.sharding.make_sharded_model`); everything else (the solver, the
timed loop, the evaluations on the sharded test set, the peaks) is the cell's own code. The
loss and the errors are replicated: every rank records the same curve.
"""

from __future__ import annotations

from typing import Any

from pinnbench.cells.isolation import STATUS_OF_ENDING
from pinnbench.cells.rows import unfinished_row
from pinnbench.cells.shard_launch import RankProcesses, RanksEnded
from pinnbench.cells.sharding import Collectives, ShardPlan, make_sharded_model
from pinnbench.maths.streaming import MIN_BLOCK_COLUMNS, block_width

#: a sharded cell's collectives time out after this long (or its timeout_s, if shorter)
COLLECTIVE_TIMEOUT_S = 600.0
#: the shard blocks are narrow enough that d splits into at least this many (up to this many
#: ranks), else the streamed blocks' width (:func:`shard_block_columns`)
SHARD_MIN_BLOCKS = 64


def shard_block_columns(dim: int, points: int) -> int:
    """The width of a sharded cell's column blocks: the streamed data's (STREAM_BLOCK_ELEMENTS
    numbers per block of points), narrowed to d / SHARD_MIN_BLOCKS, at least MIN_BLOCK_COLUMNS.
    A function of d and the points only, never of the ranks: every R draws the same data."""
    return max(MIN_BLOCK_COLUMNS, min(block_width(points), dim // SHARD_MIN_BLOCKS))


class Rank:
    """The hooks of :func:`pinnbench.cells.measurement.execute` for rank ``rank`` of ``ranks``."""

    def __init__(self, comm: Collectives, rank: int, ranks: int) -> None:
        self.comm, self.rank, self.ranks = comm, rank, ranks
        self.plan: ShardPlan | None = None
        self.comm_times: list[float] = []

    def skip(self, problem, solver) -> tuple[bool, str]:
        from pinnbench.cells.sharded_ball import shard_skip

        why = shard_skip(problem, solver)
        return (True, why) if why else solver.skip(problem)

    def build(self, problem, spec: dict[str, Any]):
        """(this rank's view of ``problem``, the sharded model), the model from the cell's
        "model" stream as every cell's."""
        from pinnbench.seeds import cell_generator
        from pinnbench.cells.sharded_ball import shard_view

        self.comm.check_same("the cell's seed", spec["seed"])
        points = int(spec["solver_params"].get("points", 100))
        self.plan = ShardPlan(problem.dim, shard_block_columns(problem.dim, points), self.ranks,
                              self.rank, time=problem.input_dim - problem.dim)
        view = shard_view(problem, self.plan, self.comm)
        model = make_sharded_model(view, self.plan, self.comm, spec["width"], spec["depth"],
                                   generator=cell_generator(spec["seed"], "model",
                                                            problem.device))
        return view, model

    def time_steps(self, solver) -> None:
        """Record the time each step spends in collectives (``solver.step`` wrapped)."""
        step = solver.step

        def step_and_time() -> float:
            before = self.comm.time_s
            loss = step()
            self.comm_times.append(self.comm.time_s - before)
            return loss

        solver.step = step_and_time

    def fill(self, row: dict[str, Any], m) -> None:
        from pinnbench.cells.measurement import median_iqr

        warmup = m.spec["warmup"]
        timed = self.comm_times[warmup:] if len(self.comm_times) > warmup else self.comm_times
        plan = self.plan
        row["rank_measurements"] = [{
            "rank": self.rank,
            "columns": [plan.lo, plan.hi] if plan is not None else None,
            "peak_cpu_bytes": row.get("peak_cpu_bytes"),
            "peak_gpu_allocated_bytes": row.get("peak_gpu_allocated_bytes"),
            "time_per_step_s": row.get("time_per_step_s"),
            "comm_time_per_step_s": median_iqr(timed)[0],
            "collectives": self.comm.calls, "bytes_communicated": self.comm.bytes}]


def execute_rank(spec: dict[str, Any], comm: Collectives, rank: int, ranks: int,
                 report) -> dict[str, Any]:
    """One rank's measurement (the target :class:`RankProcesses` runs): rank 0 reports its
    partial rows; on CUDA each rank takes its own GPU."""
    from pinnbench.cells.measurement import execute

    if spec["device"].startswith("cuda"):
        spec = {**spec, "device": f"cuda:{rank}"}
    return execute(spec, report if rank == 0 else None, shard=Rank(comm, rank, ranks))


def start(spec: dict[str, Any]) -> RankProcesses:
    """The ``ranks`` processes of a normalised sharded cell."""
    timeout = spec.get("timeout_s")
    return RankProcesses("pinnbench.cells.sharded_measurement:execute_rank", spec, spec["ranks"],
                         backend="nccl" if spec["device"].startswith("cuda") else "gloo",
                         timeout_s=timeout,
                         collective_timeout_s=min(COLLECTIVE_TIMEOUT_S, timeout or
                                                  COLLECTIVE_TIMEOUT_S),
                         memory_limit_bytes=spec.get("memory_limit_bytes"),
                         imports=spec.get("imports") or [])


def cell_row(spec: dict[str, Any], out: RanksEnded, started_at: str) -> dict[str, Any]:
    """The cell's row from its ranks' endings (module docstring)."""
    endings = []
    for r, e in enumerate(out.ended):
        mine = ((e.result or {}).get("rank_measurements") or [{"rank": r}])[0]
        message = e.message or ((e.result or {}).get("message", "") if not out.ok else "")
        endings.append({**mine, "how": e.how, **({"message": message[:300]} if message else {})})
    if out.ok and "cell_id" in (out.ended[0].result or {}):
        row = dict(out.ended[0].result)
        row["rank_measurements"] = endings
        return row
    failed = out.ended[out.failed_rank if out.failed_rank is not None else 0]
    status = ((failed.result or {}).get("status", "error") if failed.how == "returned"
              else STATUS_OF_ENDING.get(failed.how, "error"))
    row = unfinished_row(spec, status, f"the sharded cell failed: {out.failure}",
                         partial=out.ended[0].progress, started_at=started_at,
                         total_time_s=max(e.elapsed_s for e in out.ended))
    row["rank_measurements"] = endings
    return row


def main(argv: list[str] | None = None) -> int:
    """One rank of a sharded cell started by ``torchrun`` (or Slurm's ``srun`` with torchrun's
    environment: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), across machines:

        torchrun --nnodes N --nproc-per-node G ... -m pinnbench.cells.sharded_measurement SPEC OUT

    SPEC: a cell spec (JSON) whose ``ranks`` is the world size; rank 0 writes the cell's row
    (JSON, every rank's measurements in ``rank_measurements``) to OUT. Exit 0 when the cell's
    status is a result, 1 on error, 2 on a bad spec."""
    import argparse
    import json
    import os
    import sys
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from pinnbench.cells.cellspec import normalize_spec
    from pinnbench.cells.measurement import execute

    parser = argparse.ArgumentParser(prog="python -m pinnbench.cells.sharded_measurement")
    parser.add_argument("spec", help="the cell spec, a JSON file")
    parser.add_argument("out", help="where rank 0 writes the cell's row (JSON)")
    parser.add_argument("--collective-timeout", type=float, default=COLLECTIVE_TIMEOUT_S,
                        metavar="SECONDS", help="timeout of every collective")
    args = parser.parse_args(argv)
    try:
        with open(args.spec) as f:
            spec = normalize_spec(json.load(f))
        rank, ranks = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if spec["ranks"] != ranks:
            raise ValueError(f"the spec says ranks={spec['ranks']} but the world has {ranks} "
                             "processes")
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cuda = spec["device"].startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        spec = {**spec, "device": f"cuda:{local}"}
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://",
                            timeout=timedelta(seconds=args.collective_timeout))
    try:
        row = execute(spec, shard=Rank(Collectives(ranks), rank, ranks))
        mine = row.get("rank_measurements") or [{"rank": rank}]
        every: list = [None] * ranks
        dist.all_gather_object(every, mine[0])
    finally:
        dist.destroy_process_group()
    if rank == 0:
        from pinnbench.cells.isolation import write_json_atomic

        row["rank_measurements"] = every
        write_json_atomic(args.out, row)
    return 1 if row["status"] == "error" else 0


if __name__ == "__main__":
    raise SystemExit(main())
