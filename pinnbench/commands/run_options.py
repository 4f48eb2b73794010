"""The `pinnbench run` options as a sweep: the built-in run's defaults, the command line mapped
onto a :class:`pinnbench.cells.sweep.SweepConfig` (lists parsed, cell options by their
:class:`pinnbench.cells.cellspec.CellSpec` field names), the options that change a run's plan, and
``--preset``. Used by the run command (:mod:`pinnbench.commands.run`) and by ``--tuned``
(:mod:`pinnbench.commands.tune`), which both build sweeps from the same options.
"""

from __future__ import annotations

from typing import Any, Callable

from pinnbench.cells.cellspec import DEFAULTS as CELL_DEFAULTS
from pinnbench.commands.usage import UsageError

#: the built-in run (`pinnbench run` with no options; its help is pinnbench.cli.RUN_EPILOG); what
#: it does not name is a cell's own default (pinnbench.cells.cellspec.CellSpec, declared once)
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
    """The command line mapped onto a :class:`pinnbench.cells.sweep.SweepConfig`: lists parsed, the
    options the executors need checked; each cell is validated once, by ``sweep.plan``
    (:class:`pinnbench.cells.cellspec.CellSpec`), whose ValueError ``cmd_run`` turns into a usage
    error before anything is written."""
    from pinnbench.commands.axes import parse_dims, parse_seeds, split_top_level
    from pinnbench.maths.problem_registry import resolve_device
    from pinnbench.cells.sweep import SweepConfig

    only_budget = args.time_budget is not None and args.steps is None
    options, jobs = cell_options(args), parallel_cells(args)
    problems_text = args.problems if args.problems is not None else DEFAULT_RUN["problems"]
    solvers_text = args.solvers if args.solvers is not None else DEFAULT_RUN["solvers"]
    try:
        problems = split_top_level(problems_text)
        solvers = split_top_level(solvers_text)
        dims = parse_dims(args.dims if args.dims is not None else DEFAULT_RUN["dims"])
        seeds = parse_seeds(args.seeds if args.seeds is not None else DEFAULT_RUN["seeds"])
        device = str(resolve_device(args.device or CELL_DEFAULTS["device"]))
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    if device.startswith("cuda") and args.executor != "dask" and (args.jobs or 1) > 1:
        raise UsageError(f"--jobs {args.jobs} would put {args.jobs} cells on one GPU at once (their "
                         "memory and timings interfere); use --jobs 1 on cuda, or --executor dask "
                         "with one GPU worker per device (docs/dask.md)")
    n_cells = len(problems) * len(solvers) * len(dims) * len(seeds)
    if n_cells > MAX_CELLS_WITHOUT_YES and not getattr(args, "yes", False):
        raise UsageError(f"the plan has {n_cells:,} cells ({len(problems)} problems x "
                         f"{len(solvers)} solvers x {len(dims)} d x {len(seeds)} seeds), more "
                         f"than {MAX_CELLS_WITHOUT_YES}; check --seeds and --dims, or add --yes "
                         "to run them all")
    return SweepConfig(
        problems=problems, solvers=solvers, dims=dims, seeds=seeds, **{
            **options,  # what the run's defaults or the command's spelling change:
            "steps": None if only_budget else (args.steps or DEFAULT_RUN["steps"]),
            "timeout_s": args.timeout or DEFAULT_RUN["timeout"], "device": device,
            "floors": not args.no_floors},
        points=args.points, jobs=jobs,
        auto_threads=not (args.executor == "dask" and args.scheduler))


#: the `pinnbench run` options that set a cell option (:data:`pinnbench.cells.sweep.CELL_OPTIONS`) of
#: another name; every other cell option is the option of its own name, where run has one
OPTION_OF_FIELD = {"time_budget_s": "time_budget", "timeout_s": "timeout",
                   "memory_limit_bytes": "memory_limit"}


def cell_options(args) -> dict[str, Any]:
    """The cell options the command line gives ({CellSpec field: value}); those it does not give
    keep the cell's own default (:class:`pinnbench.cells.cellspec.CellSpec`)."""
    from pinnbench.cells.sweep import CELL_OPTIONS

    given = {name: getattr(args, OPTION_OF_FIELD.get(name, name), None) for name in CELL_OPTIONS}
    return {name: value for name, value in given.items() if value is not None}


def sweep_options(args) -> list[str]:
    """The options of ``args`` that change a run's plan: the axes, --points and the cell
    options' (not --import, which adds plugins and changes nothing a cell does)."""
    from pinnbench.cells.sweep import CELL_OPTIONS

    cell = [OPTION_OF_FIELD.get(name, name) for name in CELL_OPTIONS if name != "imports"]
    return [k for k in ("problems", "solvers", "dims", "seeds", "points", *cell) if hasattr(args, k)]


def parallel_cells(args) -> int:
    """Cells that run at the same time on one machine (used to split its CPU threads)."""
    if args.executor == "dask":
        return args.local_workers or 1
    return args.jobs or 1


def apply_preset(args, parse_run: Callable[[list[str]], Any]) -> None:
    """--preset NAME: its options fill those the command line does not give. ``parse_run``
    parses a list of run options into the namespace `pinnbench run` would get (the CLI passes
    its parser's, so this module needs no parser of its own)."""
    if not getattr(args, "preset", None):
        return
    from pinnbench.commands.presets import PRESETS

    preset = parse_run(list(PRESETS[args.preset]))
    for key in sweep_options(args):
        if getattr(args, key) is None and getattr(preset, key) is not None:
            setattr(args, key, getattr(preset, key))
