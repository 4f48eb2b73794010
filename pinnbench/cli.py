"""The ``pinnbench`` command: run, list, show, export, report.

Exit codes: 0 when every cell produced a result (ok, oom, timeout, diverged and skipped are
results), 1 when a cell failed with an unexpected error, 2 for bad usage (one line on stderr that
says what was wrong and what is allowed; nothing written to the store), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from pinnbench.cellspec import DEFAULTS as CELL_DEFAULTS
from pinnbench.console import RunUI, console as _console, escape, print_verdict, summary_table
from pinnbench.option_types import (MAX_DEPTH, MAX_POINTS, MAX_PROCESSES, MAX_THREADS,
                                     MAX_WIDTH, int_option, memory_size, seconds_option)
from pinnbench.presets import PRESETS
from pinnbench.store import DEFAULT_PATH, StoreError

#: with --executor dask: how long the cluster may have no worker before cells in flight fail
NO_WORKER_TIMEOUT_S = 600.0

#: where reports go by default (an ignored folder: generated pages never land in the repository)
REPORTS_DIR = Path("results") / "reports"

#: the built-in default sweep (``pinnbench run`` with no arguments); see RUN_EPILOG
#: the built-in run (`pinnbench run` with no options); what it does not name is a cell's own
#: default (pinnbench.cellspec.CellSpec, declared once)
DEFAULT_RUN = {
    "problems": "poisson-2body-scaled-v1",  # radius sqrt(d): floors that are not trivial
    "solvers": "sdze,bp",
    "dims": "1e2..1e4",
    "seeds": "0",
    "steps": 500,  # the run's training budget (a cell's own default is 100)
    "timeout": 600.0,
}

RUN_EPILOG = f"""\
With no arguments, `pinnbench run` runs a built-in CPU sweep that finishes in a few minutes on
two cores: solvers sdze and bp (default parameters) on {DEFAULT_RUN['problems']} at d = 10^2,
10^3, 10^4, seed 0, {DEFAULT_RUN['steps']} training steps per cell, a {CELL_DEFAULTS['width']}-wide {CELL_DEFAULTS['depth']}-hidden-layer tanh MLP, {CELL_DEFAULTS['dtype']}, a
{DEFAULT_RUN['timeout']:g} s timeout per cell. Every option you give replaces the matching default.

A budget in steps gives errors that do not depend on the machine's speed or load; --time-budget
SECONDS (training stops when the step times add up to it) makes the number of steps, and so the
errors, depend on the machine's speed and load: the run warns. CPU cells get the physical
cores that other work leaves free, divided by the cells at once, as torch threads unless
--threads says otherwise; the run records the threads and the load average, and warns when the
machine is busier than its cores or a cell's step time varied by more than 2x.

Formats:
  --solvers  comma-separated specs; parameters in brackets: 'sdze[rank=4,eps=1e-3],bp[estimator=hte]'
             (quote it in the shell; `pinnbench list solvers` shows every parameter)
  --dims     1e3..1e7 (decades), 1e3..1e5:x2 (factor 2), 100,5e4 (a list), or a mix
  --seeds    0,1,2 or 0..4 (inclusive)

Each cell runs in its own process; results go to the SQLite store one cell at a time, so an
interrupted sweep loses only the cells in flight: `pinnbench run --resume` runs what is missing.
On a Dask cluster: --executor dask --scheduler tcp://HOST:8786, or --local-workers N to try it
here (pip install 'pinnbench[dask]'; docs/dask.md).
Exit codes: 0 all cells gave a result (ok/oom/timeout/diverged/skipped), 1 some cell failed with an
unexpected error, 2 bad usage.
"""


class UsageError(Exception):
    """Bad usage: shown as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


#: a plan of more cells than this needs --yes (a typo such as --seeds 0..100000 is caught)
MAX_CELLS_WITHOUT_YES = 500


def _command_line(argv: Sequence[str]) -> str:
    return "pinnbench " + " ".join(shlex.quote(a) for a in argv)


# -- the parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    import pinnbench

    p = _Parser(prog="pinnbench", description="Benchmark PINN solvers on high-dimensional PDEs: "
                "isolated, measured cells stored in SQLite.")
    p.add_argument("--version", action="version", version=f"pinnbench {pinnbench.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser("run", help="run a sweep of cells (problems x solvers x dims x seeds)",
                       description="Run a sweep: every (problem, solver, d, seed) is one cell, "
                       "run in a fresh process and stored in SQLite.", epilog=RUN_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g = r.add_argument_group("what to run")
    g.add_argument("--problems", help=f"comma-separated problem ids (default {DEFAULT_RUN['problems']}; "
                   "`pinnbench list problems`)")
    g.add_argument("--solvers", help=f"comma-separated solver specs (default {DEFAULT_RUN['solvers']})")
    g.add_argument("--dims", help="dimensions: 1e3..1e7, 1e3..1e5:x2, 100,5e4 (default 1e2..1e4)")
    g.add_argument("--seeds", help="seeds: 0,1,2 or 0..4 (default 0)")
    g.add_argument("--steps", type=int_option("--steps"),
                   help=f"training steps per cell (default {DEFAULT_RUN['steps']}; unlimited when "
                   "only --time-budget is given)")
    g.add_argument("--time-budget", type=seconds_option("--time-budget"), metavar="SECONDS",
                   help="also stop training when the step times add up to this (default: none; "
                   "the errors then depend on the machine's speed and load)")
    g.add_argument("--width", type=int_option("--width", maximum=MAX_WIDTH), help=f"MLP width (default {CELL_DEFAULTS['width']})")
    g.add_argument("--depth", type=int_option("--depth", maximum=MAX_DEPTH), help=f"hidden layers (default {CELL_DEFAULTS['depth']})")
    g.add_argument("--points", type=int_option("--points", maximum=MAX_POINTS),
                   help="collocation points per step (the solvers' `points` parameter, unless a "
                   "spec sets it)")
    g.add_argument("--device", help=f"auto, cpu, cuda or cuda:<index> (default {CELL_DEFAULTS['device']})")
    g.add_argument("--dtype", help=f"float32 or float64 (default {CELL_DEFAULTS['dtype']})")
    g.add_argument("--warmup", type=int_option("--warmup", minimum=0),
                   help=f"steps excluded from timing (default {CELL_DEFAULTS['warmup']})")
    g.add_argument("--import", dest="imports", action="append", metavar="MODULE_OR_FILE",
                   help="import a plugin module (a.b) or file (x.py) that registers problems or "
                   "solvers, here and in every cell (repeatable)")
    g.add_argument("--tuned", metavar="STUDY_STORE_OR_NAME",
                   help="run each (solver, problem, d) at the configuration its `pinnbench tune` "
                   "study chose (a study store, or a study's name; docs/tuning.md)")
    g.add_argument("--preset", choices=sorted(PRESETS),
                   help="a named set of the options above and below; options you give win. "
                   + "; ".join(f"{k}: {' '.join(v)}" for k, v in sorted(PRESETS.items())))
    g.add_argument("--dry-run", action="store_true",
                   help="print the plan (each cell's estimated time and peak memory, and what "
                   "happens to the cells that cannot fit or finish) and stop; nothing is run "
                   "or written")
    h = r.add_argument_group("how to run it")
    h.add_argument("--timeout", type=seconds_option("--timeout"), metavar="SECONDS",
                   help=f"wall-clock limit per cell (default {DEFAULT_RUN['timeout']:g})")
    h.add_argument("--memory-limit", type=memory_size, metavar="SIZE",
                   help="address-space headroom per CPU cell (RLIMIT_AS), e.g. 4G")
    h.add_argument("--jobs", type=int_option("--jobs", maximum=MAX_PROCESSES),
                   help="cells run at the same time on this machine (default 1; local executor)")
    h.add_argument("--executor", choices=("local", "dask"), default="local",
                   help="where cells run: local processes (default) or a Dask cluster "
                   "(needs pinnbench[dask]; see docs/dask.md)")
    h.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --executor dask: the scheduler of a running cluster, "
                   "e.g. tcp://10.0.0.5:8786")
    h.add_argument("--local-workers", type=int_option("--local-workers", maximum=MAX_PROCESSES), metavar="N",
                   help="with --executor dask: start a local cluster of N worker processes "
                   "(one cell at a time each)")
    h.add_argument("--no-worker-timeout", type=seconds_option("--no-worker-timeout"),
                   metavar="SECONDS",
                   help="with --executor dask: cells in flight become errors after the cluster "
                   f"has had no worker this long (default {NO_WORKER_TIMEOUT_S:g})")
    h.add_argument("--threads", type=int_option("--threads", maximum=MAX_THREADS),
                   help="torch threads per cell (default on CPU: free physical cores / cells "
                   "at once; torch's own on a remote --scheduler's workers)")
    h.add_argument("--no-prune", action="store_true",
                   help="run larger d even after a (problem, solver) ran out of memory")
    h.add_argument("--no-floors", action="store_true",
                   help="skip the trivial reference fits (floor_*_rel_l2)")
    h.add_argument("--diagnostics", action="store_true", default=None,
                   help="after training, record the zeroth-order estimator diagnostics (gradient "
                   "variance ratios, quotient variance against eps with CRNS on and off; "
                   "pinnbench/diagnostics.py) in the column `diagnostics`; outside the step "
                   "times and peaks, same training")
    h.add_argument("--tf32", action="store_true", default=None,
                   help="allow TensorFloat-32 matmuls and convolutions in CUDA cells (changes the "
                   "numbers, so the cells get other ids); a usage error on a CPU device")
    o = r.add_argument_group("where results go")
    o.add_argument("--store", default=str(DEFAULT_PATH), help=f"SQLite store (default {DEFAULT_PATH})")
    o.add_argument("--mkdir", action="store_true",
                   help="create the store's folders when they do not exist (made without it "
                   f"only for the default store, {DEFAULT_PATH})")
    o.add_argument("--resume", nargs="?", const="latest", metavar="RUN_ID",
                   help="continue a run (default: the latest in the store): run only its cells "
                   "without an ok/oom/timeout/diverged/skipped row; without sweep options, "
                   "its own plan is used")
    o.add_argument("--report", dest="report", action="store_true", default=True,
                   help="write the report page afterwards (default)")
    o.add_argument("--no-report", dest="report", action="store_false", help="do not write it")
    o.add_argument("--report-dir", help=f"where the report goes (default {REPORTS_DIR}/<run id>)")
    o.add_argument("--yes", action="store_true",
                   help=f"run a plan of more than {MAX_CELLS_WITHOUT_YES} cells (refused without)")
    o.add_argument("--quiet", action="store_true", help="print nothing but errors")
    o.add_argument("--json", action="store_true",
                   help="print one JSON object per finished cell, then a summary object")

    abl = sub.add_parser(
        "ablate", help="run a solver spec and its one-factor-at-a-time variants as one sweep",
        description="Expand SOLVER (a spec, e.g. 'sdze' or 'sdze[rank=4]') into itself and its "
        "variants that each change exactly one parameter (the solver's declared ablations: for "
        "sdze crns off, subspace off, momentum 0 / 0.9, normalize off, rank 1..32, refresh "
        "1..100), then run them as `pinnbench run --solvers <those specs> OPTIONS`: same store, "
        "isolation, resume and report.")
    abl.add_argument("base", metavar="SOLVER", help="the base solver spec")
    abl.add_argument("run_options", nargs=argparse.REMAINDER, metavar="OPTIONS",
                     help="any `pinnbench run` option but --solvers (--problems, --dims, "
                     "--seeds, --steps, --store, ...)")

    from pinnbench.tuning_cli import add_tune_parser

    add_tune_parser(sub)

    lst = sub.add_parser("list", help="list problems or solvers",
                         description="List registered problems, or solvers with their parameters.")
    lst.add_argument("what", choices=("problems", "solvers"))
    lst.add_argument("--import", dest="imports", action="append", metavar="MODULE_OR_FILE",
                     help="import a plugin module or file first")

    for name, helptext in (("show", "print the summary table of a run"),
                           ("export", "write results as parquet or CSV"),
                           ("report", "write the report page (HTML + figures) for a store")):
        s = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".")
        s.add_argument("--store", default=str(DEFAULT_PATH), help=f"SQLite store (default {DEFAULT_PATH})")
        s.add_argument("--run", metavar="RUN_ID", help="one run (default: the latest)")
        s.add_argument("--all", action="store_true", help="every run in the store")
        if name == "show":
            s.add_argument("--studies", action="store_true",
                           help="list the tuning studies instead (pinnbench tune)")
            s.add_argument("--study-store", metavar="PATH",
                           help="with --studies: the Optuna store (default: beside --store)")
        if name == "export":
            s.add_argument("--format", choices=("parquet", "csv"), default="csv")
            s.add_argument("--out", help="output file (default results/pinnbench.<format>)")
            s.add_argument("--force", action="store_true",
                           help="overwrite --out even when it is not an earlier export")
        if name == "report":
            s.add_argument("--out", help=f"output folder (default {REPORTS_DIR}/<run id>, or "
                           f"{REPORTS_DIR}/all)")
            s.add_argument("--force", action="store_true",
                           help="write into --out even when it is a folder that holds no report")
    return p


# -- commands -------------------------------------------------------------------------------------
def _import_plugins(imports: list[str] | None) -> None:
    from pinnbench.cell import import_plugins

    try:
        import_plugins(imports or [])
    except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's to fix
        raise UsageError(f"cannot import plugin: {type(exc).__name__}: {exc}") from None


def _sweep_config(args) -> "Any":
    """The command line mapped onto a :class:`pinnbench.sweep.SweepConfig`: lists parsed, the
    options the executors need checked; each cell is validated once, by ``sweep.plan``
    (:class:`pinnbench.cellspec.CellSpec`), whose ValueError ``cmd_run`` turns into a usage
    error before anything is written."""
    from pinnbench.axes import parse_dims, parse_seeds, split_top_level
    from pinnbench.problem_registry import resolve_device
    from pinnbench.sweep import SweepConfig

    only_budget = args.time_budget is not None and args.steps is None
    problems_text = args.problems if args.problems is not None else DEFAULT_RUN["problems"]
    solvers_text = args.solvers if args.solvers is not None else DEFAULT_RUN["solvers"]
    try:
        problems = split_top_level(problems_text)
        solvers = split_top_level(solvers_text)
        dims = parse_dims(args.dims if args.dims is not None else DEFAULT_RUN["dims"])
        device = str(resolve_device(args.device or CELL_DEFAULTS["device"]))
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    if device.startswith("cuda") and args.executor != "dask" and (args.jobs or 1) > 1:
        raise UsageError(f"--jobs {args.jobs} would put {args.jobs} cells on one GPU at once (their "
                         "memory and timings interfere); use --jobs 1 on cuda, or --executor dask "
                         "with one GPU worker per device (docs/dask.md)")
    try:
        seeds = parse_seeds(args.seeds if args.seeds is not None else DEFAULT_RUN["seeds"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    n_cells = len(problems) * len(solvers) * len(dims) * len(seeds)
    if n_cells > MAX_CELLS_WITHOUT_YES and not getattr(args, "yes", False):
        raise UsageError(f"the plan has {n_cells:,} cells ({len(problems)} problems x "
                         f"{len(solvers)} solvers x {len(dims)} d x {len(seeds)} seeds), more "
                         f"than {MAX_CELLS_WITHOUT_YES}; check --seeds and --dims, or add --yes "
                         "to run them all")
    return SweepConfig(
        problems=problems, solvers=solvers, dims=dims, seeds=seeds,
        steps=None if only_budget else (args.steps or DEFAULT_RUN["steps"]),
        time_budget_s=args.time_budget,
        width=args.width or CELL_DEFAULTS["width"], depth=args.depth or CELL_DEFAULTS["depth"],
        points=args.points, device=device, dtype=args.dtype or CELL_DEFAULTS["dtype"],
        warmup=CELL_DEFAULTS["warmup"] if args.warmup is None else args.warmup,
        timeout_s=args.timeout or DEFAULT_RUN["timeout"], memory_limit_bytes=args.memory_limit,
        imports=list(args.imports or []), jobs=_parallel_cells(args), threads=args.threads,
        auto_threads=not (args.executor == "dask" and args.scheduler), floors=not args.no_floors,
        diagnostics=bool(args.diagnostics), tf32=bool(args.tf32))


def _parallel_cells(args) -> int:
    """Cells that run at the same time on one machine (used to split its CPU threads)."""
    if args.executor == "dask":
        return args.local_workers or 1
    return args.jobs or 1


def _check_executor_options(args) -> None:
    """Usage errors of --executor and its options (before anything is started or written)."""
    if args.executor != "dask":
        for name, value in (("--scheduler", args.scheduler),
                            ("--local-workers", args.local_workers),
                            ("--no-worker-timeout", args.no_worker_timeout)):
            if value is not None:
                raise UsageError(f"{name} needs --executor dask")
        return
    if args.jobs is not None:
        raise UsageError("--jobs is for the local executor; with --executor dask use "
                         "--local-workers N or size the cluster")
    if (args.scheduler is None) == (args.local_workers is None):
        raise UsageError("--executor dask needs either --scheduler ADDRESS (a running cluster, "
                         "e.g. tcp://host:8786) or --local-workers N (a local cluster)")
    from pinnbench.executors import DASK_MISSING, check_scheduler_address, dask_available

    if not dask_available():
        raise UsageError(DASK_MISSING)
    if args.scheduler is not None:
        try:
            check_scheduler_address(args.scheduler)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def _make_executor(args, cells: list[dict]):
    """The executor the options ask for (a started cluster or a connected client for dask)."""
    from pinnbench.executors import DaskExecutor, ExecutorError, LocalExecutor

    if args.executor == "local":
        return LocalExecutor(args.jobs or 1)
    gpu = any(str(c.get("device", "cpu")).startswith("cuda") for c in cells)
    try:
        ex = DaskExecutor.from_options(scheduler=args.scheduler, local_workers=args.local_workers,
                                       gpu=gpu, no_worker_timeout_s=NO_WORKER_TIMEOUT_S
                                       if args.no_worker_timeout is None
                                       else args.no_worker_timeout)
    except ExecutorError as exc:
        raise UsageError(str(exc)) from None
    if gpu:
        workers = ex.workers()
        if workers and not any((w.get("resources") or {}).get("GPU") for w in workers.values()):
            ex.close()
            raise UsageError("the cells run on cuda but no worker of the Dask cluster advertises "
                             "a GPU resource; start GPU workers with `--resources GPU=1` "
                             "(see docs/dask.md)")
    return ex


_SWEEP_OPTIONS = ("problems", "solvers", "dims", "seeds", "steps", "time_budget", "width", "depth",
                  "points", "device", "dtype", "warmup", "timeout", "memory_limit", "threads",
                  "diagnostics", "tf32")


def cmd_run(args, argv: Sequence[str]) -> int:
    from pinnbench import store as store_mod
    from pinnbench.sweep import plan

    command = _command_line(argv)
    _apply_preset(args)
    _check_executor_options(args)
    _import_plugins(args.imports)
    try:
        store_mod.check_store(args.store, mkdir=_may_mkdir(args))
    except StoreError as exc:
        raise UsageError(str(exc)) from None

    resume_id = None
    cells: list[dict] = []
    gave_sweep_options = any(getattr(args, k) is not None for k in _SWEEP_OPTIONS)
    if args.resume:
        runs = store_mod.list_runs(args.store) if Path(args.store).exists() else []
        ids = [r["run_id"] for r in runs]
        if not ids:
            raise UsageError(f"--resume: the store {args.store!r} has no run to resume")
        resume_id = ids[-1] if args.resume == "latest" else args.resume
        if resume_id not in ids:
            raise UsageError(f"--resume: no run {resume_id!r} in {args.store!r}; runs: "
                             + ", ".join(ids[-5:]))
    old_plan: list[dict] = []
    if resume_id:
        old_plan = store_mod.run_plan(args.store, resume_id)
    if resume_id and not gave_sweep_options:
        cells = old_plan
    elif getattr(args, "tuned", None):
        from pinnbench.tuning_cli import tuned_cells

        cells = tuned_cells(args, command)
    else:
        config = _sweep_config(args)
        try:
            cells = plan(config, command=command)
        except (ValueError, TypeError) as exc:
            raise UsageError(str(exc)) from None
        if resume_id:
            change = plan_change(old_plan, cells)
            if change:
                raise UsageError(f"--resume {resume_id}: the options change the run's plan "
                                 f"({change}); resume without sweep options to run its own "
                                 "plan, or drop --resume to start a new run")
    planned = _plan(args, cells, resume_id)
    if args.dry_run:
        return 0
    executor = _make_executor(args, cells)
    try:
        return _run_and_record(args, command, cells, resume_id, executor, planned)
    finally:
        executor.close()


def _apply_preset(args) -> None:
    """--preset NAME: its options fill those the command line does not give."""
    if not getattr(args, "preset", None):
        return
    from pinnbench.presets import PRESETS

    preset = build_parser().parse_args(["run", *PRESETS[args.preset]])
    for key in _SWEEP_OPTIONS:
        if getattr(args, key) is None and getattr(preset, key) is not None:
            setattr(args, key, getattr(preset, key))


def _may_mkdir(args) -> bool:
    """Folders are made for the store only when asked (--mkdir), or for the default store."""
    return bool(args.mkdir) or Path(args.store) == DEFAULT_PATH


def _plan(args, cells: list[dict], resume_id: str | None):
    """The plan of the cells still to run (:mod:`pinnbench.plan`), printed before any starts;
    history comes from the store (read-only), the rest from a calibration."""
    import socket

    from pinnbench import memory, plan as plan_mod, store as store_mod
    from pinnbench.provenance import cpu_model

    stored: list[dict] = []
    if Path(args.store).exists():
        df = store_mod.load_results(args.store)
        stored = [{k: (None if _isna(v) else v) for k, v in r.items()}
                  for r in df.to_dict("records")]
    done = {r["cell_id"] for r in stored if r["run_id"] == resume_id
            and r["status"] in store_mod.DONE_STATUSES} if resume_id else set()
    from pinnbench.cell import cell_id

    todo = [c for c in cells if cell_id(c) not in done]
    planned = plan_mod.make_plan(todo, free_bytes=memory.available_host_bytes() or None,
                                 baseline_bytes=memory.current_cpu_bytes(), stored_rows=stored,
                                 machine=(socket.gethostname(), cpu_model()))
    if args.json:
        print(json.dumps({"event": "plan", **plan_mod.as_json(planned)}), flush=True)
    elif not args.quiet:
        for line in plan_mod.render(planned, jobs=_parallel_cells(args)):
            print(line, flush=True)
        if args.dry_run:
            print(f"dry run: nothing run, {args.store} untouched", flush=True)
    return planned


def plan_change(old: list[dict], new: list[dict]) -> str | None:
    """How plan ``new`` differs from ``old`` (None when they hold the same cells with the same
    settings; the command line that made them does not count)."""
    from pinnbench.cell import cell_id

    def key(c: dict) -> dict:  # a field a stored plan predates reads as its default
        return {k: v for k, v in {**CELL_DEFAULTS, **c}.items() if k not in ("command", "run_id")}

    old_by, new_by = {cell_id(c): key(c) for c in old}, {cell_id(c): key(c) for c in new}
    added, dropped = set(new_by) - set(old_by), set(old_by) - set(new_by)
    if added or dropped:
        keys = sorted({k for a in added for b in dropped for k in set(new_by[a]) | set(old_by[b])
                       if new_by[a].get(k) != old_by[b].get(k)}) if added and dropped else []
        what = f"; differing: {', '.join(keys[:6])}" if keys else ""
        return f"{len(added)} cells added, {len(dropped)} dropped{what}"
    keys = sorted({k for i in new_by for k in set(new_by[i]) | set(old_by[i])
                   if new_by[i].get(k) != old_by[i].get(k)})
    return f"settings changed: {', '.join(keys)}" if keys else None


def _describe_executor(args) -> str:
    if args.executor == "dask":
        where = args.scheduler or f"LocalCluster({args.local_workers} workers)"
        return f"dask {where}"
    return f"local ({args.jobs or 1} jobs)"


def _run_and_record(args, command: str, cells: list[dict], resume_id: str | None,
                    executor, planned=None) -> int:
    from pinnbench import store as store_mod
    from pinnbench.cell import now_iso
    from pinnbench.machine_load import load_average, overload_warning, physical_cores
    from pinnbench.provenance import collect
    from pinnbench.run_lease import planner_id
    from pinnbench.plan import skipped_row as plan_skipped_row
    from pinnbench.sweep import execute_sweep

    # -- validated: from here on we write ----------------------------------------------------------
    st = store_mod.Store(args.store, mkdir=_may_mkdir(args))
    started = now_iso()
    me = planner_id()
    if resume_id:
        run_id = resume_id
        try:
            st.claim_run(run_id, me, started)  # refused while another planner runs it
        except store_mod.RunBusyError as exc:
            st.close()
            raise UsageError(str(exc)) from None
        done = st.done_cells(run_id)
    else:
        run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        done = set()
        provenance = collect("cpu", command=command)
        provenance["executor"] = _describe_executor(args)
        provenance["physical_cores"] = physical_cores()
        provenance["load_avg_1m_at_start"] = load_average()
        st.begin_run(run_id, command, started, cells, provenance, planner=me)
    from pinnbench.cell import cell_id

    todo = [c for c in cells if cell_id(c) not in done]
    skips = {cell_id(p.spec): p.reason for p in planned.skipped} if planned else {}
    estimates = {cell_id(p.spec): p.estimate.time_s for p in planned.cells} if planned else {}
    mode = "json" if args.json else "quiet" if args.quiet else "rich"
    ui = RunUI(mode, run_id, len(todo), len(cells) - len(todo), args.store, estimates)
    warnings = [w for w in (_budget_warning(cells), overload_warning()) if w]
    t0 = time.monotonic()
    rows: list[dict] = []
    status = "finished"

    def _terminate(signum, frame):  # SIGTERM: stop like Ctrl-C (kill the cells, mark the run)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        with ui:
            for w in warnings:
                ui.warn(w)
            for spec in todo:  # what the plan skips is stored as such, with its reason
                if cell_id(spec) in skips:
                    row = plan_skipped_row({**spec, "run_id": run_id}, skips[cell_id(spec)])
                    st.write_row(row)
                    rows.append(row)
                    ui.result(row)
            todo = [c for c in todo if cell_id(c) not in skips]
            rows += execute_sweep(todo, run_id=run_id, write=st.write_row, executor=executor,
                                 prune=not args.no_prune, on_start=ui.start, on_result=ui.result,
                                 heartbeat=lambda: st.heartbeat(run_id, now_iso()))
    except KeyboardInterrupt:
        status = "interrupted"
        st.finish_run(run_id, now_iso(), status)
        st.close()
        print(f"interrupted: finished cells are in {args.store} (run {run_id}); "
              f"`pinnbench run --resume --store {args.store}` runs the rest", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    st.finish_run(run_id, now_iso(), status)
    st.close()
    wall = time.monotonic() - t0
    n_error = sum(r["status"] == "error" for r in rows)
    report_path, report_note = None, ""
    if args.report and rows:
        report_path, report_note = _write_report(args.store, args.report_dir, run_id, False)
    ui.summary(rows, wall, report_path, report_note)
    return 1 if n_error else 0


def _budget_warning(cells: list[dict]) -> str | None:
    if not any(c.get("time_budget_s") for c in cells):
        return None
    return ("a time budget (--time-budget) stops each cell after a number of steps that depends "
            "on the machine's speed and load, so the errors do too; give --steps alone for "
            "results that reproduce")


def _write_report(store: str, out: str | None, run_id: str | None,
                  all_runs: bool) -> tuple[Path | None, str]:
    try:
        from pinnbench.report import ReportError, write_report
    except ImportError as exc:
        return None, f"no report written: the report module is not available ({exc})"
    out_dir = Path(out) if out else REPORTS_DIR / ("all" if all_runs else (run_id or "latest"))
    try:
        return write_report(store, out_dir, run_id=run_id, all_runs=all_runs), ""
    except ReportError as exc:
        return None, f"no report written: {exc}"
    except OSError as exc:
        return None, f"no report written: {_os_error_text(exc, out_dir)}"


def _os_error_text(exc: OSError, path: Path) -> str:
    """One line for a failed write: what could not be written and why."""
    where = exc.filename if getattr(exc, "filename", None) else path
    return f"cannot write {str(where)!r}: {exc.strerror or exc}"


# -- ablate ---------------------------------------------------------------------------------------
def _option_values(options: list[str], flag: str) -> list[str]:
    """Every value of ``flag`` in ``options``, in order (``--flag V`` or ``--flag=V``)."""
    values = []
    for i, o in enumerate(options):
        if o == flag and i + 1 < len(options):
            values.append(options[i + 1])
        elif o.startswith(flag + "="):
            values.append(o.split("=", 1)[1])
    return values


def ablate_argv(base: str, run_options: list[str]) -> list[str]:
    """The `pinnbench run` command line of an ablation: the base spec and its one-factor variants
    (:func:`pinnbench.solver.ablation_specs`, what the solver declares) as --solvers, then the
    given options."""
    from pinnbench.solver import ablation_specs, parse_spec
    from pinnbench.sweep import with_points

    if any(o == "--solvers" or o.startswith("--solvers=") for o in run_options):
        raise UsageError("ablate takes its solvers from SOLVER and its variants; drop --solvers")
    _import_plugins(_option_values(run_options, "--import"))  # a plugin solver must be registered
    points = (_option_values(run_options, "--points") or [None])[-1]  # the last one wins
    points = int(points) if points is not None and points.isdigit() and int(points) > 0 else None
    try:
        # the variants are written out whole (points included), so --points goes into the base
        # first: with_points later leaves a spec that names its points alone
        specs = ablation_specs(with_points(base, points))
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    if len(specs) < 2:
        raise UsageError(f"solver {parse_spec(base)[0]!r} declares no ablations, so there are no "
                         "variants to run (a solver declares them as a class attribute "
                         "`ablations` of (parameter, values) pairs)")
    return ["run", "--solvers", ",".join(specs), *run_options]


# -- list, show, export, report ---------------------------------------------------------------------
def cmd_list(args) -> int:
    _import_plugins(args.imports)
    con = _console()
    if args.what == "problems":
        from pinnbench.console import problem_domain
        from pinnbench.problem_registry import list_problems, problem_class

        ids = list_problems()
        width = max(len(p) for p in ids) if ids else 0
        for pid in ids:
            cls = problem_class(pid)
            terms = "+".join(cls.operator.names) or "-"
            gpinn = "gPINN" if cls.supports_gpinn else ""
            bcs = "; ".join(cls.boundary_conditions)
            con.print(f"{pid:{width}s}  order {cls.order}  terms {terms:12s} d >= {cls.min_dim}  "
                      f"{gpinn:5s}  {problem_domain(pid)}{'  (' + bcs + ')' if bcs else ''}",
                      markup=False)
            if not cls.well_posed:
                con.print(f"{'':{width}s}  ILL-POSED: {cls.ill_posed_reason}", markup=False)
        return 0
    from pinnbench.solver import SOLVERS, format_value, list_solvers

    for name in list_solvers():
        cls = SOLVERS.get(name)
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        con.print(f"[bold]{escape(name)}[/]  {escape(doc[0]) if doc else ''}")
        for pname, p in sorted(cls.all_parameters().items()):
            setting = f"{pname}={format_value(p.default)}"
            con.print(f"    {setting:<20} {p.describe():28s} {p.help}", highlight=False,
                      markup=False)
    return 0


def _select_run(args) -> str | None:
    from pinnbench import store as store_mod

    try:
        store_mod.check_store(args.store, must_exist=True, writable=False)
        runs = store_mod.list_runs(args.store)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    if args.all:
        if args.run:
            raise UsageError("give --run ID or --all, not both")
        return None
    if not runs:
        raise UsageError(f"the store {args.store!r} holds no run yet")
    ids = [r["run_id"] for r in runs]
    if args.run:
        if args.run not in ids:
            raise UsageError(f"no run {args.run!r} in {args.store!r}; runs: {', '.join(ids[-5:])}")
        return args.run
    return ids[-1]


def cmd_show(args) -> int:
    from pinnbench import store as store_mod
    from pinnbench.run_lease import shown_status

    run_id = _select_run(args)
    df = store_mod.load_results(args.store, run_id=run_id)
    rows = [{k: (None if _isna(v) else v) for k, v in r.items()} for r in df.to_dict("records")]
    con = _console()
    for r in store_mod.list_runs(args.store):
        if run_id is None or r["run_id"] == run_id:
            status = shown_status(r["status"], r["planner"], r["heartbeat"])
            con.print(f"run {r['run_id']}  {status}  {r['started_at']} -> "
                      f"{r['finished_at'] or '...'}  {r['n_cells']} cells  {r['command']}",
                      markup=False)
    con.print(summary_table(rows))
    if rows:
        print_verdict(con, rows)
    return 0


def _isna(v: Any) -> bool:
    try:
        import pandas as pd

        return v is None or (not isinstance(v, (list, dict, str)) and bool(pd.isna(v)))
    except (TypeError, ValueError):
        return False


def cmd_export(args) -> int:
    """Write the rows as CSV or parquet. The output must be a new file or an earlier export
    (same columns) unless --force; a folder or an unwritable path is bad usage (exit 2)."""
    from pinnbench import store as store_mod
    from pinnbench.schema import JSON_COLUMNS

    out = Path(args.out or f"results/pinnbench.{args.format}")
    _check_export_path(out, args.format, args.force)
    run_id = _select_run(args) if (args.run or not args.all) else None
    df = store_mod.load_results(args.store, run_id=None if args.all else run_id)
    for name in JSON_COLUMNS:
        df[name] = [json.dumps(v, default=str) for v in df[name]]
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "csv":
            df.to_csv(tmp, index=False)
        else:
            try:
                df.to_parquet(tmp, index=False)
            except ImportError as exc:
                raise UsageError(f"parquet needs pyarrow ({exc}); use --format csv") from None
        os.replace(tmp, out)
    except OSError as exc:
        raise UsageError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    print(f"wrote {len(df)} rows to {out}")
    return 0


def _check_export_path(out: Path, fmt: str, force: bool) -> None:
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder; give a file path such as "
                         f"{out / ('pinnbench.' + fmt)}")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write --out {str(out)!r}: {str(parent)!r} is not a folder")
    if out.exists() and not force and not _is_export(out):
        raise UsageError(f"--out {str(out)!r} exists and is not a pinnbench export; give a new "
                         "path, or --force to overwrite it")


def _is_export(path: Path) -> bool:
    """True for a file that ``pinnbench export`` wrote: CSV with the schema's header, or parquet
    with the schema's columns."""
    from pinnbench.schema import COLUMNS

    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if head.startswith(b"PAR1"):
        try:
            import pyarrow.parquet as pq

            return set(COLUMNS) <= set(pq.read_schema(path).names)
        except Exception:  # noqa: BLE001 - not readable as parquet: not ours
            return False
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return first.split(",")[:2] == list(COLUMNS)[:2] and set(first.split(",")) >= set(COLUMNS)


def cmd_report(args) -> int:
    """An empty, missing or unreadable store, or an --out that is not a report folder, is bad
    usage (exit 2), not a blank page or a traceback."""
    from pinnbench.report import ReportError, check_out_dir, write_report

    run_id = _select_run(args)
    out_dir = Path(args.out) if args.out else (
        REPORTS_DIR / ("all" if args.all else (run_id or "latest")))
    try:
        check_out_dir(out_dir, force=args.force)
        path = write_report(args.store, out_dir, run_id=run_id, all_runs=args.all,
                            force=args.force)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(_os_error_text(exc, out_dir)) from None
    print(f"Report: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if args.command == "run":
            return cmd_run(args, argv)
        if args.command == "tune":
            from pinnbench.tuning_cli import cmd_tune

            return cmd_tune(args, argv)
        if args.command == "show" and args.studies:
            from pinnbench.tuning_cli import cmd_show_studies

            return cmd_show_studies(args)
        if args.command == "ablate":
            run_argv = ablate_argv(args.base, args.run_options)
            return cmd_run(parser.parse_args(run_argv), run_argv)
        return {"list": cmd_list, "show": cmd_show, "export": cmd_export,
                "report": cmd_report}[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
