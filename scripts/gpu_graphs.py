"""bp's, sdze's and zo's steps eager against captured as a CUDA graph (``cuda_graph=true``), on a
GPU: the check that only a GPU can make (pinnbench/cuda_graph.py; the CPU checks capture-safety
in the CUDA simulation, tests/test_cuda_graph.py).

    python scripts/gpu_graphs.py [--dims 1e3,1e4,1e5,1e6] [--steps 30] [--device cuda]
                                 [--estimators "stde;hte"] [--sdze "sdze"] [--zo "zo"]

(``--device cpu`` runs both variants eagerly: the option is ignored off CUDA; a smoke test.)

For each d: ``--sdze`` and ``--zo`` (specs; "" skips one), then bp with each estimator, both
variants from the same seed (poisson-2body-v1, MLP 128 x 3, 100 points, 16 probes), the median
time per step over the steps after the capture (synchronised around each step), the speed-up,
and the largest relative difference of their losses over the steps. Each captures after its
``graph_warmup_steps`` eager steps: bp after 3 (``--steps`` in all), sdze and zo after
``steady_state_steps`` + 1 (46 for sdze at its defaults: its momentum is full; 2 for zo), so
they run that many plus ``--steps``. bp's losses differ by ~1e-6 (rounding: the step size as a
float32 device tensor), sdze's and zo's by 0 (float64, bit for bit on the CPU) to rounding, when
the graph-safe random streams of the registered generators reproduce the eager draws; O(1) when
they do not (a finding: the draws then differ, not the method). A capture that fails prints its
error and the run goes on.
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
    ap.add_argument("--sdze", default="sdze", help='an sdze spec ("" skips it)')
    ap.add_argument("--zo", default="zo", help='a zo spec ("" skips it)')
    args = ap.parse_args(argv)
    from pinnbench.commands.axes import parse_dims
    from pinnbench.solver import format_spec, parse_spec, solver_from_spec

    try:
        dims = parse_dims(args.dims)
    except ValueError as exc:
        ap.error(str(exc))
    if args.steps < 8:
        ap.error("--steps must be >= 8 (3 eager steps, the capture, then the timed replays)")
    print(f"# eager vs cuda_graph=true, time per step: median of the steps from the second "
          f"after the capture ({args.steps} steps for bp; sdze, zo their warm-up + {args.steps}); "
          "loss diff: max relative difference over the steps")
    print(f"{'d':>9} {'estimator':<22} {'eager ms':>9} {'graph ms':>9} {'speed-up':>8} "
          f"{'loss diff':>10}")
    # sdze's and zo's captured steps first at each d: bp's were timed on an H200 already
    # (reports/gpu-h200), so a stage cut short by the lease's budget loses those rows first
    rows = [(spec, spec) for spec in (args.sdze, args.zo) if spec]
    rows += [(est, f"bp[estimator={est}]") for est in args.estimators.split(";") if est]
    for dim in dims:
        for label, base in rows:
            try:
                name, params = parse_spec(base)
                spec = format_spec(name, {**params, "cuda_graph": "true"})
                warmup = solver_from_spec(base).graph_warmup_steps
                steps = args.steps + (0 if name == "bp" else warmup)
                l_e, t_e = run(base, dim, steps, args.device)
                l_g, t_g = run(spec, dim, steps, args.device)
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"{dim:>9} {label:<22} failed: {type(exc).__name__}: {exc}"[:400],
                      flush=True)
                continue
            e_ms, g_ms = (1e3 * statistics.median(t[warmup + 2:]) for t in (t_e, t_g))
            diff = max(abs(a - b) / max(abs(a), abs(b), 1e-30) for a, b in zip(l_e, l_g))
            print(f"{dim:>9} {label:<22} {e_ms:>9.3f} {g_ms:>9.3f} {e_ms / g_ms:>8.2f} "
                  f"{diff:>10.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
