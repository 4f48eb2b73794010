"""The sharded stage of scripts/gpu-validate (issue 25, docs/sharding.md): one bp cell with its
input dimension sharded over every GPU present (NCCL, one GPU per rank), and the per-rank
measurements it recorded, as Markdown on stdout.

    python scripts/gpu_sharded.py STORE [--device cuda] [--ranks N] [--dims 1e7] [--steps 20]

``--ranks`` defaults to the number of CUDA devices; with fewer than 2 the stage has nothing to
shard and says so (exit 0). ``--device cpu --ranks 2`` runs the same stage on gloo (its test).
Exit 1 when the cell is not ``ok``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

GIB = 2**30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gpu_sharded.py")
    parser.add_argument("store")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ranks", type=int, default=None)
    parser.add_argument("--dims", default="1e7")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--problem", default="poisson-2body-v1")
    parser.add_argument("--solver", default="bp")
    parser.add_argument("--timeout", type=float, default=280.0)
    args = parser.parse_args(argv)
    ranks = args.ranks
    if ranks is None:
        import torch

        ranks = torch.cuda.device_count() if args.device.startswith("cuda") else 1
    if ranks < 2:
        print(f"sharded stage: {ranks} device(s), nothing to shard (needs 2 or more)")
        return 0
    cmd = [sys.executable, "-m", "pinnbench.cli", "run", "--problems", args.problem,
           "--solvers", args.solver, "--dims", args.dims, "--device", args.device,
           "--steps", str(args.steps), "--ranks", str(ranks), "--timeout", str(args.timeout),
           "--no-floors", "--no-report", "--store", args.store]
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
    from pinnbench.cells.store import load_results

    df = load_results(args.store)
    rows = df[df["ranks"] == ranks]
    if rows.empty:
        print(f"sharded stage: no row with ranks = {ranks} in {args.store}")
        return 1
    row = rows.iloc[-1]
    print(f"## sharded: {row['solver_name']} on {row['problem']}, d = {row['dim']:g}, "
          f"{ranks} ranks ({args.device}): {row['status']}, "
          f"{row['time_per_step_s'] or float('nan'):.4g} s/step, rel L2 "
          f"{row['final_rel_l2'] or float('nan'):.3g} {row['message'] or ''}")
    print("\n| rank | columns | s/step | comm s/step | peak GPU GiB | peak CPU GiB | sent MB |")
    print("|---|---|---|---|---|---|---|")
    for m in row["rank_measurements"] or []:
        def num(key, scale=1.0, fmt=".4g"):
            v = m.get(key)
            return "-" if v is None else format(v / scale, fmt)
        cols = m.get("columns") or ["?", "?"]
        print(f"| {m.get('rank')} | [{cols[0]}, {cols[1]}) | {num('time_per_step_s')} | "
              f"{num('comm_time_per_step_s')} | {num('peak_gpu_allocated_bytes', GIB, '.3f')} | "
              f"{num('peak_cpu_bytes', GIB, '.3f')} | {num('bytes_communicated', 1e6, '.3g')} |")
    return 0 if row["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
