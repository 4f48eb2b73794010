"""``pinnbench run``: the command line mapped onto a sweep (:class:`pinnbench.cells.sweep.SweepConfig`,
``--resume``'s own plan, or ``--tuned``'s studies), the executor it asks for, the plan printed
before anything starts, then the run recorded (:mod:`pinnbench.commands.run_lifecycle`). Bad input is a
:class:`pinnbench.commands.usage.UsageError` (one line, exit 2, nothing written).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pinnbench.commands.results import isna
from pinnbench.commands.run_lifecycle import command_line, plan_change, record_run, resumed_run
from pinnbench.cells.store import DEFAULT_PATH, StoreError
from pinnbench.commands.run_options import parallel_cells, sweep_config, sweep_options
from pinnbench.commands.usage import UsageError, import_plugins

#: with --executor dask: how long the cluster may have no worker before cells in flight fail
NO_WORKER_TIMEOUT_S = 600.0

@dataclass(frozen=True)
class ExecutorChoice:
    """The executor the options ask for, checked (:func:`executor_choice`)."""

    kind: str  # "local" or "dask"
    jobs: int | None = None
    scheduler: str | None = None
    local_workers: int | None = None
    no_worker_timeout_s: float = NO_WORKER_TIMEOUT_S

    def describe(self) -> str:
        if self.kind == "dask":
            return f"dask {self.scheduler or f'LocalCluster({self.local_workers} workers)'}"
        return f"local ({self.jobs or 1} jobs)"


def executor_choice(args) -> ExecutorChoice:
    """--executor and its options, checked before anything is started or written (usage
    errors; the scheduler's address when the executor is made, :func:`make_executor`)."""
    if args.executor != "dask":
        for name, value in (("--scheduler", args.scheduler),
                            ("--local-workers", args.local_workers),
                            ("--no-worker-timeout", args.no_worker_timeout)):
            if value is not None:
                raise UsageError(f"{name} needs --executor dask")
        return ExecutorChoice("local", jobs=args.jobs)
    if args.jobs is not None:
        raise UsageError("--jobs is for the local executor; with --executor dask use "
                         "--local-workers N or size the cluster")
    if (args.scheduler is None) == (args.local_workers is None):
        raise UsageError("--executor dask needs either --scheduler ADDRESS (a running cluster, "
                         "e.g. tcp://host:8786) or --local-workers N (a local cluster)")
    from pinnbench.cells.executors import DASK_MISSING, dask_available

    if not dask_available():
        raise UsageError(DASK_MISSING)
    return ExecutorChoice("dask", scheduler=args.scheduler, local_workers=args.local_workers,
                          no_worker_timeout_s=NO_WORKER_TIMEOUT_S
                          if args.no_worker_timeout is None else args.no_worker_timeout)


def make_executor(choice: ExecutorChoice, cells: list[dict]):
    """The executor ``choice`` names (a started cluster or a connected client for dask); a bad
    scheduler address or an unreachable cluster is a usage error."""
    from pinnbench.cells.executors import (DaskExecutor, ExecutorError, LocalExecutor,
                                           check_scheduler_address)

    if choice.kind == "local":
        return LocalExecutor(choice.jobs or 1)
    if choice.scheduler is not None:
        try:
            check_scheduler_address(choice.scheduler)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    gpu = any(str(c.get("device", "cpu")).startswith("cuda") for c in cells)
    try:
        ex = DaskExecutor.from_options(scheduler=choice.scheduler,
                                       local_workers=choice.local_workers, gpu=gpu,
                                       no_worker_timeout_s=choice.no_worker_timeout_s)
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
    from pinnbench.cells import store as store_mod
    from pinnbench.cells.sweep import plan

    command = command_line(argv)
    mkdir = may_mkdir(args)
    show = PlanDisplay(args.store, "json" if args.json else "quiet" if args.quiet else "rich",
                       parallel_cells(args), args.dry_run)
    import_plugins(args.imports)
    try:
        store_mod.check_store(args.store, mkdir=mkdir)
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
        from pinnbench.commands.tune import tuned_cells

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
    planned = print_plan(show, cells, resume_id)
    choice = executor_choice(args)  # usage errors still before anything starts or is written
    if show.dry_run:
        return 0
    executor = make_executor(choice, cells)
    try:
        return record_run(args.store, cells, command=command, resume_id=resume_id,
                          executor=executor, planned=planned, mkdir=mkdir,
                          executor_text=choice.describe(), ui_mode=show.mode,
                          prune=not args.no_prune, report=args.report,
                          report_dir=args.report_dir)
    finally:
        executor.close()


def may_mkdir(args) -> bool:
    """Folders are made for the store only when asked (--mkdir), or for the default store."""
    return bool(args.mkdir) or Path(args.store) == DEFAULT_PATH


@dataclass(frozen=True)
class PlanDisplay:
    """How the plan is shown: the store it reads history from, the UI ``mode`` (rich, quiet or
    json), the cells run at once (they split the CPU threads) and whether this is a dry run."""

    store: str
    mode: str
    jobs: int
    dry_run: bool


def print_plan(show: PlanDisplay, cells: list[dict], resume_id: str | None):
    """The plan of the cells still to run (:mod:`pinnbench.commands.plan`), printed before any starts;
    history comes from the store (read-only), the rest from a calibration."""
    import socket

    from pinnbench import memory
    from pinnbench.commands import plan as plan_mod
    from pinnbench.cells import store as store_mod
    from pinnbench.cells.provenance import cpu_model

    stored: list[dict] = []
    if Path(show.store).exists():
        df = store_mod.load_results(show.store)
        stored = [{k: (None if isna(v) else v) for k, v in r.items()}
                  for r in df.to_dict("records")]
    done = {r["cell_id"] for r in stored if r["run_id"] == resume_id
            and r["status"] in store_mod.DONE_STATUSES} if resume_id else set()
    from pinnbench.cells.cell import cell_id

    todo = [c for c in cells if cell_id(c) not in done]
    planned = plan_mod.make_plan(todo, free_bytes=memory.available_host_bytes() or None,
                                 baseline_bytes=memory.current_cpu_bytes(), stored_rows=stored,
                                 machine=(socket.gethostname(), cpu_model()))
    if show.mode == "json":
        print(json.dumps({"event": "plan", **plan_mod.as_json(planned)}), flush=True)
    elif show.mode != "quiet":
        for line in plan_mod.render(planned, jobs=show.jobs):
            print(line, flush=True)
        if show.dry_run:
            print(f"dry run: nothing run, {show.store} untouched", flush=True)
    return planned
