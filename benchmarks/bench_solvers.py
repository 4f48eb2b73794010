"""asv benchmarks of the solvers: time per step (and its split into drawing the step's data and
the solver's own work), peak memory of a cell, error after training.

Each benchmark's ``version`` is pinned, so edits to the helpers below do not silently reset its
history; bump it when what is measured changes. Which cells are measured: benchmarks/profiles.py.
The problem is the first parameter of every benchmark (one value), so that asv's output names
what it measures; errors are tracked at 3 significant digits (:func:`sig3`), which is what asv
prints (it writes other units' values as they are) and all a regression of an error needs.
"""

import torch

import pinnbench
from pinnbench.cells.cell import run_cell

from .profiles import DEVICE, DIMS, ERROR_DIMS, PROBLEM, SOLVERS, THREADS, TRAIN_STEPS, WIDTH

POINTS = 100
PEAK_STEPS = 5


def sig3(value: float) -> float:
    """``value`` rounded to 3 significant digits (0.96612 -> 0.966)."""
    return float(f"{value:.3g}")


def _build(problem_id, solver, dim, seed=0):
    problem = pinnbench.make_problem(problem_id, dim=dim, seed=seed, device=DEVICE)
    gen = torch.Generator(device=problem.device).manual_seed(seed)
    model = pinnbench.make_model(problem, width=WIDTH, depth=3, generator=gen)
    return problem, model, pinnbench.make_solver(f"{solver}[points={POINTS}]", problem, model,
                                                 generator=gen)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _release():
    """Give the memory of the last cell back before the next is built (at d = 10^7 a solver holds
    5-30 GB of GPU memory: two alive at once can run out)."""
    import gc

    gc.collect()
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


class TimeStep:
    """One training step of each solver (set-up and one warm-up step outside the timing)."""

    params = ([PROBLEM], SOLVERS, DIMS)
    param_names = ["problem", "solver", "dim"]
    version = "time-step-v2"
    timeout = 600

    def setup(self, problem, solver, dim):
        _, _, self.solver = _build(problem, solver, dim)
        self.solver.step()
        _sync()

    def time_step(self, problem, solver, dim):
        self.solver.step()
        _sync()

    def teardown(self, problem, solver, dim):
        del self.solver
        _release()


class PeakMemory:
    """Peak memory of a short cell, measured in a fresh process by the CLI's own cell runner
    (never in asv's long-lived process): GPU max allocated on CUDA, else CPU peak RSS above the
    post-set-up baseline."""

    params = ([PROBLEM], SOLVERS, DIMS)
    param_names = ["problem", "solver", "dim"]
    version = "peak-memory-v2"
    unit = "bytes"
    timeout = 900

    def track_peak_memory(self, problem, solver, dim):
        row = run_cell({"problem": problem, "dim": dim, "solver": f"{solver}[points={POINTS}]",
                        "steps": PEAK_STEPS, "width": WIDTH, "device": DEVICE, "floors": False,
                        "timeout_s": 600, "threads": THREADS})
        if row["status"] != "ok":
            raise RuntimeError(f"cell {solver} d={dim}: {row['status']}: {row['message']}")
        if row["peak_gpu_allocated_bytes"] is not None:
            return row["peak_gpu_allocated_bytes"]
        return row["peak_cpu_bytes"] - row["baseline_cpu_bytes"]


SPLIT_STEPS = 12


def split_times() -> dict:
    """(solver, dim) -> the cell's (data_time_per_step_s, solver_time_per_step_s): one short cell
    each, in a fresh process (the CLI's cell runner; median over the steps after its warm-up)."""
    out = {}
    for solver in SOLVERS:
        for dim in DIMS:
            row = run_cell({"problem": PROBLEM, "dim": dim, "solver": f"{solver}[points={POINTS}]",
                            "steps": SPLIT_STEPS, "width": WIDTH, "device": DEVICE,
                            "floors": False, "timeout_s": 600, "threads": THREADS})
            if row["status"] != "ok":
                raise RuntimeError(f"cell {solver} d={dim}: {row['status']}: {row['message']}")
            out[(solver, dim)] = (row["data_time_per_step_s"], row["solver_time_per_step_s"])
    return out


class StepTimeSplit:
    """Where a step's time goes: drawing its points, source values and probes (pinnbench's
    work, Solver.draw) against the solver's own work (issue 13): a regression in the samplers or
    the closed-form sources shows in the first, one in a solver in the second."""

    params = ([PROBLEM], SOLVERS, DIMS)
    param_names = ["problem", "solver", "dim"]
    version = "step-time-split-v2"
    unit = "seconds"
    timeout = 1800

    def setup_cache(self):
        return split_times()

    def track_data_time_per_step(self, times, problem, solver, dim):
        return times[(solver, dim)][0]

    def track_solver_time_per_step(self, times, problem, solver, dim):
        return times[(solver, dim)][1]


class RelativeError:
    """Relative L2 error on the problem's test set after TRAIN_STEPS steps, trained once."""

    params = ([PROBLEM], SOLVERS, ERROR_DIMS)
    param_names = ["problem", "solver", "dim"]
    version = "rel-l2-v2"
    unit = "relative L2"
    timeout = 1800

    def setup_cache(self):
        errors = {}
        for solver in SOLVERS:
            for dim in ERROR_DIMS:
                problem, model, s = _build(PROBLEM, solver, dim)
                for _ in range(TRAIN_STEPS):
                    s.step()
                errors[(solver, dim)] = pinnbench.evaluate(model, problem)["rel_l2"]
                del problem, model, s
                _release()
        return errors

    def track_rel_l2(self, errors, problem, solver, dim):
        return sig3(errors[(solver, dim)])
