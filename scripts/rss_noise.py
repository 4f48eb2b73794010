#!/usr/bin/env python
"""How much of a CPU cell's peak memory is the heap's, not the step's tensors (docs/protocol.md,
"Peak memory").

For each run, a fresh process builds the solver (seed 0, one torch thread), compiles the
closed forms for its batch at large d (``Problem.warm_up``) and resets the resident set's
high-water mark (:func:`pinnbench.memory.reset_peak_cpu`), as a cell's set-up does, then takes
``--steps`` steps and prints the peak above the baseline; the runs differ only in
``PYTHONHASHSEED`` (the order of Python's hashing, and so of some allocations). Then the exact
tensor peak of one more step (:func:`pinnbench.memory.cpu_tensor_peak_bytes`, the same in every
run). With ``--collect`` each step is followed by ``gc.collect()``.

    python scripts/rss_noise.py --solver sdze --dim 100 --runs 0,0,0,1,2,3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def one_run(solver: str, problem: str, dim: int, steps: int, collect: bool) -> tuple[int, int]:
    """(resident-set peak above the baseline, the next step's tensor peak), in bytes."""
    import gc

    import torch

    from pinnbench import memory
    from pinnbench.bench.solvers import build

    torch.set_num_threads(1)
    prob, _, s, why = build(dict(problem=problem, dim=dim, width=128, depth=3, solver=solver))
    if why:
        raise SystemExit(f"{solver} skips {problem}: {why}")
    prob.warm_up(int(s.params.get("points", 2)))  # set-up compiles the closed forms, as a cell's
    memory.reset_peak_cpu()
    base = memory.current_cpu_bytes()
    for _ in range(steps):
        s.step()
        if collect:
            gc.collect()
    rss = memory.peak_cpu_bytes() - base
    return rss, memory.cpu_tensor_peak_bytes(s.step)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--solver", default="sdze")
    ap.add_argument("--problem", default="poisson-2body-scaled-v1")
    ap.add_argument("--dim", type=float, default=100)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--runs", default="0,0,0,1,2,3", help="PYTHONHASHSEED of each run")
    ap.add_argument("--collect", action="store_true", help="gc.collect() after every step")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a run's own process
    args = ap.parse_args(argv)
    if args.one:
        rss, tensors = one_run(args.solver, args.problem, int(args.dim), args.steps, args.collect)
        print(rss, tensors)
        return 0
    print(f"# {args.solver} on {args.problem}, d = {int(args.dim)}, {args.steps} steps, "
          f"one thread{', gc.collect() after each step' if args.collect else ''}")
    print(f"{'PYTHONHASHSEED':>14} {'RSS peak MiB':>12} {'step tensors MiB':>16}")
    rss_all = []
    for seed in args.runs.split(","):
        cmd = [sys.executable, __file__, "--one", "--solver", args.solver, "--problem",
               args.problem, "--dim", str(args.dim), "--steps", str(args.steps)]
        cmd += ["--collect"] if args.collect else []
        env = {**os.environ, "PYTHONHASHSEED": seed.strip()}
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        rss, tensors = (int(x) for x in out.stdout.split()[-2:])
        rss_all.append(rss)
        print(f"{seed.strip():>14} {rss / 2**20:>12.0f} {tensors / 2**20:>16.1f}", flush=True)
    print(f"# RSS peak: {min(rss_all) / 2**20:.0f} to {max(rss_all) / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
