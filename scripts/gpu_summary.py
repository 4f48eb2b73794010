"""The tables of a GPU validation run (scripts/gpu-validate), as Markdown on stdout.

    python scripts/gpu_summary.py STORE [ENV_TXT]
    python scripts/gpu_summary.py --floors STORE [--device cuda]

The first: per solver and d, the status, steps done, time per step, GPU baseline and peak beside
the parameter bytes, and the final error beside the constant floor.

``--floors``: each measured step beside its physical floor, one read of W0,

    floor = 4 h d bytes / B,    B = bytes read + written per second by a device-to-device copy
                                    of 256 MiB on that card (pinnbench.bench.roofline.copy_rate),

and the counts of one step at that d on that device (``python -m pinnbench.bench ops``: ATen
ops, matrix products, host syncs, passes over W0, d-sized traffic in units of W0), so that two
runs on two cards (or the same card on two days) can be compared line by line: a step far above
its floor with few ops and one pass over W0 is the machine, one with many is the code.
"""

from __future__ import annotations

import math
import sys

from pinnbench.cells.store import load_results

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


BYTES_PER_NUMBER = 4


def w0_bytes(dim: int, width: int) -> int:
    """Bytes of the first layer's weights W0 (width x d, float32)."""
    return BYTES_PER_NUMBER * int(width) * int(dim)


def floor_s(dim: int, width: int, bytes_per_s: float) -> float:
    """The physical floor of a step: one read of W0 at the card's copy bandwidth."""
    return w0_bytes(dim, width) / bytes_per_s


def floors_table(df, bytes_per_s: float, counts: dict) -> str:
    """Markdown: per ok row of ``df`` (solver, d), time per step, floor, their ratio, and the
    counts ``counts[(solver spec, d)]`` (a dict of :class:`pinnbench.bench.ops.StepCounts`
    fields, or None where none were taken)."""
    lines = [f"- copy bandwidth (read + write): {bytes_per_s / 1e9:.1f} GB/s",
             "",
             "| solver | d | time/step (s) | W0 (GB) | floor (s) | step / floor | ATen ops "
             "| matrix products | host syncs (mid-step) | W0 sweeps | d-traffic (W0) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.sort_values(["solver_name", "dim"]).iterrows():
        if r["status"] != "ok":
            continue
        dim, width = int(r["dim"]), int(r["width"] or 128)
        fl = floor_s(dim, width, bytes_per_s)
        step = float(r["time_per_step_s"])
        c = counts.get((r["solver"], dim))
        cells = (["-"] * 5 if c is None else
                 [str(c["ops"]), str(c["matrix_products"]),
                  f"{c['host_syncs']} ({c['mid_step_syncs']})", f"{c['w0_sweeps']:.2f}",
                  f"{c['d_traffic_w0']:.1f}"])
        lines.append(f"| {r['solver_name']} | {dim:.0e} | {step:.4g} | "
                     f"{w0_bytes(dim, width) / 1e9:.3g} | {fl:.3g} | {step / fl:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def floors(store: str, device: str) -> str:
    """Measure the copy bandwidth and count one step of every ok (solver, d) of the store, on
    ``device``; the table of :func:`floors_table`."""
    from dataclasses import asdict

    from pinnbench.bench.ops import count_step
    from pinnbench.bench.roofline import copy_rate

    df = load_results(store)
    bw = copy_rate(device=device)
    counts = {}
    for _, r in df[df["status"] == "ok"].iterrows():
        key = (r["solver"], int(r["dim"]))
        if key not in counts:
            c = count_step(r["solver"], key[1], r["problem"], width=int(r["width"] or 128),
                           device=device)
            counts[key] = None if isinstance(c, str) else asdict(c)
    return floors_table(df, bw, counts)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--floors"]:
        device = "cuda"
        if "--device" in args:
            i = args.index("--device")
            device = args[i + 1]
            del args[i:i + 2]
        if len(args) != 2:
            sys.exit(__doc__)
        print(floors(args[1], device))
    elif len(args) in (1, 2):
        print(summary(args[0], args[1] if len(args) == 2 else None))
    else:
        sys.exit(__doc__)
