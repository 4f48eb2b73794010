"""The ``pinnbench`` command: run, list, show, export, report.

Exit codes: 0 when every cell produced a result (ok, oom, timeout, diverged and skipped are
results), 1 when a cell failed with an unexpected error, 2 for bad usage (one line on stderr that
says what was wrong and what is allowed; nothing written to the store), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pinnbench.cells.cellspec import DEFAULTS as CELL_DEFAULTS
from pinnbench.commands.option_types import (MAX_DEPTH, MAX_POINTS, MAX_PROCESSES, MAX_THREADS,
                                     MAX_WIDTH, int_option, memory_size, seconds_option)
from pinnbench.commands.presets import PRESETS
from pinnbench.commands.results import REPORTS_DIR, cmd_export, cmd_list, cmd_report, cmd_show
from pinnbench.commands.run import NO_WORKER_TIMEOUT_S, cmd_run
from pinnbench.commands.run_options import DEFAULT_RUN, MAX_CELLS_WITHOUT_YES, apply_preset
from pinnbench.cells.store import DEFAULT_PATH
from pinnbench.commands.usage import UsageError, import_plugins

#: UsageError is re-exported: the commands' modules and plugins raise it as pinnbench.cli's
__all__ = ["DEFAULT_RUN", "UsageError", "ablate_argv", "build_parser", "main"]


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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


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
    h.add_argument("--ranks", type=int_option("--ranks", maximum=MAX_PROCESSES), metavar="R",
                   help="shard each cell's input dimension over R processes on this machine "
                   "(torch.distributed: gloo on CPU, NCCL with one GPU per rank); the ball, clamped "
                   "biharmonic, heat and wave problems with bp, sdze or zo, a step budget; per-rank peaks and communication time in the column "
                   "rank_measurements (docs/sharding.md). Default 1: not sharded")
    h.add_argument("--no-prune", action="store_true",
                   help="run larger d even after a (problem, solver) ran out of memory")
    h.add_argument("--no-floors", action="store_true",
                   help="skip the trivial reference fits (floor_*_rel_l2)")
    h.add_argument("--diagnostics", action="store_true", default=None,
                   help="after training, record the zeroth-order estimator diagnostics (gradient "
                   "variance ratios, quotient variance against eps with CRNS on and off; "
                   "pinnbench/cells/diagnostics.py) in the column `diagnostics`; outside the step "
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
        description="Expand SOLVER (a spec: NAME or NAME[param=value,...]) into itself and the "
        "variants its solver declares (Solver.ablations: each changes exactly one parameter; a "
        "solver that declares none is refused), then run them as `pinnbench run --solvers <those "
        "specs> OPTIONS`: same store, isolation, resume and report.")
    abl.add_argument("base", metavar="SOLVER", help="the base solver spec")
    abl.add_argument("run_options", nargs=argparse.REMAINDER, metavar="OPTIONS",
                     help="any `pinnbench run` option but --solvers (--problems, --dims, "
                     "--seeds, --steps, --store, ...)")

    from pinnbench.commands.tune import add_tune_parser

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
            s.add_argument("--import", dest="imports", action="append", metavar="MODULE_OR_FILE",
                           help="import a plugin module or file first (its solvers' ablation "
                           "pages and claims)")
    return p


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
    from pinnbench.cells.sweep import with_points

    if any(o == "--solvers" or o.startswith("--solvers=") for o in run_options):
        raise UsageError("ablate takes its solvers from SOLVER and its variants; drop --solvers")
    import_plugins(_option_values(run_options, "--import"))  # a plugin solver must be registered
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        def parse_run(options: list[str]):
            return parser.parse_args(["run", *options])

        if args.command == "run":
            apply_preset(args, parse_run)
            return cmd_run(args, argv)
        if args.command == "tune":
            from pinnbench.commands.tune import cmd_tune

            return cmd_tune(args, argv)
        if args.command == "show" and args.studies:
            from pinnbench.commands.tune import cmd_show_studies

            return cmd_show_studies(args)
        if args.command == "ablate":
            run_argv = ablate_argv(args.base, args.run_options)
            run_args = parser.parse_args(run_argv)
            apply_preset(run_args, parse_run)
            return cmd_run(run_args, run_argv)
        return {"list": cmd_list, "show": cmd_show, "export": cmd_export,
                "report": cmd_report}[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
