"""bp's step eager against captured as a CUDA graph (``bp[cuda_graph=true]``), on a GPU: the check
that only a GPU can make (pinnbench/cuda_graph.py; the CPU checks capture-safety in the CUDA
simulation, tests/test_cuda_graph.py).

    python scripts/gpu_graphs.py [--dims 1e3,1e4,1e5,1e6] [--steps 30] [--device cuda]

(``--device cpu`` runs both variants eagerly: the option is ignored off CUDA; a smoke test.)

For each d and estimator: both variants from the same seed (poisson-2body-v1, MLP 128 x 3, 100
points, 16 probes), the median time per step over the steps after the capture (synchronised
around each step), the speed-up, and the largest relative difference of their losses over the
steps: ~1e-6 (rounding: the step size as a float32 device tensor) when the graph-safe random
streams of the registered generator reproduce the eager draws, O(1) when they do not (a finding:
the draws then differ, not the method). A capture that fails prints its error and the run goes on.
"""

from __future__ import annotations

import argparse
import statistics
import sys


def run(spec: str, dim: int, steps: int, device: str) -> tuple[list[float], list[float]]:
    from pinnbench.bench.solvers import build
    from pinnbench.timing import clock

    _, _, solver, why = build(dict(problem="poisson-2body-v1", dim=dim, width=128, depth=3,
                                   solver=spec, device=device))
    if why:
        raise RuntimeError(why)
    losses, times = [], []
    for _ in range(steps):
        t0 = clock(device)
        loss = solver.step()
        times.append(clock(device) - t0)
        losses.append(float(loss))
    return losses, times


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default="1e3,1e4,1e5,1e6")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--estimators", default="stde;stde,dist=coordinate;hte;sdgd")
    args = ap.parse_args(argv)
    from pinnbench.commands.axes import parse_dims

    try:
        dims = parse_dims(args.dims)
    except ValueError as exc:
        ap.error(str(exc))
    if args.steps < 8:
        ap.error("--steps must be >= 8 (3 eager steps, the capture, then the timed replays)")
    print(f"# bp eager vs cuda_graph=true, {args.steps} steps each, time per step: median of "
          "steps 6..; loss diff: max relative difference over the steps")
    print(f"{'d':>9} {'estimator':<22} {'eager ms':>9} {'graph ms':>9} {'speed-up':>8} "
          f"{'loss diff':>10}")
    for dim in dims:
        for est in [e for e in args.estimators.split(";") if e]:
            base = f"bp[estimator={est}]"
            try:
                l_e, t_e = run(base, dim, args.steps, args.device)
                l_g, t_g = run(base.replace("]", ",cuda_graph=true]"), dim, args.steps,
                               args.device)
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"{dim:>9} {est:<22} failed: {type(exc).__name__}: {exc}"[:400], flush=True)
                continue
            e_ms, g_ms = (1e3 * statistics.median(t[5:]) for t in (t_e, t_g))
            diff = max(abs(a - b) / max(abs(a), abs(b), 1e-30) for a, b in zip(l_e, l_g))
            print(f"{dim:>9} {est:<22} {e_ms:>9.3f} {g_ms:>9.3f} {e_ms / g_ms:>8.2f} "
                  f"{diff:>10.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
