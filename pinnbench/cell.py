"""One measured cell: (problem, d, solver spec, seed, steps, model, device, dtype) -> a result row.

``run_cell(spec)`` runs the cell **isolated** by default: in a fresh Python process (started with
``subprocess``, i.e. a spawn, never a fork of the caller) with an optional timeout, so that an
out-of-memory, a crash or a hang cannot take the caller down and the peak memory belongs to this
cell alone. ``run_cell(spec, isolated=False)`` runs it in the calling process (handy in a
debugger; peak memory then includes whatever the caller holds, and a crash is the caller's).

The cell spec is a plain dict (JSON round-trip). Keys and defaults: see ``DEFAULTS``; the keys in
``IDENTITY_KEYS`` define the cell and hash to its ``cell_id``; the others say how to run it:

- ``timeout_s``: wall-clock limit of the whole cell process (isolated only) -> status ``timeout``.
- ``memory_limit_bytes``: address-space headroom (RLIMIT_AS) granted to the cell process on top
  of what it has mapped once torch and the plugins are imported; CPU cells only (CUDA maps huge
  virtual ranges). Exceeding it makes allocations fail -> status ``oom``.
- ``imports``: plugin modules (``package.module``) or files (``path/to/plugins.py``) to import in
  the cell process before the registries are used (third-party or test problems and solvers).
- ``threads``: ``torch.set_num_threads`` in the cell (None: torch's default).
- ``floors``: compute the trivial reference fits (:mod:`pinnbench.floors`) after training.
- ``warmup``: the first steps, excluded from the step timing (they are still training steps).

Measurement, in the cell process (DESIGN.md, "Cell"):

1. set-up (problem, model, solver.setup) is timed on its own (``setup_time_s``); ``solver.skip``
   is asked before the model is built (status ``skipped`` with its reason);
2. the error at step 0 is evaluated, then the peaks are reset (CPU VmHWM, CUDA peak stats) and
   the baseline RSS recorded;
3. each step is timed between device synchronisations; ``time_per_step_s`` is the median of the
   steps after the warm-up (all steps when there are no more than ``warmup``), with the IQR;
4. the error (:func:`pinnbench.metrics.evaluate`) is taken at steps 1, 2, 4, 8, ... and the last;
   evaluation time is excluded from the step times and ``time_s`` of the curve, and evaluation
   memory from the peaks (the peak is read before and reset after every evaluation);
5. a non-finite loss stops training with status ``diverged``; ``time_budget_s`` stops training
   once the summed step times reach it;
6. floors and provenance are added after training, outside every measurement.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pinnbench.schema import COLUMNS

IDENTITY_KEYS = ("problem", "dim", "solver", "seed", "steps", "time_budget_s", "width", "depth",
                 "device", "dtype", "warmup")

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "steps": 100,
    "time_budget_s": None,
    "width": 128,
    "depth": 3,
    "device": "cpu",
    "dtype": "float32",
    "warmup": 2,
    "timeout_s": None,
    "memory_limit_bytes": None,
    "imports": [],
    "threads": None,
    "floors": True,
    "command": None,
    "run_id": "",
}

#: exit code of a cell process that wrote its result file
_CHILD_OK = 0


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- spec -----------------------------------------------------------------------------------------
def import_plugins(imports: list[str]) -> None:
    """Import plugin modules (``a.b``) or files (``dir/x.py``, imported as module ``x``)."""
    for item in imports:
        if item.endswith(".py"):
            path = Path(item).resolve()
            name = path.stem
            if name in sys.modules:
                continue
            if not path.is_file():
                raise ValueError(f"plugin file {item!r} does not exist")
            mod_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            try:
                mod_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        else:
            importlib.import_module(item)


def normalize_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Fill the defaults, validate every field and canonicalise the solver spec (every parameter
    written out) and the device (``auto`` resolved). Raises ValueError with what is allowed."""
    from pinnbench.problem_registry import problem_class, resolve_device, resolve_dtype
    from pinnbench.solver import solver_from_spec

    unknown = set(spec) - set(DEFAULTS) - set(IDENTITY_KEYS) - {"solver_name", "solver_params"}
    if unknown:
        raise ValueError(f"unknown cell spec key(s) {sorted(unknown)}; allowed: "
                         f"{sorted(set(DEFAULTS) | set(IDENTITY_KEYS))}")
    for key in ("problem", "dim", "solver"):
        if key not in spec:
            raise ValueError(f"cell spec needs {key!r}")
    out = {**DEFAULTS, **spec}
    out["imports"] = list(out["imports"] or [])
    import_plugins(out["imports"])
    cls = problem_class(out["problem"])
    _check_int(out, "dim", minimum=cls.min_dim)
    _check_int(out, "seed", minimum=0)
    _check_int(out, "width", minimum=1)
    _check_int(out, "depth", minimum=1)
    _check_int(out, "warmup", minimum=0)
    if out["steps"] is not None:
        _check_int(out, "steps", minimum=1)
    for key in ("time_budget_s", "timeout_s"):
        if out[key] is not None:
            v = out[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 \
                    or not math.isfinite(v):
                raise ValueError(f"{key} must be a number > 0 or None, got {v!r}")
            out[key] = float(v)
    if out["steps"] is None and out["time_budget_s"] is None:
        raise ValueError("a cell needs steps, time_budget_s, or both")
    if out["memory_limit_bytes"] is not None:
        _check_int(out, "memory_limit_bytes", minimum=1)
    if out["threads"] is not None:
        _check_int(out, "threads", minimum=1)
    out["dtype"] = str(resolve_dtype(out["dtype"])).replace("torch.", "")
    out["device"] = str(resolve_device(out["device"]))
    if out["memory_limit_bytes"] is not None and out["device"] != "cpu":
        raise ValueError("memory_limit_bytes (RLIMIT_AS) works for CPU cells only")
    solver = solver_from_spec(out["solver"])
    out["solver"] = solver.spec
    out["solver_name"] = solver.name
    out["solver_params"] = dict(solver.params)
    return out


def _check_int(spec: dict, key: str, minimum: int) -> None:
    v = spec[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {v!r}")


def cell_id(spec: dict[str, Any]) -> str:
    """Hash of the canonical identity of a (normalised) spec: same cell, same id."""
    identity = {k: spec.get(k, DEFAULTS.get(k)) for k in IDENTITY_KEYS}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def base_row(spec: dict[str, Any]) -> dict[str, Any]:
    """A row with the spec's fields filled and every measurement empty (None)."""
    row: dict[str, Any] = {k: None for k in COLUMNS}
    for k in ("problem", "dim", "solver", "solver_name", "seed", "steps", "width", "depth",
              "device", "dtype"):
        row[k] = spec.get(k)
    row["solver_params"] = spec.get("solver_params") or {}
    row["time_budget_s"] = spec.get("time_budget_s")
    row["run_id"] = spec.get("run_id") or ""
    row["cell_id"] = cell_id(spec)
    row["message"] = ""
    row["curve"] = []
    row["provenance"] = {}
    return row


def is_oom(exc: BaseException) -> bool:
    """True for an allocation failure: MemoryError, torch.cuda.OutOfMemoryError, or a
    RuntimeError whose message has one of ``OOM_MESSAGES``."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(s in text for s in OOM_MESSAGES)


#: lower-case fragments of the RuntimeError messages that mean an allocation failed: the CPU
#: allocator, CUDA's own "out of memory", cuBLAS/cuSOLVER workspaces that could not be allocated,
#: and the caching allocator's NVML assert (raised when cudaMalloc fails under memory pressure)
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory",
                "not enough memory", "cublas_status_alloc_failed", "cusolver_status_alloc_failed",
                "nvml_success == r")


def eval_steps(steps: int | None) -> set[int]:
    """1, 2, 4, 8, ... up to ``steps``, and ``steps`` itself (unbounded powers when None)."""
    out = {2**k for k in range(64) if steps is None or 2**k <= steps}
    if steps is not None:
        out.add(steps)
    return out


# -- the measured cell, in this process -----------------------------------------------------------
def _derive_seed(seed: int, stream: str) -> int:
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _median_iqr(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) < 2:
        return values[0], 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q[2] - q[0]


def _write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, default=_json_default)
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def execute(spec: dict[str, Any], progress_path: str | None = None) -> dict[str, Any]:
    """Run one normalised cell in this process and return its row (never raises for a cell
    failure: errors become a status). ``progress_path``: where a partial row is written after
    every evaluation, so that a cell killed on timeout still reports its curve."""
    import torch

    from pinnbench import memory
    from pinnbench.metrics import evaluate
    from pinnbench.model import make_model
    from pinnbench.problem_registry import make_problem
    from pinnbench.provenance import collect
    from pinnbench.solver import solver_from_spec

    t_cell = time.perf_counter()
    row = base_row(spec)
    row["started_at"] = now_iso()
    row["status"] = "ok"
    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    state: dict[str, Any] = {"step_times": [], "warmup": spec["warmup"], "peak_cpu": 0,
                             "peak_gpu": (None, None)}

    def fill_measurements() -> None:
        times = state["step_times"]
        timed = times[state["warmup"]:] if len(times) > state["warmup"] else times
        row["time_per_step_s"], row["time_per_step_iqr_s"] = _median_iqr(timed)
        row["steps_done"] = len(times)
        curve = row["curve"]
        if curve:
            last = curve[-1]
            row["final_rel_l2"], row["final_rel_l1"] = last["rel_l2"], last["rel_l1"]
            row["final_max_abs"] = last["max_abs"]
            finite = [c for c in curve if c["rel_l2"] is not None and math.isfinite(c["rel_l2"])]
            if finite:
                best = min(finite, key=lambda c: c["rel_l2"])
                row["best_rel_l2"], row["best_step"] = best["rel_l2"], best["step"]
            for c in curve:
                c["final"] = c is last
                c["best"] = bool(finite) and c is best
        row["peak_cpu_bytes"] = state["peak_cpu"] or None
        row["peak_gpu_allocated_bytes"], row["peak_gpu_reserved_bytes"] = state["peak_gpu"]
        row["total_time_s"] = time.perf_counter() - t_cell

    def read_peaks() -> None:
        state["peak_cpu"] = max(state["peak_cpu"], memory.peak_cpu_bytes())
        alloc, reserved = memory.peak_gpu_bytes(device)
        if alloc is not None:
            old_a, old_r = state["peak_gpu"]
            state["peak_gpu"] = (max(alloc, old_a or 0), max(reserved, old_r or 0))

    def reset_peaks() -> None:
        # blocks cached by an evaluation are released first, so the reserved peak is the steps'
        memory.release_gpu_cache(device)
        memory.reset_peak_cpu()
        memory.reset_peak_gpu(device)

    def record(step: int, loss: float | None, train_time: float, model, problem) -> None:
        sync()
        read_peaks()
        errors = evaluate(model, problem)
        row["curve"].append({"step": step, "time_s": train_time, "loss": loss,
                             **{k: float(v) for k, v in errors.items()}})
        reset_peaks()
        if progress_path:
            fill_measurements()
            _write_json_atomic(progress_path, row)

    problem = model = solver = None
    cuda_init_s = None
    try:
        if device.type == "cuda":
            # the CUDA context (hundreds of ms to seconds) is not part of the cell's set-up
            t = time.perf_counter()
            torch.cuda.init()
            torch.empty(1, device=device)
            sync()
            cuda_init_s = time.perf_counter() - t
        t0 = time.perf_counter()
        problem = make_problem(spec["problem"], dim=spec["dim"], seed=spec["seed"],
                               dtype=spec["dtype"], device=device)
        solver = solver_from_spec(spec["solver"])
        skip, reason = solver.skip(problem)
        if skip:
            row["status"], row["message"] = "skipped", str(reason)
        else:
            g_model = torch.Generator(device=device).manual_seed(_derive_seed(spec["seed"], "model"))
            g_solver = torch.Generator(device=device).manual_seed(_derive_seed(spec["seed"],
                                                                               "solver"))
            model = make_model(problem, width=spec["width"], depth=spec["depth"],
                               generator=g_model)
            row["n_params"], row["param_bytes"] = model.n_params, model.param_bytes
            solver.setup(problem, model, g_solver)
            sync()
            row["setup_time_s"] = time.perf_counter() - t0

            record(0, None, 0.0, model, problem)
            reset_peaks()
            row["baseline_cpu_bytes"] = memory.current_cpu_bytes()
            row["baseline_gpu_allocated_bytes"] = memory.current_gpu_bytes(device)
            state["peak_cpu"], state["peak_gpu"] = memory.peak_cpu_bytes(), (None, None)

            steps, budget = spec["steps"], spec["time_budget_s"]
            when = eval_steps(steps)
            train_time, loss, k = 0.0, None, 0
            while steps is None or k < steps:
                if budget is not None and train_time >= budget:
                    break
                sync()
                t = time.perf_counter()
                loss = float(solver.step())
                sync()
                dt = time.perf_counter() - t
                k += 1
                state["step_times"].append(dt)
                train_time += dt
                row["final_loss"] = loss
                if not math.isfinite(loss):
                    row["status"] = "diverged"
                    row["message"] = f"loss became {loss} at step {k}"
                    break
                if k in when:
                    record(k, loss, train_time, model, problem)
            if not row["curve"] or row["curve"][-1]["step"] != k:
                record(k, loss, train_time, model, problem)
            if row["status"] == "ok" and row["final_rel_l2"] is not None \
                    and not math.isfinite(row["curve"][-1]["rel_l2"]):
                row["status"], row["message"] = "diverged", "the model's error is not finite"
    except BaseException as exc:  # noqa: BLE001 - a cell failure is a result, not a crash
        if isinstance(exc, KeyboardInterrupt):
            raise
        if is_oom(exc):
            row["status"] = "oom"
            row["message"] = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
        else:
            row["status"] = "error"
            tb = traceback.extract_tb(exc.__traceback__)
            where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
            row["message"] = f"{type(exc).__name__}: {str(exc).strip()[:500]}{where}"
    try:
        read_peaks()
    except Exception:  # noqa: BLE001 - e.g. a sticky CUDA error: keep the original message
        pass
    fill_measurements()
    del solver, model
    try:
        memory.release_gpu_cache(device)
    except Exception:  # noqa: BLE001 - after a sticky CUDA error every CUDA call raises
        pass

    try:
        provenance = collect(device, command=spec.get("command"))
    except Exception as exc:  # noqa: BLE001 - never replace the cell's own status
        provenance = {"provenance_error": f"{type(exc).__name__}: {exc}"[:300]}
    if cuda_init_s is not None:
        provenance["cuda_init_time_s"] = cuda_init_s
    provenance["cpu_peak_resettable"] = memory.cpu_peak_resettable()
    provenance["threads"] = torch.get_num_threads()
    if spec.get("memory_limit_bytes"):
        provenance["memory_limit_bytes"] = spec["memory_limit_bytes"]
    if spec.get("floors", True) and problem is not None:
        try:
            from pinnbench.floors import floors

            t = time.perf_counter()
            fl = floors(problem)
            row["floor_const_rel_l2"] = fl.pop("floor_const_rel_l2")
            row["floor_affine_rel_l2"] = fl.pop("floor_affine_rel_l2")
            provenance.update(fl)
            provenance["floor_time_s"] = time.perf_counter() - t
        except Exception as exc:  # noqa: BLE001 - no floor is not a failed cell
            provenance["floor_error"] = f"{type(exc).__name__}: {exc}"[:300]
    row["provenance"] = provenance
    row["total_time_s"] = time.perf_counter() - t_cell
    row["finished_at"] = now_iso()
    return row


# -- isolation -------------------------------------------------------------------------------------
class CellProcess:
    """A cell running in its own process (``python -c ...``, new session so that the whole group
    can be killed); ``poll()`` returns its row once it is over, else None."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.dir = Path(tempfile.mkdtemp(prefix="pinnbench-cell-"))
        self.result_path = self.dir / "result.json"
        self.progress_path = self.dir / "progress.json"
        self.log_path = self.dir / "log.txt"
        _write_json_atomic(self.dir / "spec.json", spec)
        self.started_at = now_iso()
        self.t0 = time.monotonic()
        self._killed_for_timeout = False
        env = dict(os.environ)
        # the child imports what the parent could: its working directory and sys.path first
        env["PYTHONPATH"] = os.pathsep.join([os.getcwd()] + [p for p in sys.path if p])
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from pinnbench.cell import _child_main; _child_main()",
                 str(self.dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def poll(self) -> dict[str, Any] | None:
        timeout = self.spec.get("timeout_s")
        if self.proc.poll() is None:
            if timeout is None or self.elapsed_s < timeout:
                return None
            self._killed_for_timeout = True
            self.kill()
        return self._row()

    def wait(self) -> dict[str, Any]:
        while True:
            row = self.poll()
            if row is not None:
                return row
            time.sleep(0.05)

    def _row(self) -> dict[str, Any]:
        rc = self.proc.returncode
        row = None
        if self.result_path.exists() and rc == _CHILD_OK:
            row = json.loads(self.result_path.read_text())
        else:
            if self.progress_path.exists():
                try:
                    row = json.loads(self.progress_path.read_text())
                except ValueError:
                    row = None
            if row is None:
                row = base_row(self.spec)
                row["started_at"] = self.started_at
            row["total_time_s"] = self.elapsed_s
            row["finished_at"] = now_iso()
            if self._killed_for_timeout:
                row["status"] = "timeout"
                row["message"] = f"the cell exceeded its timeout of {self.spec['timeout_s']:g} s " \
                                 f"and was killed after {row.get('steps_done') or 0} steps"
            elif rc == -signal.SIGKILL:
                row["status"] = "oom"
                row["message"] = ("the cell process was killed by SIGKILL (most likely the "
                                  f"operating system's out-of-memory killer): {self.log_tail()}")
            elif rc is not None and rc < 0:
                row["status"] = "error"
                row["message"] = (f"the cell process died from signal {_signal_name(-rc)}: "
                                  f"{self.log_tail()}")
            else:
                row["status"] = "error"
                row["message"] = f"the cell process exited with code {rc}: {self.log_tail()}"
        self.cleanup()
        return row

    def log_tail(self, n_chars: int = 600) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return " | ".join(text[-n_chars:].splitlines()[-6:])

    def cleanup(self) -> None:
        for p in self.dir.iterdir():
            p.unlink(missing_ok=True)
        self.dir.rmdir()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _set_parent_death_signal() -> None:
    """Linux: SIGKILL this process when the parent dies (a killed sweep leaves no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            os._exit(3)
    except (OSError, AttributeError):
        pass


def _vm_size_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child_main() -> None:
    _set_parent_death_signal()
    folder = Path(sys.argv[1])
    spec = json.loads((folder / "spec.json").read_text())
    import torch  # noqa: F401 - imported before the address-space cap is measured

    import_plugins(spec.get("imports") or [])
    limit = spec.get("memory_limit_bytes")
    if limit:
        import resource

        cap = _vm_size_bytes() + int(limit)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    row = execute(spec, progress_path=str(folder / "progress.json"))
    _write_json_atomic(folder / "result.json", row)
    sys.stdout.flush()
    os._exit(_CHILD_OK)


def run_cell(spec: dict[str, Any], isolated: bool = True) -> dict[str, Any]:
    """Run one cell and return its result row (a dict with the columns of
    :mod:`pinnbench.schema`, JSON columns as Python objects).

    ``isolated=True`` (default): in a fresh process with ``spec["timeout_s"]`` and
    ``spec["memory_limit_bytes"]`` applied; ``isolated=False``: in this process (no timeout, no
    memory cap). The spec is validated first (ValueError on a bad spec)."""
    spec = normalize_spec(spec)
    if not isolated:
        return execute(spec)
    proc = CellProcess(spec)
    try:
        return proc.wait()
    finally:
        proc.kill()
