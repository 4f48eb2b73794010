"""Plan a sweep (problems x solvers x dims x seeds -> cell specs), run it, prune after OOMs.

Where cells run is an :class:`pinnbench.cells.executors.Executor`: by default a local pool of ``jobs``
cell processes (:class:`pinnbench.cells.executors.LocalExecutor`), or a Dask cluster
(:class:`pinnbench.cells.executors.DaskExecutor`, docs/dask.md); either way every cell runs in its own
process. This thread plans, submits and is the only writer of the store (one transaction per
finished cell, in the order cells finish). Cells are submitted in increasing d, so that pruning
works: once a (problem, solver, model, device, dtype) runs out of memory at some d, every cell of
it at a larger d not yet submitted is recorded as ``skipped`` (reason: the d of the OOM) instead of
being run, unless pruning is off.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import MISSING, Field, field, fields, make_dataclass
from typing import Any, Callable

from pinnbench.cells.cellspec import DEFAULTS, CellSpec
from pinnbench.cells.rows import base_row, now_iso
from pinnbench.cells.executors import Executor, LocalExecutor
from pinnbench.cells.machine_load import default_threads, load_average
from pinnbench.cells.run_lease import HEARTBEAT_S
from pinnbench.solver import format_spec, parse_spec


def with_points(solver_spec: str, points: int | None) -> str:
    """Set the common ``points`` parameter unless the spec sets it itself."""
    if points is None:
        return solver_spec
    name, params = parse_spec(solver_spec)
    params.setdefault("points", str(points))
    return format_spec(name, params)


#: the fields of a CellSpec that a sweep sets for each cell (its axes, and what the planner or the
#: cell fills in); every other field is an option of the whole sweep
PER_CELL_FIELDS = ("problem", "dim", "solver", "seed", "command", "run_id", "solver_name",
                   "solver_params")
#: the cell options of a sweep: the other fields of :class:`pinnbench.cells.cellspec.CellSpec`, so that a
#: new cell option is declared once, there, and a sweep passes it to every cell
CELL_OPTIONS = tuple(f.name for f in fields(CellSpec) if f.name not in PER_CELL_FIELDS)


def _option_field(f: Field) -> tuple[str, Any, Any]:
    """A CellSpec field as a SweepConfig field: same name, type and default (imports: a list)."""
    if f.name == "imports":
        return f.name, "list[str]", field(default_factory=list)
    if f.default is not MISSING:
        return f.name, f.type, field(default=f.default)
    return f.name, f.type, field(default_factory=f.default_factory)


SweepConfig = make_dataclass("SweepConfig", [
    ("problems", "list[str]"), ("solvers", "list[str]"), ("dims", "list[int]"),
    ("seeds", "list[int]", field(default_factory=lambda: [DEFAULTS["seed"]])),
    *(_option_field(f) for f in fields(CellSpec) if f.name in CELL_OPTIONS),
    ("points", "int | None", field(default=None)),
    ("jobs", "int", field(default=1)),
    ("auto_threads", "bool", field(default=True)),
])
SweepConfig.__module__ = __name__
SweepConfig.__doc__ = """What a sweep runs: the axes (problems x solvers x dims x seeds), every cell
option of :class:`pinnbench.cells.cellspec.CellSpec` with its default (``CELL_OPTIONS``: steps, width,
device, tf32, ...), and what only the sweep knows: ``points`` (the solvers' common parameter,
unless a spec sets it), ``jobs`` (cells at once on this machine) and ``auto_threads`` (threads
None: give CPU cells this machine's free cores / jobs; False where cells run on other machines,
e.g. a remote Dask cluster: torch's default there, recorded per cell)."""


def plan(config: SweepConfig, command: str | None = None) -> list[dict[str, Any]]:
    """The cells in run order (increasing d, then problem, seed, solver: the solvers of one seed
    run one after another, so a drift of the machine's load over a sweep falls on every solver
    alike instead of on whichever ran last; docs/protocol.md), each validated once,
    here, as a :class:`pinnbench.cells.cellspec.CellSpec` (ValueError naming what is allowed), before
    anything runs or is written; returned in their plain form (``CellSpec.to_dict()``), which
    the store, the executors and the cell processes pass along."""
    solvers = [with_points(solver, config.points) for solver in config.solvers]
    threads = config.threads
    if threads is None and config.device == "cpu" and config.auto_threads:
        threads = default_threads(config.jobs * config.ranks)  # a sharded cell: R processes
    options = {name: getattr(config, name) for name in CELL_OPTIONS}
    options.update(imports=list(config.imports), threads=threads, command=command)
    cells = []
    for dim in sorted(config.dims):
        for problem in config.problems:
            for seed in config.seeds:
                for solver in solvers:
                    cells.append(CellSpec.from_dict({
                        **options, "problem": problem, "dim": dim, "seed": seed,
                        "solver": solver}).to_dict())
    return cells


def interleaved(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``cells`` gathered from several plans (one per tuned study) in :func:`plan`'s run order:
    increasing d, then problem, then seed, the solvers of one seed one after another (a stable
    sort: their order within a seed is kept)."""
    problems = list(dict.fromkeys(c["problem"] for c in cells))
    return sorted(cells, key=lambda c: (c["dim"], problems.index(c["problem"]), c["seed"]))


def prune_key(spec: dict[str, Any]) -> tuple:
    return (spec["problem"], spec["solver"], spec["width"], spec["depth"], spec["device"],
            spec["dtype"])


def pruned_row(spec: dict[str, Any], oom_dim: int) -> dict[str, Any]:
    row = base_row(spec)
    row["status"] = "skipped"
    row["message"] = (f"pruned: {spec['solver_name']} ran out of memory at d = {oom_dim} on "
                      f"{spec['device']} (run with --no-prune to try anyway)")
    row["started_at"] = row["finished_at"] = now_iso()
    row["steps_done"] = 0
    return row


#: statuses of cells that end without computing their floors, which the planner then fills
FLOORLESS = ("timeout", "oom")
#: wall-clock limit of the process that computes one key's floors for such cells
FLOOR_TIMEOUT_S = 600.0


class FloorCache:
    """The floors of each (problem, d, seed, dtype) key, which every cell of the key shares
    (:func:`pinnbench.judge.floors.floors_for`): taken from the first cell that computed them, else
    computed once in an isolated process (its timeout ``FLOOR_TIMEOUT_S``, the cell's memory
    cap) for a cell that timed out or ran out of memory before it could."""

    def __init__(self) -> None:
        self.known: dict[tuple, dict[str, Any]] = {}

    @staticmethod
    def key(spec: dict[str, Any]) -> tuple:
        return spec["problem"], spec["dim"], spec["seed"], spec["dtype"]

    def complete(self, row: dict[str, Any], spec: dict[str, Any]) -> None:
        key = self.key(spec)
        if row.get("floor_const_rel_l2") is not None:
            self.known.setdefault(key, {k: v for k, v in row.items() if k.startswith("floor_")})
            return
        if row.get("status") not in FLOORLESS or not spec.get("floors", True):
            return
        if key not in self.known:
            from pinnbench.cells.isolation import measure_isolated

            out = measure_isolated("pinnbench.cells.sweep:_floors_in_child", {
                "problem": spec["problem"], "dim": spec["dim"], "seed": spec["seed"],
                "dtype": spec["dtype"]},
                timeout_s=FLOOR_TIMEOUT_S, memory_limit_bytes=spec.get("memory_limit_bytes"),
                imports=spec.get("imports") or [])
            self.known[key] = {k: v for k, v in out.items() if k.startswith("floor_")} \
                if out.get("status") == "ok" else \
                {"floor_error": f"{out.get('status')}: {out.get('message', '')}"[:300]}
        found = self.known[key]
        if "floor_error" in found:
            row.setdefault("provenance", {})["floor_error"] = found["floor_error"]
            return
        row.update({k: v for k, v in found.items() if k in row})
        row.setdefault("provenance", {})["floors_from"] = "the planner (the cell ended first)"


def _floors_in_child(payload: dict[str, Any], report=None) -> dict[str, Any]:
    from pinnbench.judge.floors import floors_for

    return {"status": "ok", **floors_for(payload["problem"], payload["dim"], payload["seed"],
                                         payload["dtype"])}


def execute_sweep(cells: list[dict[str, Any]], *, run_id: str,
                  write: Callable[[dict[str, Any]], None], jobs: int = 1, prune: bool = True,
                  on_start: Callable[[dict[str, Any]], None] | None = None,
                  on_result: Callable[[dict[str, Any]], None] | None = None,
                  poll_s: float | None = None,
                  executor: Executor | None = None,
                  heartbeat: Callable[[], None] | None = None,
                  heartbeat_s: float = HEARTBEAT_S) -> list[dict[str, Any]]:
    """Run ``cells`` on ``executor`` (default: a :class:`LocalExecutor` of ``jobs`` processes,
    closed at the end; an executor passed in is left open), with at most
    ``executor.capacity(spec)`` cells in flight. ``write(row)`` is called once per finished
    cell, in this thread, before ``on_result(row)``. On KeyboardInterrupt (or any exception) the
    cells in flight are cancelled and the exception propagates (finished cells are already
    written). ``heartbeat()`` is called at least every ``heartbeat_s`` seconds while cells run
    (the planner's sign of life, :mod:`pinnbench.cells.run_lease`)."""
    owned = executor is None
    if executor is None:
        executor = LocalExecutor(jobs)
    poll_s = executor.poll_s if poll_s is None else poll_s
    pending = deque(cells)
    oom_at: dict[tuple, int] = {}
    rows: list[dict[str, Any]] = []
    last_beat = time.monotonic()

    floors = FloorCache()

    def finish(row: dict[str, Any], spec: dict[str, Any]) -> None:
        row["run_id"] = run_id
        floors.complete(row, spec)  # a timed-out or OOM cell gets its key's floors too
        if isinstance(row.get("provenance"), dict):
            row["provenance"]["load_avg_1m_at_end"] = load_average()
        write(row)
        rows.append(row)
        if row["status"] == "oom":
            key = prune_key(spec)
            oom_at[key] = min(oom_at.get(key, spec["dim"]), spec["dim"])
        if on_result:
            on_result(row)

    try:
        while pending or executor.in_flight():
            while pending and executor.in_flight() < executor.capacity(pending[0]):
                spec = pending.popleft()
                key = prune_key(spec)
                if prune and key in oom_at and spec["dim"] > oom_at[key]:
                    finish(pruned_row({**spec, "run_id": run_id}, oom_at[key]), spec)
                    continue
                executor.submit({**spec, "run_id": run_id})
                if on_start:
                    on_start(spec)
            for spec, row in executor.poll():
                finish(row, spec)
            if heartbeat is not None and time.monotonic() - last_beat >= heartbeat_s:
                heartbeat()
                last_beat = time.monotonic()
            if executor.in_flight():
                time.sleep(poll_s)
    except BaseException:
        executor.cancel()
        raise
    finally:
        if owned:
            executor.close()
    return rows
