"""The command line of the tuning protocol: ``pinnbench tune``, ``pinnbench show --studies`` and
the cells of ``pinnbench run --tuned`` (docs/tuning.md). :mod:`pinnbench.cli` holds only their
parsers' hooks and the dispatch; bad input is :class:`pinnbench.commands.usage.UsageError` (one line,
exit 2, nothing written).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from pinnbench.commands.run_options import DEFAULT_RUN
from pinnbench.cells.store import DEFAULT_PATH
from pinnbench.tuning.study import (DEFAULT_SEEDS, DEFAULT_TRIALS, SAMPLERS, TUNE_TIMEOUT_S,
                              Protocol, TuningError, check_equal_protocol, default_study_store, protocol_differences,
                              require_optuna, storage_url, summarize)
from pinnbench.commands.usage import UsageError, import_plugins

TUNE_EPILOG = """\
One protocol for every solver (docs/tuning.md): for each (solver spec, problem, d), --trials
trials of the solver's declared search space (what the spec fixes is not searched), drawn by a
seeded Sobol (qmc) or random sampler, each trial run for --steps steps on every seed as isolated
cells (they land in the results store as a run); the objective is the median over seeds of the
final relative L2 error on the validation set (a failed or diverged seed counts +inf), and the
lowest wins. The studies go to an Optuna SQLite store beside the results store; rerun the same
command to resume an interrupted tune. `pinnbench show --studies` lists them, and
`pinnbench run --tuned STUDY_STORE_OR_NAME` runs each (solver, problem, d) at its choice.
"""


def _usage(message: str) -> UsageError:
    return UsageError(message)


#: the most trials one study may ask for (a bound at parse time, as every numeric option has)
MAX_TRIALS = 10_000


def add_tune_parser(sub) -> None:
    """The ``tune`` subcommand's options (the lists read as `pinnbench run` reads them)."""
    from pinnbench.commands.option_types import (MAX_DEPTH, MAX_PROCESSES, MAX_THREADS, MAX_WIDTH,
                                         int_option, seconds_option)

    t = sub.add_parser("tune", help="tune solvers under one protocol (Optuna studies)",
                       description="Tune every solver spec on every (problem, d) with the same "
                       "trials, sampler, budget and selection rule.", epilog=TUNE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--solvers", help=f"comma-separated solver specs (default {DEFAULT_RUN['solvers']})")
    t.add_argument("--problems", help=f"comma-separated problem ids (default {DEFAULT_RUN['problems']})")
    t.add_argument("--dims", help=f"dimensions as for run (default {DEFAULT_RUN['dims']})")
    t.add_argument("--seeds", help="seeds of every trial, at least 2 (default 0..1)")
    t.add_argument("--steps", type=int_option("--steps"),
                   help=f"budget of a trial in steps (default {DEFAULT_RUN['steps']}, the run's)")
    t.add_argument("--trials", type=int_option("--trials", maximum=MAX_TRIALS),
                   help=f"trials per study (default {DEFAULT_TRIALS})")
    t.add_argument("--sampler", choices=SAMPLERS, default="qmc",
                   help="seeded scrambled Sobol points (qmc, default) or seeded random search")
    t.add_argument("--width", type=int_option("--width", maximum=MAX_WIDTH), help="MLP width (default 128)")
    t.add_argument("--depth", type=int_option("--depth", maximum=MAX_DEPTH), help="hidden layers (default 3)")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:<index> (default cpu)")
    t.add_argument("--dtype", help="float32 or float64 (default float32)")
    t.add_argument("--timeout", type=seconds_option("--timeout"), metavar="SECONDS",
                   help=f"wall-clock limit per cell, a hang guard: the budget is --steps "
                        f"(default {TUNE_TIMEOUT_S:g})")
    t.add_argument("--jobs", type=int_option("--jobs", maximum=MAX_PROCESSES), help="cells at once (default 1)")
    t.add_argument("--threads", type=int_option("--threads", maximum=MAX_THREADS),
                   help="torch threads per cell (default: free physical cores / jobs)")
    t.add_argument("--import", dest="imports", action="append", metavar="MODULE_OR_FILE",
                   help="import a plugin module or file (repeatable)")
    t.add_argument("--store", default=str(DEFAULT_PATH), help=f"results store (default {DEFAULT_PATH})")
    t.add_argument("--mkdir", action="store_true",
                   help="create the store's folders if they do not exist (as for run)")
    t.add_argument("--study-store", metavar="PATH",
                   help="Optuna SQLite file of the studies (default: beside --store, "
                   f"{default_study_store(DEFAULT_PATH)})")
    t.add_argument("--quiet", action="store_true", help="print nothing but errors")


def check_study_store(path: Path, must_exist: bool) -> None:
    """UsageError unless ``path`` is an Optuna SQLite store (or, not ``must_exist``, a place
    where one can be created). Reads only."""
    import os
    import sqlite3

    if path.exists():
        if not path.is_file():
            raise _usage(f"study store {str(path)!r} is not a file; give a path such as "
                         f"{default_study_store(DEFAULT_PATH)}")
        if path.stat().st_size == 0:
            return
        with open(path, "rb") as fh:
            if fh.read(16) != b"SQLite format 3\x00":
                raise _usage(f"{str(path)!r} is not a SQLite file, so not a study store")
        try:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                tables = {r[0] for r in con.execute(
                    "SELECT name FROM sqlite_master WHERE type='table'")}
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise _usage(f"{str(path)!r} is not a readable SQLite file ({exc})") from None
        if tables and "studies" not in tables:
            raise _usage(f"{str(path)!r} is a SQLite file but not an Optuna study store"
                         + (" (it is a results store: give --study-store another path)"
                            if "results" in tables else ""))
        if not must_exist and not os.access(path, os.W_OK):
            raise _usage(f"study store {str(path)!r} is not writable by you")
        return
    if must_exist:
        raise _usage(f"no study store at {str(path)!r}; run `pinnbench tune` first")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise _usage(f"cannot create study store {str(path)!r}: {str(parent)!r} is not a "
                     "writable folder")


def _lists(args) -> tuple[list[str], list[str], list[int], list[int]]:
    from pinnbench.commands.axes import parse_dims, parse_seeds, split_top_level

    try:
        solvers = split_top_level(args.solvers if args.solvers is not None
                                  else DEFAULT_RUN["solvers"])
        problems = split_top_level(args.problems if args.problems is not None
                                   else DEFAULT_RUN["problems"])
        dims = parse_dims(args.dims if args.dims is not None else DEFAULT_RUN["dims"])
        seeds = parse_seeds(args.seeds) if args.seeds is not None else list(DEFAULT_SEEDS)
    except (ValueError, TypeError) as exc:
        raise _usage(str(exc)) from None
    return solvers, problems, dims, seeds


def cmd_tune(args, argv: Sequence[str]) -> int:
    from pinnbench.cells import store as store_mod
    from pinnbench.cells.machine_load import default_threads
    from pinnbench.maths.problem_registry import resolve_device, resolve_dtype
    from pinnbench.cells.executors import LocalExecutor
    from pinnbench.tuning import trials as tuning_run
    from pinnbench.commands.run_lifecycle import command_line, record_run

    command = command_line(argv)
    try:
        require_optuna()
    except TuningError as exc:
        raise _usage(str(exc)) from None
    import_plugins(args.imports)
    solvers, problems, dims, seeds = _lists(args)
    try:
        device = str(resolve_device(args.device or "cpu"))
        dtype = str(resolve_dtype(args.dtype or "float32")).replace("torch.", "")
        protocol = Protocol(steps=args.steps or DEFAULT_RUN["steps"], seeds=tuple(seeds),
                            trials=args.trials or DEFAULT_TRIALS, sampler=args.sampler,
                            width=args.width or 128, depth=args.depth or 3, dtype=dtype,
                            device=device)
    except (ValueError, TypeError) as exc:
        raise _usage(str(exc)) from None
    if device.startswith("cuda") and (args.jobs or 1) > 1:
        raise _usage(f"--jobs {args.jobs} would put several cells on one GPU at once; use "
                     "--jobs 1 on cuda")
    threads = args.threads
    if threads is None and device == "cpu":
        threads = default_threads(args.jobs or 1)
    options = {"timeout_s": args.timeout or TUNE_TIMEOUT_S, "threads": threads,
               "imports": list(args.imports or []), "command": command}
    # as run: folders made only for the default store, or when asked
    mkdir = bool(args.mkdir) or Path(args.store) == DEFAULT_PATH
    try:
        store_mod.check_store(args.store, mkdir=mkdir)
    except store_mod.StoreError as exc:
        raise _usage(str(exc)) from None
    study_path = Path(args.study_store) if args.study_store else default_study_store(args.store)
    check_study_store(study_path, must_exist=False)
    try:
        plan = tuning_run.prepare(solvers, problems, dims, protocol, options)
        if study_path.exists() and study_path.stat().st_size:
            tuning_run.check_existing(storage_url(study_path), plan)
    except TuningError as exc:
        raise _usage(str(exc)) from None

    # -- validated: from here on we write ---------------------------------------------------------
    study_path.parent.mkdir(parents=True, exist_ok=True)
    url = storage_url(study_path)
    studies = tuning_run.open_studies(url, plan)
    cells = tuning_run.trial_cells(plan, studies)
    rows: list[dict] = []
    t0 = time.monotonic()
    code = 0
    if cells:
        recorder = tuning_run.TrialRecorder(plan, studies, cells)

        def on_result(row: dict) -> None:
            recorder(row)
            rows.append(row)

        executor = LocalExecutor(args.jobs or 1)
        try:
            code = record_run(args.store, [c.spec for c in cells], command=command,
                              resume_id=None, executor=executor, mkdir=mkdir,
                              executor_text=f"local ({args.jobs or 1} jobs)",
                              ui_mode="quiet" if args.quiet else "rich", prune=False,
                              report=False, summary=False, on_result=on_result,
                              extra_provenance={"study_store": str(study_path)},
                              resume_hint=f"finished trials are in {study_path}; the same "
                              "`pinnbench tune` command resumes")
        finally:
            executor.close()
        if code == 130:
            return code
    if not args.quiet:
        names = {sp.name for sp in plan.studies}
        chosen = [s for s in summarize(url) if s.name in names]
        print_studies(chosen)
        wall = time.monotonic() - t0
        where = (f"results: {args.store} (run {rows[0]['run_id']})" if rows
                 else "nothing left to run")
        print(f"{len(rows)} cells in {wall:.1f} s; studies: {study_path}; {where}")
    return code


def _fmt(v: float | None) -> str:
    return "-" if v is None else ("inf" if math.isinf(v) else f"{v:.4g}")


def print_studies(studies) -> None:
    """One block per study: trials done, the chosen trial's objective and parameters, what
    failed; then whether the studies share one protocol."""
    from pinnbench.report.console import console

    con = console()
    for s in studies:
        best = s.best
        failed: dict[str, int] = {}
        for t in s.trials:
            for cell in t["seeds"].values():
                if cell.get("status") != "ok":
                    failed[cell.get("status")] = failed.get(cell.get("status"), 0) + 1
        fails = ", ".join(f"{n} {k}" for k, n in sorted(failed.items()))
        con.print(f"study {s.name}", markup=False, highlight=False)
        con.print(f"    {s.n_complete}/{s.n_trials} trials done"
                  f"{'; seeds not ok: ' + fails if fails else ''}", markup=False, highlight=False)
        if best is None:
            con.print("    no trial with a finite objective yet", markup=False)
        else:
            params = ",".join(f"{k}={v}" for k, v in sorted(best["params"].items()))
            con.print(f"    best: trial {best['number']}, median validation rel L2 "
                      f"{_fmt(best['value'])}: {params}", markup=False, highlight=False)
    if len(studies) > 1:
        diffs = protocol_differences(studies)
        con.print("one protocol for all studies: " + ("yes" if not diffs else
                  "NO: " + " | ".join(diffs)), markup=False, highlight=False)


def cmd_show_studies(args) -> int:
    try:
        require_optuna()
    except TuningError as exc:
        raise _usage(str(exc)) from None
    path = Path(args.study_store) if args.study_store else default_study_store(args.store)
    check_study_store(path, must_exist=True)
    studies = summarize(storage_url(path))
    if not studies:
        raise _usage(f"the study store {str(path)!r} holds no pinnbench study")
    print_studies(studies)
    return 0


def tuned_cells(args, command: str) -> list[dict[str, Any]]:
    """The cells of ``pinnbench run --tuned SOURCE``: SOURCE is a study store (a file) or the
    name of a study in the store beside --store. Each (solver, problem, d) of the plan (the
    --solvers/--problems/--dims given, else the studies' own) runs at its study's chosen
    configuration, its cells marked ``tuned_study``; UsageError when one has no study, or the
    studies used were not tuned alike."""
    from pinnbench.cells.cellspec import CellSpec
    from pinnbench.commands.axes import parse_dims, split_top_level
    from pinnbench.commands.run_options import sweep_config
    from pinnbench.cells.sweep import interleaved, plan
    from pinnbench.tuning.study import base_spec

    try:
        require_optuna()
    except TuningError as exc:
        raise _usage(str(exc)) from None
    config = sweep_config(args)
    source = Path(args.tuned)
    names = None
    if not source.is_file():
        names, source = [args.tuned], default_study_store(args.store)
        if not source.is_file():
            raise _usage(f"--tuned {args.tuned!r}: neither a study store nor a study (no study "
                         f"store at {str(source)})")
    check_study_store(source, must_exist=True)
    studies = summarize(storage_url(source))
    if names is not None:
        studies = [s for s in studies if s.name in names]
        if not studies:
            raise _usage(f"--tuned {args.tuned!r}: no such study in {str(source)!r} "
                         "(`pinnbench show --studies` lists them)")
    try:
        want_solvers = ([base_spec(s)[2] for s in split_top_level(args.solvers)]
                        if args.solvers is not None else sorted({s.solver for s in studies}))
        want_problems = (split_top_level(args.problems) if args.problems is not None
                         else sorted({s.problem for s in studies}))
        want_dims = parse_dims(args.dims) if args.dims is not None \
            else sorted({s.dim for s in studies})
    except (ValueError, TypeError) as exc:
        raise _usage(str(exc)) from None
    keyed: list[tuple[Any, str]] = []
    untuned: dict[str, str] = {}  # study name -> why nothing runs (no trial trained)
    for solver in want_solvers:
        for problem in want_problems:
            for dim in want_dims:
                found = [s for s in studies
                         if (s.solver, s.problem, s.dim) == (solver, problem, dim)]
                if not found:
                    raise _usage(f"--tuned: no study for {solver} on {problem} at d = {dim} in "
                                 f"{str(source)!r}; tune it first (pinnbench tune)")
                if len(found) > 1:
                    raise _usage(f"--tuned: {len(found)} studies for {solver} on {problem} at "
                                 f"d = {dim} ({', '.join(s.name for s in found)}); give one "
                                 "study name")
                why = found[0].no_choice
                if why:  # a result of the protocol, recorded as such
                    untuned[found[0].name] = f"not run: {why}"
                    print(f"warning: --tuned: {why}; its cells are stored as skipped",
                          file=sys.stderr)
                    keyed.append((found[0], found[0].solver))
                    continue
                try:
                    keyed.append((found[0], found[0].chosen_spec(config.steps)))
                except (TuningError, ValueError) as exc:
                    raise _usage(f"--tuned: {exc}") from None
    try:
        check_equal_protocol([s for s, _ in keyed])
    except TuningError as exc:
        raise _usage(f"--tuned: {exc}") from None
    budgets = sorted({int(s.protocol["steps"]) for s, _ in keyed})
    if budgets and budgets != [config.steps]:
        this = (f"this run takes {config.steps}" if config.steps is not None
                else "this run stops on a time budget")
        print(f"warning: --tuned: the studies chose at {', '.join(map(str, budgets))} steps and "
              f"{this}: a tuned lr is chosen for its budget's schedule (decay_steps=budget "
              "stretches with the run; docs/tuning.md)", file=sys.stderr)
    cells: list[dict[str, Any]] = []
    for study, spec in keyed:
        one = replace(config, problems=[study.problem], solvers=[spec], dims=[study.dim],
                      width=args.width or study.protocol["width"],
                      depth=args.depth or study.protocol["depth"])
        try:
            cells += [CellSpec.from_dict({**c, "tuned_study": study.name,
                                          "untuned": untuned.get(study.name)}).to_dict()
                      for c in plan(one, command=command)]
        except (ValueError, TypeError) as exc:
            raise _usage(str(exc)) from None
    return interleaved(cells)  # a sweep's run order: the solvers of one seed together
