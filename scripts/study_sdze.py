#!/usr/bin/env python
"""How sdze's defaults were chosen: train solver specs for a fixed number of STEPS and print
the relative L2 error (pinnbench.evaluate, the problem's fixed test set) at checkpoints.

Steps, not seconds: the study ran on 2 CPU cores shared with other jobs, so wall-clock times are
not comparable and are printed only as a rough cost indication (``s/step``, not a result).

Seeding is the one of ``pinnbench.run_cell``: the problem from ``--seed``; the model's and the
solver's generators from sha256("{seed}:model") and sha256("{seed}:solver")
(:func:`pinnbench.cell._derive_seed`), so that a row here and a cell with the same spec start
from the same network and draw the same random numbers.

Examples (the command lines behind docs/sdze-tuning.md)::

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
import sys
import time

import torch

from pinnbench import evaluate, make_model, make_problem, make_solver
from pinnbench.cell import _derive_seed
from pinnbench.floors import floors

RANKS = (1, 4, 8, 16)
REFRESHES = (1, 10, 100, 1000)


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
    if name == "crns":  # question 3
        lr = next((p.split("=")[1] for p in base.split(",") if p.startswith("lr=")), "3e-3")
        return [_with(base, "crns=true"), _with(base, "crns=false"), f"zo[lr={lr}]"]
    raise SystemExit(f"unknown study {name!r}; known: rank-refresh, q, lr, crns")


def run(spec: str, args, checkpoints: list[int]) -> dict:
    problem = make_problem(args.problem, dim=args.dim, seed=args.seed)
    g_model = torch.Generator().manual_seed(_derive_seed(args.seed, "model"))
    g_solver = torch.Generator().manual_seed(_derive_seed(args.seed, "solver"))
    model = make_model(problem, width=args.width, depth=args.depth, generator=g_model)
    solver = make_solver(spec, problem, model, generator=g_solver)
    errors: dict[int, float] = {}
    t0 = time.perf_counter()
    loss, status = float("nan"), "ok"
    for t in range(1, checkpoints[-1] + 1):
        loss = float(solver.step())
        if not math.isfinite(loss):
            status = f"diverged at step {t}"
            break
        if t in checkpoints:
            errors[t] = evaluate(model, problem)["rel_l2"]
            if args.verbose:
                print(f"  {spec} step {t}: rel_l2 {errors[t]:.4g} loss {loss:.4g}",
                      file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t0
    return {"spec": spec, "problem": args.problem, "dim": args.dim, "width": args.width,
            "depth": args.depth, "seed": args.seed, "errors": errors, "final_loss": loss,
            "status": status, "s_per_step": elapsed / max(1, t)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", help="solver specs, e.g. 'sdze[rank=4]' 'zo[lr=3e-3]'")
    ap.add_argument("--study", action="append", default=[],
                    help="preset spec list: rank-refresh, q, lr, crns (repeatable)")
    ap.add_argument("--base", default="", help="parameters added to every sdze spec of a preset")
    ap.add_argument("--problem", default="poisson-2body-v1")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", default="250,500,1000,2000", help="comma-separated checkpoints")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--floors", action="store_true",
                    help="also print the best-constant and best-affine floors (pinnbench.floors)")
    ap.add_argument("--jsonl", help="append one JSON line per run to this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    checkpoints = sorted({int(s) for s in args.steps.split(",")})
    specs = list(args.specs)
    for name in args.study:
        specs += preset(name, args.base)
    if not specs and not args.floors:
        ap.error("give solver specs, --study NAME or --floors")

    print(f"# {args.problem} d={args.dim} width={args.width} depth={args.depth} "
          f"seed={args.seed} threads={args.threads}; relative L2 at step")
    if args.floors:
        fl = floors(make_problem(args.problem, dim=args.dim, seed=args.seed))
        print(f"# floors: best constant {fl['floor_const_rel_l2']:.4g}, best affine "
              f"{fl['floor_affine_rel_l2']:.4g} ({fl['floor_affine_method']}, "
              f"{fl['floor_fit_points']} points)")
    if not specs:
        return
    width = max(len(s) for s in specs)
    header = f"| {'solver':<{width}} | " + " | ".join(f"{c:>8}" for c in checkpoints)
    print(header + " | s/step | status |", flush=True)
    print("|" + "-" * (width + 2) + "|" + "|".join("-" * 10 for _ in checkpoints)
          + "|--------|--------|", flush=True)
    for spec in specs:
        r = run(spec, args, checkpoints)
        cells = " | ".join(f"{r['errors'][c]:8.4f}" if c in r["errors"] else f"{'-':>8}"
                           for c in checkpoints)
        print(f"| {spec:<{width}} | {cells} | {r['s_per_step']:6.3f} | {r['status']} |",
              flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
