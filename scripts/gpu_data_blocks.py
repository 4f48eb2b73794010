"""A step's data draw (points, source, probes: ``Solver.draw``) at the CPU's column blocks and
at the device's, in one process on one card: what ``DEVICE_BLOCKS`` (at most that many blocks
per pass on a GPU, pinnbench/problems/_chunked.py) buys, as a ratio in one run.

    python scripts/gpu_data_blocks.py [--dims 1e6,1e7] [--reps 5] [--device cuda] [--compiled]

For each d: bp's default solver on poisson-2body-v1 (100 points, 16 probes), the draw timed
``--reps`` times after one warm-up at each block rule (synchronised around each draw; median),
the ratio, and the largest relative difference of the two sources from the same seed (the same
numbers summed in other blocks: rounding), and the step data's peak memory over the baseline
under each rule (on CUDA). ``--compiled`` adds the device's blocks with the closed forms
compiled (``PINNBENCH_COMPILE=1``; on a GPU they run eagerly by default, pinnbench/maths/fused.py:
compiled they were slower with the CPU's small blocks, reports/gpu-h200, second run), its
warm-up holding the compilation. ``--device cpu`` runs it on the CPU (a smoke test: both rules are
then the CPU's).
"""

from __future__ import annotations

import argparse
import statistics
import sys


def time_draws(solver, device: str, reps: int) -> tuple[float, object, int]:
    """Median seconds of ``reps`` draws after one warm-up, the last draw from seed 0, and the
    peak bytes allocated over the baseline while drawing (0 off CUDA)."""
    import torch

    from pinnbench.timing import clock

    cuda = torch.device(device).type == "cuda"
    if cuda:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps + 1):
        t0 = clock(device)
        solver.draw(torch.Generator(device=device).manual_seed(0))
        times.append(clock(device) - t0)
    data = solver.draw(torch.Generator(device=device).manual_seed(0))
    peak = torch.cuda.max_memory_allocated() - base if cuda else 0
    return statistics.median(times[1:]), data, peak


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default="1e6,1e7")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--compiled", action="store_true")
    args = ap.parse_args(argv)
    from pinnbench.commands.axes import parse_dims

    try:
        dims = parse_dims(args.dims)
    except ValueError as exc:
        ap.error(str(exc))
    if args.reps < 1:
        ap.error("--reps must be >= 1")
    import os

    from pinnbench.bench.solvers import build
    from pinnbench.maths import fused
    from pinnbench.problems import _chunked

    device_blocks = _chunked.DEVICE_BLOCKS
    # the CPU's rule on the device: so many blocks allowed that none is widened
    rules = (("cpu blocks", 2**62), ("device blocks", device_blocks))
    print(f"# Solver.draw of bp (poisson-2body-v1, 100 points, 16 probes) on {args.device}: "
          f"median of {args.reps} after 1 warm-up; the CPU's blocks ({_chunked.BLOCK_ELEMENTS} "
          f"numbers) against at most {device_blocks} per pass; source diff: max relative "
          "difference, same seed; peak: allocated over the baseline while drawing")
    print(f"{'d':>9} {'cpu blocks ms':>14} {'device blocks ms':>17} {'speed-up':>8} "
          f"{'source diff':>12} {'cpu peak MiB':>13} {'device peak MiB':>16}"
          + (f" {'compiled ms':>12}" if args.compiled else ""))
    for dim in dims:
        _, _, solver, why = build(dict(problem="poisson-2body-v1", dim=dim, width=128, depth=3,
                                       solver="bp", device=args.device))
        if why:
            print(f"{dim:>9} skipped: {why}")
            continue
        out = {}
        try:
            for label, blocks in rules:
                _chunked.DEVICE_BLOCKS = blocks
                out[label] = time_draws(solver, args.device, args.reps)
            if args.compiled:
                saved = os.environ.get(fused.ENV)
                os.environ[fused.ENV] = "1"
                try:
                    out["compiled"] = time_draws(solver, args.device, args.reps)
                finally:
                    if saved is None:
                        os.environ.pop(fused.ENV)
                    else:
                        os.environ[fused.ENV] = saved
        finally:
            _chunked.DEVICE_BLOCKS = device_blocks
        (slow, a, peak_a), (fast, b, peak_b) = out["cpu blocks"], out["device blocks"]
        diff = float(((a.source - b.source).abs().max() / b.source.abs().max()).cpu())
        compiled = f" {1e3 * out['compiled'][0]:>12.3f}" if args.compiled else ""
        print(f"{dim:>9} {1e3 * slow:>14.3f} {1e3 * fast:>17.3f} {slow / fast:>8.2f} "
              f"{diff:>12.2e} {peak_a / 2**20:>13.0f} {peak_b / 2**20:>16.0f}{compiled}",
              flush=True)
        del solver, a, b, out
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
