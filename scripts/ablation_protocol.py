"""The SDZE ablation re-run under the comparison protocol (issue 21, item 6; docs/protocol.md).

What it runs, in three stages, every one resumable (rerun the same command):

1. **tune** - every row's lr by the tuning protocol (``pinnbench tune``: the same trials, seeded
   Sobol sampler, validation seeds and selection rule for every row). A row is a full spec with
   only ``lr`` left open, so the search space is lr alone: a switch that needs another step size
   (momentum 0.9, normalize=false) gets its own, and "diverged" can no longer mean "the base's lr
   was wrong for it".
2. **run** - every row at its chosen lr (``pinnbench run --tuned``), at **equal steps**: d = 100
   for ``--steps-100`` steps (5 seeds for the on/off switches, bp and MeZO; 3 for the rank and
   T0 sweeps), d = 1000 for ``--steps-1000`` steps on 3 seeds; the cells of one seed run one
   after another (the plan interleaves solvers), with the diagnostics. A rerun skips a run
   command whose run finished and resumes an interrupted one (``--resume RUN_ID``).
3. **report** - ``pinnbench report --all`` of the store into ``--page`` (the ablation table reads
   seed-paired differences to the base at equal steps, with a paired bootstrap interval; the
   tuning trials in the same store are left out: they are the studies'), and the page's
   README.md from its PREFACE.md (the protocol, written by hand) and the same tables
   (scripts/ablation_readme.py). Run this stage at a commit that has both (2026-12-04 or later),
   whatever commit the cells ran at.

The rows (each changes exactly one factor of its base; lr is tuned for every row):

* sdze and its declared one-factor variants (``pinnbench.solver.ablation_specs``: crns,
  subspace, momentum, normalize, rank 1..32, T0 1..1000, the orthonormal basis);
* MeZO (``zo[crns=true]``) and bp, at their defaults (which come from the committed defaults
  study, scripts/study_defaults) with lr tuned like every row;
* CRNS on a fourth-order problem (biharmonic-clamped-2body-scaled-v1: sdze and
  sdze[crns=false]) and with the unbiased loss (sdze[loss=unbiased] and its crns=false).

Run it after the defaults study has set the defaults; it records one commit per cell (the page
checks that they are all the same and clean). On this 2-core CPU the whole plan is several
CPU-days (``--dry-run`` prints the cells and an estimate); ``--width 32`` shrinks it (the page
must then say so), and a lent GPU runs it with ``--device cuda --jobs 8``.

    python scripts/ablation_protocol.py --dry-run            # the plan and its cell counts
    python scripts/ablation_protocol.py --out results/ablation-protocol
    python scripts/ablation_protocol.py --stage report --page reports/ablation-sdze
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pinnbench.solver import ablation_specs, format_spec, parse_spec

BASE = "sdze"
PROBLEM = "poisson-2body-scaled-v1"
FOURTH_ORDER = "biharmonic-clamped-2body-scaled-v1"
COMPARATORS = ("zo[crns=true]", "bp")  # MeZO and backprop, beside the variants
SWEEPS = ("rank", "refresh")  # sweeps get 3 seeds at d = 100; on/off switches 5
TUNE = dict(trials=16, seeds=(0, 1), steps=500)  # the defaults study's protocol and budget
#: a run cell's wall-clock limit: only a hang guard, since the budget is in steps (run's own
#: 600 s default killed a 5000-step cell at load 8 after 2048 steps); 5000 steps at 1.4 s each,
#: 20x sdze's step at d = 100 and width 32 on this CPU
RUN_TIMEOUT_S = 7200


@dataclass(frozen=True)
class Row:
    """One contestant: ``spec`` with only lr open, on ``problem``; ``factor`` the parameter it
    changes from the base (None: a base or a comparator)."""

    spec: str
    problem: str
    factor: str | None
    seeds_100: int


def open_lr(spec: str) -> str:
    """The full canonical spec of ``spec`` with lr left out (so that only lr is searched)."""
    from pinnbench.solver import SOLVERS

    name, given = parse_spec(spec)
    params = dict(SOLVERS.get(name)(**given).params)
    params.pop("lr")
    return format_spec(name, params)


def changed(spec: str, base: str) -> set[str]:
    """The parameters in which ``spec`` differs from ``base`` (both full specs)."""
    _, a = parse_spec(spec)
    _, b = parse_spec(base)
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def rows() -> list[Row]:
    """Every contestant of the re-run, in table order."""
    specs = ablation_specs(BASE)
    base = open_lr(specs[0])
    out = [Row(base, PROBLEM, None, 5)]
    for spec in specs[1:]:
        spec = open_lr(spec)
        (factor,) = changed(spec, base)
        out.append(Row(spec, PROBLEM, factor, 3 if factor in SWEEPS else 5))
    out += [Row(open_lr(s), PROBLEM, None, 5) for s in COMPARATORS]
    crns_off = open_lr(f"{BASE}[crns=false]")
    out += [Row(base, FOURTH_ORDER, None, 5), Row(crns_off, FOURTH_ORDER, "crns", 5)]
    unbiased = open_lr(f"{BASE}[loss=unbiased]")
    out += [Row(unbiased, PROBLEM, None, 5),
            Row(open_lr(f"{BASE}[loss=unbiased,crns=false]"), PROBLEM, "crns", 5)]
    return out


def commands(args: argparse.Namespace) -> list[list[str]]:
    """The pinnbench command lines of the stages asked for."""
    out_dir = Path(args.out)
    store, studies = str(out_dir / "ablation.sqlite"), str(out_dir / "ablation.optuna.sqlite")
    common = ["--width", str(args.width), "--device", args.device, "--jobs", str(args.jobs),
              "--threads", str(args.threads), "--store", store, "--mkdir"]
    plan = rows()
    by_problem: dict[str, list[Row]] = {}
    for row in plan:
        by_problem.setdefault(row.problem, []).append(row)
    cmds: list[list[str]] = []
    if args.stage in ("all", "tune"):
        for problem, group in by_problem.items():
            dims = "100,1000" if problem == PROBLEM else "100"
            cmds.append([args.pinnbench, "tune", "--solvers", ",".join(dict.fromkeys(
                r.spec for r in group)), "--problems", problem, "--dims", dims,
                "--trials", str(TUNE["trials"]),
                "--seeds", f"{min(TUNE['seeds'])}..{max(TUNE['seeds'])}",
                "--steps", str(TUNE["steps"]), "--sampler", "qmc", "--study-store", studies,
                *common])
    run_limit = ["--timeout", str(RUN_TIMEOUT_S)]
    if args.stage in ("all", "run"):
        for problem, group in by_problem.items():
            # seeds 0..2 of every row, then 3..4 of the 5-seed rows: each command interleaves
            for lo, hi in ((0, 2), (3, 4)):
                specs = ",".join(dict.fromkeys(r.spec for r in group if r.seeds_100 > lo))
                cmds.append([args.pinnbench, "run", "--tuned", studies, "--solvers", specs,
                             "--problems", problem, "--dims", "100", "--seeds", f"{lo}..{hi}",
                             "--steps", str(args.steps_100), "--diagnostics", "--no-report",
                             *run_limit, *common])
            if problem == PROBLEM:
                specs = ",".join(dict.fromkeys(r.spec for r in group))
                cmds.append([args.pinnbench, "run", "--tuned", studies, "--solvers", specs,
                             "--problems", problem, "--dims", "1000", "--seeds", "0..2",
                             "--steps", str(args.steps_1000), "--diagnostics", "--no-report",
                             *run_limit, *common])
    if args.stage in ("all", "report"):
        cmds.append([args.pinnbench, "report", "--store", store, "--all", "--out", args.page,
                     "--force"])
        # the README: the page folder's PREFACE.md (the protocol, by hand) first, then the
        # report's tables of the runs (tuning trials are the study's, never results)
        cmds.append([sys.executable, str(Path(__file__).with_name("ablation_readme.py")), store,
                     "--preface", str(Path(args.page) / "PREFACE.md"), "--out",
                     str(Path(args.page) / "README.md"), "--plan"])
    return cmds


def resumed(cmd: list[str], store: str) -> list[str] | None:
    """``cmd`` as this rerun should issue it: a ``run`` command whose run (found in ``store`` by
    the command line it recorded) finished is done (None); one whose run was interrupted
    resumes it (``--resume RUN_ID``: only its cells without a done row run); a new one, and
    every ``tune`` command (a tune resumes its studies by itself), runs as it is."""
    import sqlite3

    from pinnbench.commands.run_lifecycle import command_line

    if len(cmd) < 2 or cmd[1] != "run" or not Path(store).is_file():
        return cmd
    recorded = command_line(cmd[1:])
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as con:
        runs = con.execute("SELECT run_id, status FROM runs WHERE command = ? ORDER BY "
                           "started_at", (recorded,)).fetchall()
    if any(status == "finished" for _, status in runs):
        return None
    return cmd + ["--resume", runs[-1][0]] if runs else cmd


def planned_cells() -> dict[tuple[str, int], int]:
    """The equal-step run cells of the plan per (problem, d): each row's seeds at d = 100, and
    3 seeds of every row of PROBLEM at d = 1000."""
    out: dict[tuple[str, int], int] = {}
    for r in rows():
        out[(r.problem, 100)] = out.get((r.problem, 100), 0) + r.seeds_100
        if r.problem == PROBLEM:
            out[(r.problem, 1000)] = out.get((r.problem, 1000), 0) + 3
    return out


def cell_counts() -> dict[str, int]:
    """Cells per stage: tuning (trials x seeds per row and d) and the equal-step runs."""
    runs = planned_cells()
    trials = TUNE["trials"] * len(TUNE["seeds"])
    plan = rows()  # every row is tuned at d = 100, PROBLEM's also at 1000
    return {"tune": trials * (len(plan) + sum(r.problem == PROBLEM for r in plan)),
            "run d=100": sum(n for (_, d), n in runs.items() if d == 100),
            "run d=1000": sum(n for (_, d), n in runs.items() if d == 1000)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("all", "tune", "run", "report"), default="all")
    parser.add_argument("--out", default="results/ablation-protocol")
    parser.add_argument("--page", default="reports/ablation-sdze")
    parser.add_argument("--steps-100", type=int, default=5000)
    parser.add_argument("--steps-1000", type=int, default=2000)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pinnbench", default=str(Path(sys.executable).with_name("pinnbench")))
    parser.add_argument("--dry-run", action="store_true",
                        help="print the rows, the cell counts and the commands; run nothing")
    args = parser.parse_args(argv)
    if args.dry_run:
        for row in rows():
            print(f"{row.problem:36s} {row.factor or '(base/comparator)':18s} "
                  f"{row.seeds_100} seeds  {row.spec}")
        counts = cell_counts()
        steps = {"tune": TUNE["steps"], "run d=100": args.steps_100,
                 "run d=1000": args.steps_1000}
        print("cells:", ", ".join(f"{k} {v} ({v * steps[k]:,} steps)" for k, v in counts.items()))
        for cmd in commands(args):
            print(" ".join(cmd))
        return 0
    store = str(Path(args.out) / "ablation.sqlite")
    for planned in commands(args):
        cmd = resumed(planned, store)
        if cmd is None:
            print("done (its run finished):", " ".join(planned[:2]), "...", flush=True)
            continue
        print("+", " ".join(cmd), flush=True)
        code = subprocess.call(cmd)
        if code != 0:
            print(f"ablation_protocol: stopped at exit {code}; rerun the same command to resume",
                  file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
