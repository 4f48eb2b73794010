"""The table of a GPU validation run (scripts/gpu-validate), as Markdown on stdout:
per solver and d, the status, steps done, time per step, GPU baseline and peak beside the
parameter bytes, and the final error beside the constant floor.

    python scripts/gpu_summary.py STORE [ENV_TXT]
"""

from __future__ import annotations

import math
import sys

from pinnbench.store import load_results

GIB = 2**30


def _num(v, fmt: str) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(f) else format(f, fmt)


def summary(store: str, env_txt: str | None = None) -> str:
    df = load_results(store)
    lines = []
    if env_txt:
        with open(env_txt) as fh:
            device = [ln.strip() for ln in fh if ln.startswith(("device ", "torch "))]
        lines += [f"- {ln}" for ln in device] + [""]
    lines += ["| solver | d | status | steps | time/step (s) | setup (s) | GPU baseline (GiB) "
              "| GPU peak alloc (GiB) | GPU peak reserved (GiB) | params (GiB) | rel L2 "
              "| const floor | message |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.sort_values(["solver_name", "dim"]).iterrows():
        lines.append(
            f"| {r['solver_name']} | {int(r['dim']):.0e} | {r['status']} | "
            f"{_num(r['steps_done'], '.0f')} | {_num(r['time_per_step_s'], '.4g')} | "
            f"{_num(r['setup_time_s'], '.3g')} | "
            f"{_num(_gib(r['baseline_gpu_allocated_bytes']), '.3f')} | "
            f"{_num(_gib(r['peak_gpu_allocated_bytes']), '.3f')} | "
            f"{_num(_gib(r['peak_gpu_reserved_bytes']), '.3f')} | "
            f"{_num(_gib(r['param_bytes']), '.3f')} | {_num(r['final_rel_l2'], '.3g')} | "
            f"{_num(r['floor_const_rel_l2'], '.3g')} | {str(r['message'] or '')[:80]} |")
    return "\n".join(lines)


def _gib(v):
    try:
        f = float(v)
    except (TypeError, ValueError):  # None, pandas.NA
        return None
    return None if math.isnan(f) else f / GIB


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    print(summary(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
