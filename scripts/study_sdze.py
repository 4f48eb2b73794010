#!/usr/bin/env python
"""How sdze's and zo's defaults were chosen: train solver specs for a fixed number of steps, or
for a fixed process CPU time (``--cpu-seconds``: equal cost per run), and print the relative L2
error (pinnbench.evaluate, the problem's fixed test set) at checkpoints, with the median and
range over ``--seeds``. ``--variance`` and ``--quotient-variance`` print the estimator
diagnostics instead of training.

CPU time, not wall time: the studies ran on 2 CPU cores shared with other jobs (load 5-7); the
process CPU time of a one-thread run does not see them.

Seeding is the one of ``pinnbench.run_cell``: the problem from ``--seed``; the model's and the
solver's generators from sha256("{seed}:model") and sha256("{seed}:solver")
(:func:`pinnbench.seeds.cell_stream_seed`), so that a row here and a cell with the same spec start
from the same network and draw the same random numbers.

Examples (the command lines behind docs/sdze-tuning.md; issue 11 first)::

    P="--problem poisson-2body-scaled-v1 --width 32"
    python scripts/study_sdze.py $P --dim 100 --cpu-seconds 10 --seeds 0 --base small \
        --study tune-zo --study tune-mezo --study tune-sdze
    python scripts/study_sdze.py $P --dim 1000 --cpu-seconds 10 --seeds 0..2 \
        --base lr=1e-2,q=4,momentum=0 --study refresh-rank-eq
    python scripts/study_sdze.py $P --dim 1000 --variance --window 100 --windows 30 \
        "sdze[subspace=false]" "sdze[rank=8,refresh=100]"
    python scripts/study_sdze.py $P --dim 1000 --quotient-variance 100 \
        "sdze[crns=true,q=1,eps=1e-3]" "sdze[crns=false,q=1,eps=1e-3]"

Issue 4 (steps, one seed)::

    python scripts/study_sdze.py --study rank-refresh
    python scripts/study_sdze.py --study q --base rank=8,refresh=100
    python scripts/study_sdze.py "sdze[crns=false]" "zo[lr=3e-3]"
    python scripts/study_sdze.py --width 128 --steps 250,500,1000,2000 sdze "sdze[q=16]" --floors

Each positional argument is a solver spec as the CLI takes it (``sdze[rank=4,refresh=10]``);
``--study NAME`` appends a preset list of specs (``--base`` is appended to every sdze spec of
the preset). ``--jsonl FILE`` appends one JSON line per run (spec, checkpoints, errors).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch

from pinnbench import evaluate, make_model, make_problem, make_solver
from pinnbench.judge.floors import floors
from pinnbench.seeds import cell_generator

RANKS = (1, 4, 8, 16)
REFRESHES = (1, 10, 100, 1000)
#: issue 11: the refresh period T0 and the rank r, studied at equal CPU time
T0_STUDY = (1, 10, 100)
RANK_STUDY = (1, 8)  # at width 32 a rank >= 32 gives no subspace: use subspace=false
#: issue 11: one tuning grid and one selection rule for every zeroth-order solver
TUNE_GRID = {"lr": ("1e-3", "3e-3", "1e-2"), "q": (1, 4), "momentum": (0, 0.9),
             "eps": ("1e-3", "1e-2")}
#: the reduced grid run on the shared 2-core machine (docs/sdze-tuning.md): eps 1e-3 only
TUNE_GRID_SMALL = {**TUNE_GRID, "eps": ("1e-3",)}
#: what each tuned family is: naive zo (independent spatial randomness, full Gaussian), MeZO
#: (one shared batch: CRNS without a subspace) and sdze (CRNS and the subspace)
TUNE_FAMILIES = {"zo": "zo[crns=false]", "mezo": "zo[crns=true]", "sdze": "sdze"}


def _with(base: str, extra: str) -> str:
    parts = [p for p in (base, extra) if p]
    return "sdze" + (f"[{','.join(parts)}]" if parts else "")


def preset(name: str, base: str) -> list[str]:
    """The spec lists of the study's questions (docs/sdze-tuning.md)."""
    if name == "rank-refresh":  # question 1
        specs = [_with(base, f"rank={r},refresh={t}") for r in RANKS for t in REFRESHES]
        return specs + [_with(base, "subspace=false")]
    if name == "q":  # question 2a
        return [_with(base, f"q={q}") for q in (1, 4, 16)]
    if name == "lr":  # question 2b
        return [_with(base, f"lr={lr}") for lr in ("1e-3", "3e-3", "1e-2")]
    if name == "refresh-rank-eq":  # issue 11: T0 x r at equal CPU time (with --cpu-seconds)
        specs = [_with(base, f"rank={r},refresh={t}") for t in T0_STUDY for r in RANK_STUDY]
        return specs + [_with(base, "subspace=false")]
    if name.startswith("tune-"):  # issue 11: the same grid for zo, mezo and sdze
        family = TUNE_FAMILIES.get(name[5:])
        if family is None:
            raise SystemExit(f"unknown tuning family {name[5:]!r}; known: "
                             f"{', '.join(TUNE_FAMILIES)}")
        grid = TUNE_GRID_SMALL if base == "small" else TUNE_GRID
        return [_join(family, f"lr={lr},q={q},momentum={m},eps={e}")
                for lr in grid["lr"] for q in grid["q"]
                for m in grid["momentum"] for e in grid["eps"]]
    if name == "crns":  # question 3
        lr = next((p.split("=")[1] for p in base.split(",") if p.startswith("lr=")), "3e-3")
        return [_with(base, "crns=true"), _with(base, "crns=false"), f"zo[lr={lr}]"]
    raise SystemExit(f"unknown study {name!r}; known: rank-refresh, q, lr, crns, "
                     "refresh-rank-eq, tune-zo, tune-mezo, tune-sdze")


def _join(spec: str, extra: str) -> str:
    """``zo[crns=false]`` + ``lr=1e-3`` -> ``zo[crns=false,lr=1e-3]``."""
    if spec.endswith("]"):
        return spec[:-1] + "," + extra + "]"
    return f"{spec}[{extra}]"


def _setup(spec: str, args, seed: int):
    problem = make_problem(args.problem, dim=args.dim, seed=seed)
    g_model = cell_generator(seed, "model")
    g_solver = cell_generator(seed, "solver")
    model = make_model(problem, width=args.width, depth=args.depth, generator=g_model)
    return problem, model, make_solver(spec, problem, model, generator=g_solver)


def run(spec: str, args, checkpoints: list[int], seed: int) -> dict:
    """Train for ``checkpoints[-1]`` steps, or, with ``--cpu-seconds S``, for S seconds of this
    process's CPU time (time.process_time, one torch thread: robust to other jobs on a shared
    machine, unlike wall time), the checkpoints then being fractions of S in percent."""
    problem, model, solver = _setup(spec, args, seed)
    errors: dict[int, float] = {}
    steps_at: dict[int, int] = {}
    budget = args.cpu_seconds
    cpu = 0.0
    t0 = time.perf_counter()
    loss, status, t = float("nan"), "ok", 0
    pending = list(checkpoints)
    while pending:
        c0 = time.process_time()
        loss = float(solver.step())
        cpu += time.process_time() - c0
        t += 1
        if not math.isfinite(loss):
            status = f"diverged at step {t}"
            break
        while pending and (t >= pending[0] if budget is None
                           else cpu >= budget * pending[0] / 100.0):
            c = pending.pop(0)
            errors[c] = evaluate(model, problem)["rel_l2"]
            steps_at[c] = t
            if args.verbose:
                print(f"  {spec} seed {seed} {'step' if budget is None else '%'} {c}: "
                      f"step {t} rel_l2 {errors[c]:.4g} loss {loss:.4g}", file=sys.stderr,
                      flush=True)
    elapsed = time.perf_counter() - t0
    return {"spec": spec, "problem": args.problem, "dim": args.dim, "width": args.width,
            "depth": args.depth, "seed": seed, "errors": errors, "steps_at": steps_at,
            "cpu_seconds": budget, "final_loss": loss, "status": status,
            "s_per_step": elapsed / max(1, t), "cpu_s_per_step": cpu / max(1, t)}


def variance_table(args, specs: list[str], seed: int) -> None:
    """E||g_hat - G||^2 / ||G||^2 and friends (solvers._zo_diagnostics.gradient_estimate_variance) at
    the initial theta of ``seed``, for each spec."""
    from pinnbench.solvers._zo_diagnostics import gradient_estimate_variance

    print(f"| spec | P | ratio_step | ratio_window (W={args.window}) | ratio_held | cos_held |")
    print("|---|---|---|---|---|---|")
    for spec in specs:
        _, _, solver = _setup(spec, args, seed)
        v = gradient_estimate_variance(solver, seed=12345 + seed, window=args.window,
                                       windows=args.windows)
        print(f"| {spec} | {v['n_params']:.0f} | {v['ratio_step']:.4g} | "
              f"{v['ratio_window']:.4g} | {v['ratio_held']:.4g} | {v['cos_held']:.3f} |",
              flush=True)


def quotient_variance(args, specs: list[str], seed: int, draws: int) -> None:
    """Variance of the first difference quotient over ``draws`` steps' randomness at the
    initial theta (what CRNS is meant to cut: Var_omega[L] / (2 eps^2) without it)."""
    print("| spec | quotient variance | draws |")
    print("|---|---|---|")
    for spec in specs:
        _, _, solver = _setup(spec, args, seed)
        g = torch.Generator().manual_seed(12345 + seed)
        qs = [solver.difference_quotients(g)[0] for _ in range(draws)]
        print(f"| {spec} | {statistics.variance(qs):.3g} | {draws} |", flush=True)


def _seeds(text: str) -> list[int]:
    if ".." in text:
        a, b = text.split("..")
        return list(range(int(a), int(b) + 1))
    return [int(v) for v in text.split(",")]


def summary(rows: list[dict], checkpoint: int) -> None:
    """Median and range over seeds of the error at ``checkpoint``; the selection rule of the
    tuning studies is the lowest median (a diverged or missing run counts as error 1e9)."""
    by_spec: dict[str, list[float]] = {}
    for r in rows:
        by_spec.setdefault(r["spec"], []).append(r["errors"].get(checkpoint, 1e9))
    print(f"\n| spec | median rel L2 at {checkpoint} | min | max | seeds |")
    print("|---|---|---|---|---|")
    ranked = sorted(by_spec.items(), key=lambda kv: statistics.median(kv[1]))
    for spec, errs in ranked:
        print(f"| {spec} | {statistics.median(errs):.4g} | {min(errs):.4g} | {max(errs):.4g} "
              f"| {len(errs)} |")
    if ranked:
        print(f"\nselected (lowest median): {ranked[0][0]}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", help="solver specs, e.g. 'sdze[rank=4]' 'zo[lr=3e-3]'")
    ap.add_argument("--study", action="append", default=[],
                    help="preset spec list: rank-refresh, q, lr, crns (repeatable)")
    ap.add_argument("--base", default="", help="parameters added to every sdze spec of a preset; for the tune-* presets, "
                         "'small' picks the reduced grid (eps 1e-3 only) that was run")
    ap.add_argument("--problem", default="poisson-2body-v1")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", help="several seeds, '0..2' or '0,1,2' (overrides --seed)")
    ap.add_argument("--steps", default="250,500,1000,2000", help="comma-separated checkpoints")
    ap.add_argument("--cpu-seconds", type=float, default=None,
                    help="train each run for this much process CPU time (equal cost per run); "
                         "--steps then lists checkpoints in percent of it (default 25,50,100)")
    ap.add_argument("--variance", action="store_true",
                    help="print gradient-estimate variance ratios for the specs instead of "
                         "training (solvers._zo_diagnostics.gradient_estimate_variance)")
    ap.add_argument("--quotient-variance", type=int, default=0, metavar="DRAWS",
                    help="print the variance of the first quotient over DRAWS draws per spec "
                         "instead of training")
    ap.add_argument("--window", type=int, default=10, help="--variance: steps per window")
    ap.add_argument("--windows", type=int, default=100, help="--variance: windows sampled")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--floors", action="store_true",
                    help="also print the best-constant and best-affine floors (pinnbench.judge.floors)")
    ap.add_argument("--jsonl", help="append one JSON line per run to this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.cpu_seconds is not None and args.steps == ap.get_default("steps"):
        args.steps = "25,50,100"
    checkpoints = sorted({int(s) for s in args.steps.split(",")})
    seeds = _seeds(args.seeds) if args.seeds else [args.seed]
    specs = list(args.specs)
    for name in args.study:
        specs += preset(name, args.base)
    if not specs and not args.floors:
        ap.error("give solver specs, --study NAME or --floors")

    print(f"# {args.problem} d={args.dim} width={args.width} depth={args.depth} "
          f"seed={args.seed} threads={args.threads}; relative L2 at step")
    if args.floors:
        fl = floors(make_problem(args.problem, dim=args.dim, seed=args.seed))
        affine = fl["floor_affine_rel_l2"]  # None where the test set is too small (D > 2895)
        print(f"# floors: best constant {fl['floor_const_rel_l2']:.4g}, best affine "
              f"{'none' if affine is None else format(affine, '.4g')} "
              f"({fl.get('floor_method', '')})")
    if not specs:
        return
    if args.quotient_variance:
        for seed in seeds:
            quotient_variance(args, specs, seed, args.quotient_variance)
        return
    if args.variance:
        for seed in seeds:
            variance_table(args, specs, seed)
        return
    unit = "% of CPU budget" if args.cpu_seconds is not None else "steps"
    print(f"# checkpoints in {unit}" + (f" ({args.cpu_seconds:g} s)" if args.cpu_seconds else ""))
    width = max(len(s) for s in specs)
    header = f"| {'solver':<{width}} | " + " | ".join(f"{c:>8}" for c in checkpoints)
    print(header + " | seed | steps | cpu s/step | status |", flush=True)
    print("|" + "-" * (width + 2) + "|" + "|".join("-" * 10 for _ in checkpoints)
          + "|------|-------|--------|--------|", flush=True)
    rows = []
    for spec in specs:
        for seed in seeds:
            r = run(spec, args, checkpoints, seed)
            rows.append(r)
            cells = " | ".join(f"{r['errors'][c]:8.4f}" if c in r["errors"] else f"{'-':>8}"
                               for c in checkpoints)
            steps = max(r["steps_at"].values(), default=0)
            print(f"| {spec:<{width}} | {cells} | {seed} | {steps} | "
                  f"{r['cpu_s_per_step']:6.3f} | {r['status']} |", flush=True)
            if args.jsonl:
                with open(args.jsonl, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
    summary(rows, checkpoints[-1])


if __name__ == "__main__":
    main()
