"""Time and accuracy of three ways to take s = ||x||^2 per row of an (n, d) float32 batch: the
column blocks of square-and-sum that pinnbench uses (problems/_chunked.py ``row_sum``), one
batched product (n,1,d) x (n,d,1), and ``vector_norm(x, dim=1)`` squared. One torch thread, the
mean of 5 calls after one warm-up; the error is the largest relative difference
from a float64 sum (docs/roofline.md, "s = ||x||^2 as one reduction is dropped").

    python scripts/sqnorm_choices.py --dims 1e3,1e5,3e6
"""

from __future__ import annotations

import argparse
import time

import torch

from pinnbench.numerals import parse_number
from pinnbench.problems._chunked import row_sum


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="1e3,1e5,3e6")
    ap.add_argument("--rows", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for d in (parse_number(t, "--dims", integer=True, minimum=1) for t in args.dims.split(",")):
        x = torch.randn(args.rows, d, generator=torch.Generator().manual_seed(0))
        ways = {"blocks": lambda: row_sum(x, torch.square),
                "bmm": lambda: torch.bmm(x.unsqueeze(1), x.unsqueeze(2)).view(-1),
                "norm^2": lambda: torch.linalg.vector_norm(x, dim=1).square()}
        ref = (x.double() ** 2).sum(1)
        cells = []
        for name, f in ways.items():
            f()
            t = time.perf_counter()
            for _ in range(5):
                s = f()
            ms = (time.perf_counter() - t) / 5 * 1e3
            err = float(((s.double() - ref).abs() / ref).max())
            cells.append(f"{name} {ms:.2f} ms, {err:.1e}")
        print(f"d = {d:g}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
