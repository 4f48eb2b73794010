"""Record or compare training trajectories: every step's loss and the final relative L2 error.

An optimisation of a solver's step must keep its trajectory equal to rounding (or state the
change it intends). This script takes ``--steps`` steps (default 100) of each of nine solver
specs on poisson-2body-v1 at d = 100 (seed 0, MLP 128 x 3, in this process, one torch thread),
writes each step's loss and the final rel. L2 of each spec to a JSON file, and compares two
such files. Each solver gets ``--steps`` as its budget, as a cell of that many steps does, so a
step size that decays over the budget (``decay_steps=budget``: sdze's and zo's defaults) decays
over those steps; before 2026-12-05 the script gave none, so those solvers ran at a constant
step size, which is not their default and made naive zo diverge on some seeds:

    python scripts/trajectory_check.py --out before.json       # on the old code
    python scripts/trajectory_check.py --out after.json        # on the new code
    python scripts/trajectory_check.py --compare before.json after.json

``--compare`` prints, per spec, ``bit-identical`` or the largest relative difference of its
losses (|a - b| / max(|a|, |b|), over the steps) and of its final rel. L2; exit code 0 when every
spec is bit-identical, 1 otherwise (a difference may still be rounding: read the figures).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

SPECS = ("sdze", "sdze[crns=false]", "sdze[subspace=false]", "sdze[stream=true]", "zo",
         "zo[crns=true]", "bp", "bp[estimator=hte]", "bp[estimator=sdgd]")


def run(spec: str, problem_id: str, dim: int, steps: int, seed: int) -> dict:
    """``steps`` steps of ``spec`` from ``seed``: {"losses": [...], "rel_l2": float}."""
    import torch

    import pinnbench
    from pinnbench.judge.metrics import evaluate
    from pinnbench.solver import solver_from_spec

    problem = pinnbench.make_problem(problem_id, dim=dim, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    model = pinnbench.make_model(problem, width=128, depth=3, generator=gen)
    solver = solver_from_spec(spec, steps=steps)  # the budget decay_steps=budget decays over
    solver.setup(problem, model, gen)
    losses = [float(solver.step()) for _ in range(steps)]
    return {"losses": losses, "rel_l2": evaluate(model, problem)["rel_l2"]}


def record(args) -> int:
    import torch

    torch.set_num_threads(1)
    out = {"problem": args.problem, "dim": args.dim, "steps": args.steps, "seed": args.seed,
           "specs": {}}
    for spec in args.specs:
        t0 = time.perf_counter()
        out["specs"][spec] = run(spec, args.problem, args.dim, args.steps, args.seed)
        print(f"{spec:<22} final loss {out['specs'][spec]['losses'][-1]:.6g}  rel L2 "
              f"{out['specs'][spec]['rel_l2']:.6g}  ({time.perf_counter() - t0:.1f} s)",
              flush=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    return 0


def _rel(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale > 0 and math.isfinite(scale) else math.inf


def compare(a: dict, b: dict) -> tuple[list[str], bool]:
    """One line per spec (specs in either file) and whether all are bit-identical."""
    lines, identical = [], True
    for spec in list(dict.fromkeys([*a["specs"], *b["specs"]])):
        ra, rb = a["specs"].get(spec), b["specs"].get(spec)
        if ra is None or rb is None:
            lines.append(f"{spec:<22} only in {'the second' if ra is None else 'the first'} file")
            identical = False
            continue
        if len(ra["losses"]) != len(rb["losses"]):
            lines.append(f"{spec:<22} different step counts ({len(ra['losses'])} vs "
                         f"{len(rb['losses'])})")
            identical = False
            continue
        if ra == rb:
            lines.append(f"{spec:<22} bit-identical")
            continue
        identical = False
        diffs = [_rel(x, y) for x, y in zip(ra["losses"], rb["losses"])]
        worst = max(range(len(diffs)), key=diffs.__getitem__)
        first = next(i for i, dv in enumerate(diffs) if dv > 0) if any(diffs) else None
        lines.append(f"{spec:<22} losses: max rel diff {diffs[worst]:.3g} (step {worst}), first "
                     f"differing step {first}; final rel L2 rel diff "
                     f"{_rel(ra['rel_l2'], rb['rel_l2']):.3g}")
    return lines, identical


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/trajectory_check.py",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="record the trajectories into this JSON file")
    ap.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"))
    ap.add_argument("--specs", default=";".join(SPECS), help="';'-separated solver specs")
    ap.add_argument("--problem", default="poisson-2body-v1")
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.compare:
        with open(args.compare[0]) as fa, open(args.compare[1]) as fb:
            lines, identical = compare(json.load(fa), json.load(fb))
        print("\n".join(lines))
        return 0 if identical else 1
    if not args.out:
        ap.error("give --out FILE (record) or --compare A.json B.json")
    args.specs = [s.strip() for s in args.specs.split(";") if s.strip()]
    return record(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
