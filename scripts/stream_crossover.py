"""Streamed against materialised step data, in one process: the ratio of their step times.

For each d and each zeroth-order solver, builds ``SOLVER`` and ``SOLVER[stream=true]`` (seed 0,
poisson-2body-v1, MLP 128 x 3, one torch thread) side by side, takes one warm-up step of each,
then alternates ``--steps`` timed steps of each (so load on a shared machine falls on both
alike) and prints the median time per step of each and their ratio, streamed / materialised
(< 1: streaming is faster). docs/roofline.md has the table and the default it led to.

    python scripts/stream_crossover.py --dims 1e3,1e4,1e5,1e6 --solvers sdze,zo --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default="1e3,1e4,1e5,1e6")
    ap.add_argument("--solvers", default="sdze,zo")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)
    import torch

    from pinnbench.bench.solvers import build
    from pinnbench.commands.axes import parse_dims

    try:
        dims = parse_dims(args.dims)
    except ValueError as exc:
        ap.error(str(exc))
    torch.set_num_threads(1)
    print(f"# median of {args.steps} alternating steps after one warm-up each; one thread; "
          "ratio = streamed / materialised")
    print(f"{'d':>9} {'solver':<6} {'s/step':>9} {'streamed':>9} {'ratio':>6}", flush=True)
    for dim in dims:
        for name in args.solvers.split(","):
            solvers = []
            for spec in (name, f"{name}[stream=true]"):
                _, _, s, why = build(dict(problem="poisson-2body-v1", dim=dim, width=128,
                                          depth=3, solver=spec, threads=1))
                if why:
                    print(f"{dim:>9} {spec}: skipped: {why}")
                    break
                s.step()
                solvers.append(s)
            if len(solvers) < 2:
                continue
            times: list[list[float]] = [[], []]
            for _ in range(args.steps):
                for i, s in enumerate(solvers):
                    t0 = time.perf_counter()
                    s.step()
                    times[i].append(time.perf_counter() - t0)
            a, b = (statistics.median(t) for t in times)
            print(f"{dim:>9} {name:<6} {a:>9.4f} {b:>9.4f} {b / a:>6.2f}", flush=True)
            del solvers
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
