"""The measured cell, in the process that runs it: (normalised spec) -> result row.

Measurement (docs/design.md, "Cell"):

1. the CUDA context is created first and timed apart (provenance ``cuda_init_time_s``); set-up
   (problem, model, solver.setup, and at large d compiling the closed forms for the solver's
   batch, :mod:`pinnbench.maths.fused`) is timed on its own (``setup_time_s``); ``solver.skip`` is
   asked before the model is built (status ``skipped`` with its reason);
2. the error at step 0 is evaluated, then the peaks are reset (CPU VmHWM; CUDA peak stats after
   the evaluation's cached blocks are released) and the baselines recorded (RSS, GPU allocated);
3. each step is timed between device synchronisations; ``time_per_step_s`` is the median of the
   steps after the warm-up (all steps when there are no more than ``warmup``), with the IQR;
   the part of each step spent drawing its data (``Solver.draw``: points, source, probes;
   synchronised on CUDA) is timed apart: ``data_time_per_step_s`` and
   ``solver_time_per_step_s`` (the step minus its data) are medians over the same steps;
4. the error (:func:`pinnbench.judge.metrics.evaluate`) is taken at steps 1, 2, 4, 8, ... and the last;
   evaluation time is excluded from the step times and ``time_s`` of the curve, and evaluation
   memory from the peaks (the peak is read before and reset after every evaluation);
5. a non-finite loss stops training with status ``diverged``, and so does, at the end, an error
   or loss that blew up (:mod:`pinnbench.judge.verdict`); ``time_budget_s`` stops training once the
   summed step times reach it. A loss the step returns as a float is checked at once; one it
   returns as a 0-d tensor is read only at the evaluations and at the end (no host sync per
   step), its finiteness tracked on the device in between (:mod:`pinnbench.cells.loss_watch`), so
   training stops at the first evaluation after the non-finite step, and the message names
   that step;
6. floors and provenance are added after training, outside every measurement, and so are the
   optional estimator diagnostics (``diagnostics``, :mod:`pinnbench.cells.diagnostics`) of an ok cell
   and the optional error on the validation set (``validation``: ``final_val_rel_l2``, what
   ``pinnbench tune`` selects on; docs/tuning.md); last, an ok CPU cell (not sharded) takes
   one more step under the profiler's memory events, ``step_tensor_peak_bytes``: the most
   bytes that step's tensors hold at once, and ``tensor_peak_above_baseline_bytes``: that
   plus the live tensors' growth over training (the state the solver built), exact where the
   resident-set peak carries the heap's slack (docs/protocol.md, "Peak memory");
7. every curve point carries, beside ``time_s`` (the summed wall time of the steps so far),
   ``cpu_time_s``: the CPU time of the cell process (``time.process_time``, every thread) spent
   in those steps, which other work on a shared machine does not inflate (docs/domain.md §9).

A cell failure never raises: an allocation failure becomes ``oom``, any other exception
``error`` (:mod:`pinnbench.cells.isolation`).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import torch

from pinnbench.maths import fused
from pinnbench import memory
from pinnbench.judge import verdict
from pinnbench.cells.cellspec import provenance_marks
from pinnbench.cells.isolation import describe, is_oom
from pinnbench.cells.loss_watch import LossWatch
from pinnbench.cells.rows import base_row, now_iso
from pinnbench.seeds import cell_generator
from pinnbench.timing import clock

Report = Callable[[dict], None]


def eval_steps(steps: int | None) -> set[int]:
    """1, 2, 4, 8, ... up to ``steps``, and ``steps`` itself (unbounded powers when None)."""
    out = {2**k for k in range(64) if steps is None or 2**k <= steps}
    if steps is not None:
        out.add(steps)
    return out


def median_iqr(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) < 2:
        return values[0], 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q[2] - q[0]


class CellMeasurement:
    """The measured quantities of one cell while it runs, and the row they fill."""

    def __init__(self, spec: dict[str, Any], report: Report | None = None) -> None:
        self.spec = spec
        self.report = report
        self.device = torch.device(spec["device"])
        self.row = base_row(spec)
        self.row["started_at"] = now_iso()
        self.row["status"] = "ok"
        self.step_times: list[float] = []
        self.data_times: list[float] = []  # of each step, when the solver draws via Solver.draw
        self.peak_cpu = 0
        self.peak_gpu: tuple[int | None, int | None] = (None, None)
        self.tensors_at: dict[str, int] = {}
        self.t_cell = time.perf_counter()

    # -- device ---------------------------------------------------------------------------------
    def sync(self) -> None:
        clock(self.device)

    def init_device(self) -> float | None:
        """Create the CUDA context (hundreds of ms to seconds), so it is not part of set-up."""
        if self.device.type != "cuda":
            return None
        t = time.perf_counter()
        torch.cuda.init()
        torch.empty(1, device=self.device)
        self.sync()
        return time.perf_counter() - t

    # -- memory ---------------------------------------------------------------------------------
    def read_peaks(self) -> None:
        self.peak_cpu = max(self.peak_cpu, memory.peak_cpu_bytes())
        alloc, reserved = memory.peak_gpu_bytes(self.device)
        if alloc is not None:
            old_a, old_r = self.peak_gpu
            self.peak_gpu = (max(alloc, old_a or 0), max(reserved, old_r or 0))

    def reset_peaks(self) -> None:
        # blocks cached by an evaluation are released first, so the reserved peak is the steps'
        memory.release_gpu_cache(self.device)
        memory.reset_peak_cpu()
        memory.reset_peak_gpu(self.device)

    def start_training(self, scan_tensors: bool = False) -> None:
        """Peaks reset and baselines recorded: what follows is the training's alone. With
        ``scan_tensors`` (a CPU cell's exact figures), the live tensors' bytes at the baseline
        too (and, once the peaks are read, at the end of training: the state a solver builds
        is their difference, :func:`_add_step_tensor_peak`), scanned before the reset so that
        the scan's own list is not in the peak."""
        self.tensors_at = {}
        if scan_tensors:
            self.scan_tensors("baseline")
        self.reset_peaks()
        self.row["baseline_cpu_bytes"] = memory.current_cpu_bytes()
        self.row["baseline_gpu_allocated_bytes"] = memory.current_gpu_bytes(self.device)
        self.peak_cpu, self.peak_gpu = memory.peak_cpu_bytes(), (None, None)

    def scan_tensors(self, when: str) -> None:
        """The live CPU tensors' bytes now, as ``tensors_at[when]``; a scan that fails leaves it
        out, and the cell's exact figure with it, never the cell."""
        try:
            self.tensors_at[when] = memory.cpu_tensor_bytes()
        except Exception:  # noqa: BLE001 - a measurement aside, not the cell's result
            pass

    # -- the curve ------------------------------------------------------------------------------
    def record(self, step: int, loss: float | None, train_time: float, model, problem,
               cpu_time: float = 0.0) -> None:
        """Evaluate the error at ``step``, outside the step times and the peaks; ``train_time``
        and ``cpu_time`` are the wall and process CPU time of the steps so far."""
        from pinnbench.judge.metrics import evaluate

        self.sync()
        self.read_peaks()
        errors = evaluate(model, problem)
        self.row["curve"].append({"step": step, "time_s": train_time, "cpu_time_s": cpu_time,
                                  "loss": loss, **{k: float(v) for k, v in errors.items()}})
        self.reset_peaks()
        if self.report is not None:
            self.fill()
            self.report(self.row)

    def fill(self) -> None:
        """Summaries of what was measured so far (step times, curve, peaks) into the row."""
        row = self.row
        warmup = self.spec["warmup"]
        times = self.step_times
        timed = times[warmup:] if len(times) > warmup else times
        row["time_per_step_s"], row["time_per_step_iqr_s"] = median_iqr(timed)
        if self.data_times and len(self.data_times) == len(times):
            data = self.data_times[warmup:] if len(times) > warmup else self.data_times
            row["data_time_per_step_s"] = median_iqr(data)[0]
            row["solver_time_per_step_s"] = median_iqr([t - d for t, d in zip(timed, data)])[0]
        row["steps_done"] = len(times)
        curve = row["curve"]
        if curve:
            last = curve[-1]
            row["final_rel_l2"], row["final_rel_l1"] = last["rel_l2"], last["rel_l1"]
            row["final_max_abs"] = last["max_abs"]
            finite = [c for c in curve if c["rel_l2"] is not None and math.isfinite(c["rel_l2"])]
            best = min(finite, key=lambda c: c["rel_l2"]) if finite else None
            if best is not None:
                row["best_rel_l2"], row["best_step"] = best["rel_l2"], best["step"]
            for end in ("lo", "hi"):  # the 95 % intervals of those evaluations
                row[f"final_rel_l2_{end}"] = last.get(f"rel_l2_{end}")
                row[f"final_rel_l1_{end}"] = last.get(f"rel_l1_{end}")
                row[f"best_rel_l2_{end}"] = best.get(f"rel_l2_{end}") if best else None
            for c in curve:
                c["final"] = c is last
                c["best"] = c is best
        row["peak_cpu_bytes"] = self.peak_cpu or None
        row["peak_gpu_allocated_bytes"], row["peak_gpu_reserved_bytes"] = self.peak_gpu
        row["total_time_s"] = time.perf_counter() - self.t_cell


def execute(spec: dict[str, Any], report: Report | None = None, shard=None) -> dict[str, Any]:
    """Run one normalised cell in this process and return its row (never raises for a cell
    failure: errors become a status). ``report(row)`` receives the partial row after every
    evaluation, so that a cell killed on timeout still has its curve. ``shard``: this process
    is one rank of a sharded cell (:class:`pinnbench.cells.sharded_measurement.Rank`), which builds
    the rank's problem view and model and adds what the rank measured; no floors then."""
    from pinnbench.maths.model import make_model
    from pinnbench.maths.problem_registry import make_problem
    from pinnbench.solver import solver_from_spec

    m = CellMeasurement(spec, report)
    row, device = m.row, m.device
    exact = device.type == "cpu" and shard is None  # the CPU's exact tensor figures (step 6)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    problem = model = solver = None
    cuda_init_s = None
    try:
        cuda_init_s = m.init_device()
        if spec.get("tf32") and device.type == "cuda":  # TF32 matmuls: part of the cell's identity
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        t0 = time.perf_counter()
        problem = make_problem(spec["problem"], dim=spec["dim"], seed=spec["seed"],
                               dtype=spec["dtype"], device=device)
        solver = solver_from_spec(spec["solver"], steps=spec["steps"])
        skip, reason = solver.skip(problem) if shard is None else shard.skip(problem, solver)
        if skip:
            row["status"], row["message"] = "skipped", str(reason)
        else:
            if shard is None:
                model = make_model(problem, width=spec["width"], depth=spec["depth"],
                                   generator=cell_generator(spec["seed"], "model", device))
            else:
                problem, model = shard.build(problem, spec)
            row["n_params"], row["param_bytes"] = model.n_params, model.param_bytes
            solver.setup(problem, model, cell_generator(spec["seed"], "solver", device))
            # compiles the closed forms at large d for the solver's batch: part of set-up
            problem.warm_up(int(solver.params.get("points", 2)))
            m.sync()
            row["setup_time_s"] = time.perf_counter() - t0
            m.record(0, None, 0.0, model, problem)
            m.start_training(scan_tensors=exact)
            if shard is not None:
                shard.time_steps(solver)
            _train(m, solver, model, problem)
    except BaseException as exc:  # noqa: BLE001 - a cell failure is a result, not a crash
        if isinstance(exc, KeyboardInterrupt):
            raise
        row["status"] = "oom" if is_oom(exc) else "error"
        row["message"] = describe(exc) if row["status"] == "error" else \
            f"{type(exc).__name__}: {str(exc).strip()[:500]}"
    try:
        m.read_peaks()
    except Exception:  # noqa: BLE001 - e.g. a sticky CUDA error: keep the original message
        pass
    m.fill()
    if row["status"] == "ok" and "baseline" in m.tensors_at:
        m.scan_tensors("end")  # after the peaks are read, before validation's caches
    validation_error = None
    if spec.get("validation") and model is not None and row["status"] not in ("error", "oom"):
        validation_error = _add_validation(row, model, problem)  # after the peaks, step times
    if spec.get("diagnostics") and row["status"] == "ok":  # after the peaks and step times
        from pinnbench.cells.diagnostics import collect_diagnostics

        row["diagnostics"] = collect_diagnostics(solver, problem, model, spec)  # never raises
    peak_error = None
    if row["status"] == "ok" and exact:
        peak_error = _add_step_tensor_peak(row, solver, m)  # last: its step moves the model on
    del solver, model
    try:
        memory.release_gpu_cache(device)
    except Exception:  # noqa: BLE001 - after a sticky CUDA error every CUDA call raises
        pass
    row["provenance"] = _provenance(spec, device, cuda_init_s)
    if validation_error:
        row["provenance"]["validation_error"] = validation_error
    if peak_error:
        row["provenance"]["step_tensor_peak_error"] = peak_error
    if spec.get("floors", True) and problem is not None and shard is None:
        _add_floors(row, problem)
    if shard is not None:
        shard.fill(row, m)
    row["total_time_s"] = time.perf_counter() - m.t_cell
    row["finished_at"] = now_iso()
    return verdict.apply(row)  # an `ok` cell whose error or loss blew up is `diverged`


def _train(m: CellMeasurement, solver, model, problem) -> None:
    """The timed loop: steps until ``steps`` or the time budget, evaluations at eval_steps.

    The step's loss is read into Python only at the evaluations and at the end (a tensor loss:
    :mod:`pinnbench.cells.loss_watch`; a float loss is checked at once), so a step that returns a
    0-d tensor is never followed by a host read of it in between."""
    row = m.row
    steps, budget = m.spec["steps"], m.spec["time_budget_s"]
    when = eval_steps(steps)
    watch = LossWatch()
    train_time, cpu_time, k = 0.0, 0.0, 0
    while steps is None or k < steps:
        if budget is not None and train_time >= budget:
            break
        data_before = getattr(solver, "data_time_s", None) \
            if getattr(solver, "time_data", True) else None
        c = time.process_time()
        t = clock(m.device)
        loss = solver.step()
        dt = clock(m.device) - t
        cpu_time += time.process_time() - c
        k += 1
        m.step_times.append(dt)
        if data_before is not None and hasattr(solver, "settle_data_time"):
            solver.settle_data_time()  # the data's device time, read after the step's sync
        if data_before is not None:
            m.data_times.append(solver.data_time_s - data_before)
        train_time += dt
        watch.see(loss)
        at_evaluation = k in when
        if at_evaluation or not isinstance(loss, torch.Tensor):
            if _stopped_diverged(row, watch, k):
                break
        if at_evaluation:  # the partial row a killed cell leaves carries the loss read here
            row["final_loss"] = watch.last()
            m.record(k, row["final_loss"], train_time, model, problem, cpu_time)
    row["final_loss"] = watch.last()
    if row["status"] == "ok":
        _stopped_diverged(row, watch, k)  # the steps since the last evaluation
    if not row["curve"] or row["curve"][-1]["step"] != k:
        m.record(k, watch.last(), train_time, model, problem, cpu_time)
    m.fill()
    if row["status"] == "ok" and row["final_rel_l2"] is not None \
            and not math.isfinite(row["curve"][-1]["rel_l2"]):
        row["status"], row["message"] = "diverged", "the model's error is not finite"


def _stopped_diverged(row: dict[str, Any], watch: LossWatch, k: int) -> bool:
    """Mark the row ``diverged`` if a step's loss so far was not finite (a host read of the
    watch's device counter for tensor losses); returns whether it did."""
    bad = watch.first_nonfinite()
    if bad is None:
        return False
    row["final_loss"] = watch.last()
    row["status"] = "diverged"
    seen = "" if bad == k else f" (losses are read at the evaluations; seen at step {k})"
    row["message"] = f"loss became {watch.last() if bad == k else 'non-finite'} at step {bad}{seen}"
    return True


def _add_step_tensor_peak(row: dict[str, Any], solver, m: CellMeasurement) -> str | None:
    """``step_tensor_peak_bytes``: one more step under the profiler's memory events
    (:func:`pinnbench.memory.cpu_tensor_peak_bytes`), outside the step times and the peaks and
    after every use of the trained model (the step changes it); and
    ``tensor_peak_above_baseline_bytes``: that, plus the growth of the live tensors' bytes
    from the baseline to the end of training (:func:`pinnbench.memory.cpu_tensor_bytes`: the
    state the solver built). Returns why it failed (noted in the provenance, the columns left
    null), never a failed cell."""
    try:
        step = memory.cpu_tensor_peak_bytes(solver.step)
    except Exception as exc:  # noqa: BLE001 - the cell's own status stands
        return f"{type(exc).__name__}: {exc}"[:300]
    row["step_tensor_peak_bytes"] = step
    if {"baseline", "end"} <= set(m.tensors_at):
        state = max(0, m.tensors_at["end"] - m.tensors_at["baseline"])
        row["tensor_peak_above_baseline_bytes"] = state + step
    return None


def _add_validation(row: dict[str, Any], model, problem) -> str | None:
    """The final model's error on the validation set into the row; returns why it failed (a
    failure is noted in the provenance, never a failed cell). A non-finite error is stored as
    null, which the tuning objective reads as +inf."""
    from pinnbench.judge.metrics import evaluate

    try:
        errors = evaluate(model, problem, split="validation")
    except Exception as exc:  # noqa: BLE001 - the cell's own status stands
        return f"{type(exc).__name__}: {exc}"[:300]
    for key in ("rel_l2", "rel_l2_lo", "rel_l2_hi"):
        v = float(errors[key])
        row[f"final_val_{key}"] = v if math.isfinite(v) else None
    return None


def _provenance(spec: dict[str, Any], device: torch.device, cuda_init_s: float | None) -> dict:
    from pinnbench.cells.provenance import collect

    try:
        provenance = collect(device, command=spec.get("command"))
    except Exception as exc:  # noqa: BLE001 - never replace the cell's own status
        provenance = {"provenance_error": f"{type(exc).__name__}: {exc}"[:300]}
    if cuda_init_s is not None:
        provenance["cuda_init_time_s"] = cuda_init_s
    provenance["closed_forms"] = fused.status()
    provenance["cpu_peak_resettable"] = memory.cpu_peak_resettable()
    provenance["threads"] = torch.get_num_threads()
    provenance["tf32"] = device.type == "cuda" and bool(torch.backends.cuda.matmul.allow_tf32)
    if spec.get("memory_limit_bytes"):
        provenance["memory_limit_bytes"] = spec["memory_limit_bytes"]
    provenance.update(provenance_marks(spec))  # pinnbench tune / run --tuned (docs/tuning.md)
    return provenance


def _add_floors(row: dict[str, Any], problem) -> None:
    """The trivial reference fits (:mod:`pinnbench.judge.floors`): their keys that are columns go to
    the row, the rest to the provenance; a failure is noted, never a failed cell."""
    from pinnbench.judge.floors import floors

    provenance = row["provenance"]
    try:
        t = time.perf_counter()
        fl = floors(problem)
        for key in list(fl):
            if key in row:
                row[key] = fl.pop(key)
        provenance.update(fl)
        provenance["floor_time_s"] = time.perf_counter() - t
    except Exception as exc:  # noqa: BLE001 - no floor is not a failed cell
        provenance["floor_error"] = f"{type(exc).__name__}: {exc}"[:300]
