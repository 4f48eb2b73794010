"""``pinnbench run``: the command line mapped onto a sweep (:class:`pinnbench.sweep.SweepConfig`,
``--resume``'s own plan, or ``--tuned``'s studies), the executor it asks for, the plan printed
before anything starts, then the run recorded (:mod:`pinnbench.run_lifecycle`). Bad input is a
:class:`pinnbench.usage.UsageError` (one line, exit 2, nothing written).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from pinnbench.cellspec import DEFAULTS as CELL_DEFAULTS
from pinnbench.results_cli import isna
from pinnbench.run_lifecycle import command_line, plan_change, record_run, resumed_run
from pinnbench.store import DEFAULT_PATH, StoreError
from pinnbench.usage import UsageError, import_plugins

#: with --executor dask: how long the cluster may have no worker before cells in flight fail
NO_WORKER_TIMEOUT_S = 600.0

#: the built-in run (`pinnbench run` with no options; its help is pinnbench.cli.RUN_EPILOG); what
#: it does not name is a cell's own default (pinnbench.cellspec.CellSpec, declared once)
DEFAULT_RUN = {
    "problems": "poisson-2body-scaled-v1",  # radius sqrt(d): floors that are not trivial
    "solvers": "sdze,bp",
    "dims": "1e2..1e4",
    "seeds": "0",
    "steps": 500,  # the run's training budget (a cell's own default is 100)
    "timeout": 600.0,
}

#: a plan of more cells than this needs --yes (a typo such as --seeds 0..100000 is caught)
MAX_CELLS_WITHOUT_YES = 500



def sweep_config(args) -> "Any":
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
        problems=problems, solvers=solvers, dims=dims, seeds=seeds, **{
            **cell_options(args),  # what the run's defaults or the command's spelling change:
            "steps": None if only_budget else (args.steps or DEFAULT_RUN["steps"]),
            "timeout_s": args.timeout or DEFAULT_RUN["timeout"], "device": device,
            "floors": not args.no_floors},
        points=args.points, jobs=parallel_cells(args),
        auto_threads=not (args.executor == "dask" and args.scheduler))


#: the `pinnbench run` options that set a cell option (:data:`pinnbench.sweep.CELL_OPTIONS`) of
#: another name; every other cell option is the option of its own name, where run has one
OPTION_OF_FIELD = {"time_budget_s": "time_budget", "timeout_s": "timeout",
                   "memory_limit_bytes": "memory_limit"}


def cell_options(args) -> dict[str, Any]:
    """The cell options the command line gives ({CellSpec field: value}); those it does not give
    keep the cell's own default (:class:`pinnbench.cellspec.CellSpec`)."""
    from pinnbench.sweep import CELL_OPTIONS

    given = {name: getattr(args, OPTION_OF_FIELD.get(name, name), None) for name in CELL_OPTIONS}
    return {name: value for name, value in given.items() if value is not None}


def sweep_options(args) -> list[str]:
    """The options of ``args`` that change a run's plan: the axes, --points and the cell
    options' (not --import, which adds plugins and changes nothing a cell does)."""
    from pinnbench.sweep import CELL_OPTIONS

    cell = [OPTION_OF_FIELD.get(name, name) for name in CELL_OPTIONS if name != "imports"]
    return [k for k in ("problems", "solvers", "dims", "seeds", "points", *cell) if hasattr(args, k)]


def parallel_cells(args) -> int:
    """Cells that run at the same time on one machine (used to split its CPU threads)."""
    if args.executor == "dask":
        return args.local_workers or 1
    return args.jobs or 1


def check_executor_options(args) -> None:
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


def make_executor(args, cells: list[dict]):
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


def cmd_run(args, argv: Sequence[str]) -> int:
    from pinnbench import store as store_mod
    from pinnbench.sweep import plan

    command = command_line(argv)
    apply_preset(args)
    check_executor_options(args)
    import_plugins(args.imports)
    try:
        store_mod.check_store(args.store, mkdir=may_mkdir(args))
    except StoreError as exc:
        raise UsageError(str(exc)) from None

    cells: list[dict] = []
    gave_sweep_options = any(getattr(args, k) is not None for k in sweep_options(args))
    resume_id = resumed_run(args.store, args.resume) if args.resume else None
    old_plan: list[dict] = []
    if resume_id:
        old_plan = store_mod.run_plan(args.store, resume_id)
    if resume_id and not gave_sweep_options:
        cells = old_plan
    elif getattr(args, "tuned", None):
        from pinnbench.tuning_cli import tuned_cells

        cells = tuned_cells(args, command)
    else:
        config = sweep_config(args)
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
    planned = print_plan(args, cells, resume_id)
    if args.dry_run:
        return 0
    executor = make_executor(args, cells)
    try:
        return record_run(args.store, cells, command=command, resume_id=resume_id,
                          executor=executor, planned=planned, mkdir=may_mkdir(args),
                          executor_text=describe_executor(args),
                          ui_mode="json" if args.json else "quiet" if args.quiet else "rich",
                          prune=not args.no_prune, report=args.report,
                          report_dir=args.report_dir)
    finally:
        executor.close()


def apply_preset(args) -> None:
    """--preset NAME: its options fill those the command line does not give."""
    if not getattr(args, "preset", None):
        return
    from pinnbench.cli import build_parser
    from pinnbench.presets import PRESETS

    preset = build_parser().parse_args(["run", *PRESETS[args.preset]])
    for key in sweep_options(args):
        if getattr(args, key) is None and getattr(preset, key) is not None:
            setattr(args, key, getattr(preset, key))


def may_mkdir(args) -> bool:
    """Folders are made for the store only when asked (--mkdir), or for the default store."""
    return bool(args.mkdir) or Path(args.store) == DEFAULT_PATH


def print_plan(args, cells: list[dict], resume_id: str | None):
    """The plan of the cells still to run (:mod:`pinnbench.plan`), printed before any starts;
    history comes from the store (read-only), the rest from a calibration."""
    import socket

    from pinnbench import memory, plan as plan_mod, store as store_mod
    from pinnbench.provenance import cpu_model

    stored: list[dict] = []
    if Path(args.store).exists():
        df = store_mod.load_results(args.store)
        stored = [{k: (None if isna(v) else v) for k, v in r.items()}
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
        for line in plan_mod.render(planned, jobs=parallel_cells(args)):
            print(line, flush=True)
        if args.dry_run:
            print(f"dry run: nothing run, {args.store} untouched", flush=True)
    return planned


def describe_executor(args) -> str:
    if args.executor == "dask":
        where = args.scheduler or f"LocalCluster({args.local_workers} workers)"
        return f"dask {where}"
    return f"local ({args.jobs or 1} jobs)"
