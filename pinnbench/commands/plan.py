"""The plan of a run, read before any cell starts: per cell an estimate of its time and peak
memory, set against the timeout, the free memory and ``--memory-limit``, and what the run will
do with a cell that cannot fit or finish.

**Time** (seconds of one cell), from the first source that has it:

- *history*: cells of the store with the same spec but the seed (problem, d, solver, steps
  aside, width, depth, device, dtype, threads) on the same machine (provenance ``host`` and
  ``cpu``) that recorded a time per step:
  ``setup + steps x time_per_step + rest`` (medians; ``rest`` = what the cell spent besides
  set-up and training: the process, the evaluations, the floors);
- *calibration*: the cell's problem and solver set up and stepped in this process at two small
  dimensions c1 = min(d_min, 1e3) and c2 = min(d_max, 1e4) of the plan (one warm-up step, the
  median of ``CALIBRATION_STEPS``), then ``setup(d) + steps x step(d)`` with both linear in d
  through the two points (extrapolated above c2; at d >= 65,536 the closed forms run compiled,
  which this does not see, so large d is overestimated: reports/cpu-1e3-1e7 measured sdze at
  23.6 s/step at 1e7 where the line from 1e3 and 1e4 gives 78 s). Evaluations and floors are
  not counted.

With ``time_budget_s`` training stops at the budget, so the estimate is capped there.

**Peak memory** (bytes; the CPU process's resident peak, or GPU memory), from *history* (the
largest recorded peak) or the *model*::

    baseline + P b + state + (n + s V) D b

with P the model's parameters (:func:`n_params`), b the bytes per number of the dtype, D the
input dimension (d, or d + 1 with time), n the solver's points, V its probes and s the probe
sets of its loss (2 for ``loss=unbiased``); no batch term for a streamed solver
(``stream=true``: column blocks, docs/streaming.md). ``state`` is what the solver says it holds
(:meth:`pinnbench.solver.Solver.state_bytes`: bp's gradient and Adam's moments, 3 P b; sdze's
held basis, D r b, and with momentum its update's block of E r x min(D, 2^22 / r) numbers, 0.69
GiB at the defaults; zo's dense momentum, P b); the harness knows no solver. ``baseline`` is the
interpreter with torch imported (on CPU; 0 on a GPU). At d = 1e7 the model without the
baseline gives bp 23.4 GiB and sdze 10.0 GiB (9.35 before the momentum's block was counted),
against the 24.2 GiB that bp asked for and the 10.4 GiB sdze peaked at in reports/cpu-1e3-1e7
(at the defaults of then).

**What the run does** with each cell (:func:`decide`):

- ``skip``: the estimated peak exceeds the free memory and no ``--memory-limit`` within the
  free memory would stop it cleanly: the cell is stored ``skipped`` with the reason (it could
  push the machine into swap or the kernel's OOM killer, taking other cells with it);
- ``oom``: the peak exceeds ``--memory-limit``: it runs under the cap and will likely be stored
  ``oom``;
- ``timeout``: the time exceeds ``--timeout``: it runs until the timeout and will likely be
  stored ``timeout`` (with the steps it reached and their time per step);
- ``run``: it should fit and finish.

The GPU's free memory is not read here (the planner stays off the GPU so that the cells have
all of it); a CUDA cell that does not fit is stored ``oom`` by the cell runner.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

#: calibration dimensions: c1 = min(d_min, CAL_LOW), c2 = min(d_max, CAL_HIGH)
CAL_LOW = 10**3
CAL_HIGH = 10**4
#: timed steps per calibration point (after one warm-up step)
CALIBRATION_STEPS = 2
#: the calibration process's time limit (all keys and dimensions together)
CALIBRATION_TIMEOUT_S = 60.0
BYTES_PER_NUMBER = {"float32": 4, "float64": 8}
#: the fields (besides seed and steps) a stored cell must share with a planned one to count as
#: its history
HISTORY_KEYS = ("problem", "dim", "solver", "width", "depth", "device", "dtype")

ACTIONS = ("run", "timeout", "oom", "skip")


# -- memory ---------------------------------------------------------------------------------------
def n_params(input_dim: int, width: int, depth: int) -> int:
    """Parameters of the MLP of :func:`pinnbench.maths.model.make_model`: ``depth`` hidden tanh
    layers of ``width`` units and one output: (D h + h) + (depth - 1)(h^2 + h) + (h + 1)."""
    h = width
    return input_dim * h + h + (depth - 1) * (h * h + h) + h + 1


def input_dim(spec: dict[str, Any]) -> int:
    from pinnbench.maths.problem_registry import problem_class

    return spec["dim"] + int(bool(problem_class(spec["problem"]).time_dependent))


def memory_parts(spec: dict[str, Any], baseline_bytes: int) -> dict[str, int]:
    """The model's terms of the cell's peak, in bytes: baseline, params, state, batch."""
    from pinnbench.solver import solver_from_spec

    solver = solver_from_spec(spec["solver"])
    b = BYTES_PER_NUMBER.get(spec["dtype"], 4)
    dim = input_dim(spec)
    p = n_params(dim, spec["width"], spec["depth"])
    sp = solver.params
    sets = 2 if sp.get("loss") == "unbiased" else 1
    rows = sp.get("points", 0) + sets * sp.get("probes", 0)
    batch = 0 if sp.get("stream", False) else rows * dim * b
    on_gpu = str(spec["device"]).startswith("cuda")
    return {"baseline": 0 if on_gpu else baseline_bytes, "params": p * b,
            "state": solver.state_bytes(p, dim, b), "batch": batch}


# -- time -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Line:
    """y = a + b d through two calibration points (one point: the constant)."""

    a: float
    b: float

    @classmethod
    def through(cls, points: list[tuple[int, float]]) -> "Line":
        (d1, y1), (d2, y2) = points[0], points[-1]
        if d2 == d1:
            return cls(y1, 0.0)
        slope = max(0.0, (y2 - y1) / (d2 - d1))  # time never falls with d: noise, not a trend
        return cls(max(0.0, y2 - slope * d2), slope)

    def __call__(self, d: float) -> float:
        return self.a + self.b * d


@dataclass(frozen=True)
class Calibration:
    """Set-up and step time of one (problem, solver, width, depth, device, dtype, threads),
    measured at ``dims``; ``skipped`` when the solver skips the problem, ``failed`` with why."""

    dims: tuple[int, ...] = ()
    setup: Line | None = None
    step: Line | None = None
    skipped: str = ""
    failed: str = ""


def calibration_key(spec: dict[str, Any]) -> tuple:
    return (spec["problem"], spec["solver"], spec["width"], spec["depth"], spec["device"],
            spec["dtype"], spec.get("threads"), tuple(spec.get("imports") or ()))


def calibration_dims(dims: Iterable[int]) -> tuple[int, ...]:
    """(c1, c2) = (min(d_min, CAL_LOW), min(d_max, CAL_HIGH)); one value when they agree."""
    dims = list(dims)
    c1, c2 = min(min(dims), CAL_LOW), min(max(dims), CAL_HIGH)
    return (c1,) if c1 >= c2 else (c1, c2)


def measure_steps(spec: dict[str, Any], dim: int, steps: int = CALIBRATION_STEPS
                  ) -> tuple[float, float] | str:
    """(set-up s, median step s) of the cell's solver on its problem at ``dim``, in this process
    (seed 0, its own generators), or the solver's skip reason."""
    import torch

    from pinnbench.maths.model import make_model
    from pinnbench.maths.problem_registry import make_problem
    from pinnbench.solver import solver_from_spec
    from pinnbench.timing import clock

    threads = torch.get_num_threads()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    try:
        device = torch.device(spec["device"])
        t0 = clock(device)
        problem = make_problem(spec["problem"], dim=dim, seed=0, dtype=spec["dtype"],
                               device=device)
        solver = solver_from_spec(spec["solver"])
        skip, why = solver.skip(problem)
        if skip:
            return str(why)
        gen = torch.Generator(device=device).manual_seed(0)
        model = make_model(problem, width=spec["width"], depth=spec["depth"], generator=gen)
        solver.setup(problem, model, gen)
        setup_s = clock(device) - t0
        solver.step()  # warm-up
        times = []
        for _ in range(steps):
            t0 = clock(device)
            solver.step()
            times.append(clock(device) - t0)
        return setup_s, statistics.median(times)
    finally:
        torch.set_num_threads(threads)


def calibrate(cells: list[dict[str, Any]], measure: Callable | None = None,
              timeout_s: float = CALIBRATION_TIMEOUT_S) -> dict[tuple, Calibration]:
    """One :class:`Calibration` per calibration key of ``cells`` (at the key's calibration
    dimensions). The measurements run in one isolated process (:mod:`pinnbench.cells.isolation`: a
    solver that crashes, hangs or kills its process cannot take the planner with it), at most
    ``timeout_s`` in all; ``measure(spec, dim)`` instead runs them here (tests). A failure is
    recorded in the key's Calibration, never raised."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault(calibration_key(c), []).append(c)
    keys = list(groups)
    jobs = [(i, dim) for i, key in enumerate(keys)
            for dim in calibration_dims(c["dim"] for c in groups[key])]
    jobs.sort(key=lambda j: j[1])  # the small ones first: they finish within the time limit
    specs = [groups[k][0] for k in keys]
    if measure is not None:
        results = {}
        for i, dim in jobs:
            try:
                results[f"{i}:{dim}"] = measure(specs[i], dim)
            except Exception as exc:  # noqa: BLE001 - a failed estimate is a plan line
                results[f"{i}:{dim}"] = f"failed: {type(exc).__name__}: {exc}"[:200]
        why_missing = ""
    else:
        from pinnbench.cells.isolation import run_isolated

        imports = sorted({m for c in cells for m in c.get("imports") or ()})
        ended = run_isolated("pinnbench.commands.plan:_measure_in_child", {"specs": specs, "jobs": jobs},
                             timeout_s=timeout_s, imports=imports)
        results = (ended.result or ended.progress or {}).get("results", {})
        why_missing = (f"the calibration process {ended.message}"[:200]
                       if ended.how != "returned" else "")
    out = {}
    for i, key in enumerate(keys):
        dims = calibration_dims(c["dim"] for c in groups[key])
        got = [results.get(f"{i}:{d}") for d in dims]
        failed = [g for g in got if isinstance(g, str) and g.startswith("failed: ")]
        skipped = [g for g in got if isinstance(g, str) and not g.startswith("failed: ")]
        if failed or any(g is None for g in got):
            out[key] = Calibration(dims, failed=(failed[0][8:] if failed else why_missing
                                                 or "not measured"))
        elif skipped:
            out[key] = Calibration(dims, skipped=skipped[0])
        else:
            out[key] = Calibration(dims, setup=Line.through([(d, g[0]) for d, g in zip(dims, got)]),
                                   step=Line.through([(d, g[1]) for d, g in zip(dims, got)]))
    return out


def _measure_in_child(payload: dict[str, Any], report=None) -> dict[str, Any]:
    """The calibration process: each (spec index, d) measured in turn, reported as it goes."""
    results: dict[str, Any] = {}
    for i, dim in payload["jobs"]:
        try:
            got = measure_steps(payload["specs"][i], dim)
            results[f"{i}:{dim}"] = list(got) if isinstance(got, tuple) else got
        except Exception as exc:  # noqa: BLE001 - recorded for this key, the others go on
            results[f"{i}:{dim}"] = f"failed: {type(exc).__name__}: {exc}"[:200]
        if report is not None:
            report({"results": results})
    return {"status": "ok", "results": results}


@dataclass(frozen=True)
class History:
    """Medians of stored cells of the same spec (but seed and steps) on this machine."""

    cells: int
    setup_s: float
    step_s: float
    rest_s: float
    peak_bytes: int | None


def machine_of(provenance: dict[str, Any] | None) -> tuple:
    p = provenance or {}
    return (p.get("host"), p.get("cpu"))


def history(rows: list[dict[str, Any]], machine: tuple) -> dict[tuple, History]:
    """Stored rows that recorded a time per step, grouped by :data:`HISTORY_KEYS` (+ threads),
    on ``machine`` (:func:`machine_of`)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("time_per_step_s") is None or r.get("setup_time_s") is None \
                or not r.get("steps_done") or machine_of(r.get("provenance")) != machine:
            continue
        groups.setdefault(history_key(r, (r.get("provenance") or {}).get("torch_threads")),
                          []).append(r)
    out = {}
    for key, rs in groups.items():
        rest = [max(0.0, (r.get("total_time_s") or 0.0) - r["setup_time_s"]
                    - r["steps_done"] * r["time_per_step_s"]) for r in rs]
        peaks = [r.get("peak_gpu_allocated_bytes") or r.get("peak_cpu_bytes") for r in rs]
        peaks = [p for p in peaks if p]
        out[key] = History(len(rs), statistics.median(r["setup_time_s"] for r in rs),
                           statistics.median(r["time_per_step_s"] for r in rs),
                           statistics.median(rest), max(peaks) if peaks else None)
    return out


def history_key(spec: dict[str, Any], threads: int | None) -> tuple:
    return tuple(spec.get(k) for k in HISTORY_KEYS) + (threads,)


# -- the plan -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    time_s: float | None
    time_source: str
    peak_bytes: int
    memory_source: str


@dataclass(frozen=True)
class PlannedCell:
    spec: dict[str, Any]
    estimate: Estimate
    action: str  # one of ACTIONS
    reason: str = ""


@dataclass
class Plan:
    cells: list[PlannedCell]
    free_bytes: int | None
    memory_limit_bytes: int | None
    timeout_s: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[PlannedCell]:
        return [c for c in self.cells if c.action == "skip"]

    def expected_s(self) -> float | None:
        """Cell time of the cells that run (each capped at its timeout); None if any unknown."""
        total = 0.0
        for c in self.cells:
            if c.action == "skip":
                continue
            if c.estimate.time_s is None:
                return None
            total += min(c.estimate.time_s, c.spec.get("timeout_s") or float("inf"))
        return total


def cell_time(spec: dict[str, Any], setup_s: float, step_s: float, rest_s: float = 0.0) -> float:
    """set-up + steps x step (+ the rest), training capped at the time budget."""
    steps = spec.get("steps")
    train = steps * step_s if steps is not None else float("inf")
    if spec.get("time_budget_s"):
        train = min(train, spec["time_budget_s"])
    return setup_s + train + rest_s


def estimate(spec: dict[str, Any], calibration: Calibration | None, past: History | None,
             baseline_bytes: int) -> Estimate:
    """The cell's time and peak, from its history if any, else its calibration and the memory
    model (the module docstring states both)."""
    parts = memory_parts(spec, baseline_bytes)
    modelled = sum(parts.values())
    if past is not None:
        t = cell_time(spec, past.setup_s, past.step_s, past.rest_s)
        source = f"history ({past.cells} cell{'s' if past.cells > 1 else ''} on this machine)"
        if past.peak_bytes:
            return Estimate(t, source, past.peak_bytes, "history")
        return Estimate(t, source, modelled, "model")
    if calibration is None or calibration.failed:
        why = calibration.failed if calibration else "not calibrated"
        return Estimate(None, f"unknown ({why})", modelled, "model")
    if calibration.skipped:
        return Estimate(0.0, "the solver skips this problem", 0, "-")
    d = spec["dim"]
    t = cell_time(spec, calibration.setup(d), calibration.step(d))
    where = " and ".join(f"{c:g}" for c in calibration.dims)
    how = "" if d in calibration.dims else (", linear in d" if d < max(calibration.dims)
                                            else ", extrapolated linearly in d")
    return Estimate(t, f"calibration at d = {where}{how}", modelled, "model")


def decide(spec: dict[str, Any], est: Estimate, free_bytes: int | None,
           baseline_bytes: int) -> tuple[str, str]:
    """(action, reason) for one cell: see the module docstring."""
    if spec.get("untuned"):  # run --tuned: its study chose nothing, so nothing is run
        return "skip", spec["untuned"]
    limit = spec.get("memory_limit_bytes")
    peak = est.peak_bytes
    on_gpu = str(spec["device"]).startswith("cuda")
    if not on_gpu and free_bytes and peak > free_bytes \
            and (limit is None or limit + baseline_bytes > free_bytes):
        cap = ("no --memory-limit" if limit is None else
               f"--memory-limit {fmt_bytes(limit)} is above it")
        return "skip", (f"estimated peak {fmt_bytes(peak)} > {fmt_bytes(free_bytes)} free "
                        f"memory ({cap}); give a --memory-limit below the free memory to run "
                        "it under a cap and record oom")
    if not on_gpu and limit is not None and peak - baseline_bytes > limit:
        return "oom", (f"estimated {fmt_bytes(peak - baseline_bytes)} above the baseline > "
                       f"--memory-limit {fmt_bytes(limit)}: runs under the cap, likely `oom`")
    timeout = spec.get("timeout_s")
    if timeout and est.time_s is not None and est.time_s > timeout:
        return "timeout", (f"estimated {fmt_seconds(est.time_s)} > --timeout "
                           f"{fmt_seconds(timeout)}: runs until the timeout, likely `timeout` "
                           "(with the steps it reached)")
    return "run", ""


def make_plan(cells: list[dict[str, Any]], *, free_bytes: int | None, baseline_bytes: int,
              stored_rows: list[dict[str, Any]] = (), machine: tuple = (None, None),
              calibrations: dict[tuple, Calibration] | None = None,
              measure: Callable | None = None) -> Plan:
    """The plan of ``cells``: history from ``stored_rows`` on ``machine``, calibration (by
    ``measure``, default :func:`measure_steps`) for the cells without history."""
    past = history(list(stored_rows), machine)

    def past_of(c):
        return past.get(history_key(c, c.get("threads")))

    if calibrations is None:
        need = [c for c in cells if past_of(c) is None and not c.get("untuned")]
        limits = [c["timeout_s"] for c in need if c.get("timeout_s")]
        timeout = min([CALIBRATION_TIMEOUT_S, *limits])  # a step slower than that: not here
        options = {"measure": measure} if measure is not None else {"timeout_s": timeout}
        calibrations = calibrate(need, **options) if need else {}
    planned = []
    for c in cells:
        est = estimate(c, calibrations.get(calibration_key(c)), past_of(c), baseline_bytes)
        action, reason = decide(c, est, free_bytes, baseline_bytes)
        planned.append(PlannedCell(c, est, action, reason))
    first = cells[0] if cells else {}
    return Plan(planned, free_bytes, first.get("memory_limit_bytes"), first.get("timeout_s"))


def skipped_row(spec: dict[str, Any], reason: str) -> dict[str, Any]:
    """The stored row of a cell the plan skips: status ``skipped``, the reason as message."""
    from pinnbench.cells.cellspec import provenance_marks
    from pinnbench.cells.rows import base_row, now_iso

    row = base_row(spec)
    row["status"] = "skipped"
    row["message"] = f"plan: {reason}"
    row["provenance"].update(provenance_marks(spec))  # as a cell that ran records them
    row["started_at"] = row["finished_at"] = now_iso()
    row["steps_done"] = 0
    return row


# -- how a plan reads -----------------------------------------------------------------------------
def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 60:
        return f"{s:.3g} s"
    if s < 3600:
        return f"{s / 60:.3g} min"
    return f"{s / 3600:.3g} h"


def render(plan: Plan, jobs: int = 1) -> list[str]:
    """The plan as lines of text: one per (problem, d, solver) with the seeds counted, then the
    totals and what happens to the cells that cannot fit or finish."""
    groups: dict[tuple, list[PlannedCell]] = {}
    for c in plan.cells:
        groups.setdefault((c.spec["problem"], c.spec["dim"], c.spec["solver_name"],
                           _short(c.spec)), []).append(c)
    head = ("problem", "d", "solver", "seeds", "time/cell", "peak", "then", "time from")
    rows = []
    for (problem, dim, _, label), cs in groups.items():
        e, action = cs[0].estimate, cs[0].action
        rows.append((problem, fmt_dim(dim), label, str(len(cs)),
                     fmt_seconds(e.time_s), f"{fmt_bytes(e.peak_bytes)} ({e.memory_source})",
                     {"run": "run", "timeout": "TIMEOUT?", "oom": "OOM?", "skip": "SKIP"}[action],
                     e.time_source))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"plan: {len(plan.cells)} cells"]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
              for r in [head, *rows]]
    free = (f"{fmt_bytes(plan.free_bytes)} free memory" if plan.free_bytes
            else "free memory unknown")
    limit = (f", --memory-limit {fmt_bytes(plan.memory_limit_bytes)} per cell"
             if plan.memory_limit_bytes else ", no --memory-limit")
    timeout = f", --timeout {fmt_seconds(plan.timeout_s)}" if plan.timeout_s else ""
    lines.append(f"against: {free}{limit}{timeout}")
    for c in plan.cells:
        if c.action != "run":
            verb = "skipped (stored as `skipped`)" if c.action == "skip" else "runs"
            lines.append(f"  {c.spec['problem']} d={fmt_dim(c.spec['dim'])} {_short(c.spec)} "
                         f"seed={c.spec['seed']}: {verb}: {c.reason}")
    total = plan.expected_s()
    if total is None:
        lines.append("expected: unknown (some estimates failed)")
    else:
        wall = f" ({fmt_seconds(total / jobs)} wall with {jobs} jobs)" if jobs > 1 else ""
        lines.append(f"expected: {fmt_seconds(total)} of cell time{wall}; estimates are rough "
                     "(pinnbench/commands/plan.py says how they are made)")
    return lines


def fmt_dim(d: int) -> str:
    from pinnbench.report.console import fmt_dim as fmt

    return fmt(d)


def _short(spec: dict[str, Any]) -> str:
    from pinnbench.report.console import _short_solver

    return _short_solver(spec)


def as_json(plan: Plan) -> dict[str, Any]:
    """The plan as plain data (``--json``'s plan event)."""
    from pinnbench.cells.cell import cell_id

    return {"cells": [{"cell_id": cell_id(c.spec), "problem": c.spec["problem"],
                       "dim": c.spec["dim"], "solver": c.spec["solver"], "seed": c.spec["seed"],
                       "time_s": c.estimate.time_s, "time_source": c.estimate.time_source,
                       "peak_bytes": c.estimate.peak_bytes,
                       "memory_source": c.estimate.memory_source, "action": c.action,
                       "reason": c.reason} for c in plan.cells],
            "free_bytes": plan.free_bytes, "expected_s": plan.expected_s()}
