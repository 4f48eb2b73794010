"""Print this folder's README tables from the ablation store (markdown):

    .venv/bin/python reports/ablation-sdze/table.py /tmp/abl/ablation.sqlite

Per factor: the final error with it (the sdze default) and without it (the variant), median
and [min, max] over seeds, with the variance ratios at the final theta and the floors; the
numbers come from pinnbench.report.ablation (the report's own tested aggregation)."""

import sys

from pinnbench.report import aggregate, select_runs
from pinnbench.report.ablation import claims, variants
from pinnbench.cells.store import load_results


def err(v) -> str:
    bad = ", ".join(f"{k} {n}/{v.n_seeds}" for k, n in sorted(v.statuses.items()) if k != "ok")
    if v.err is None:
        return bad
    text = f"{v.err.median:.3f} [{v.err_min:.3f}, {v.err_max:.3f}]"
    return f"{text} ({bad})" if bad else text


def ratio(v, key: str) -> str:
    return f"{v.ratios[key]:.3g}" if key in v.ratios else "–"


def main(path: str) -> None:
    df = aggregate.prepare(select_runs(load_results(path), all_runs=True))
    vs = variants(df)
    dims = sorted({v.dim for v in vs})
    print("| variant (one factor changed) | " + " | ".join(
        f"d = {d:,}: final rel. L2, median [min, max] | ratio_step | ratio_held | cos_held | "
        f"below affine" for d in dims) + " |")
    print("|---|" + "---|---|---|---|---|" * len(dims))
    for factor in dict.fromkeys(v.factor for v in vs):
        cells = []
        for d in dims:
            (v,) = [v for v in vs if v.factor == factor and v.dim == d]
            cells.append(f"{err(v)} | {ratio(v, 'ratio_step')} | {ratio(v, 'ratio_held')} | "
                         f"{ratio(v, 'cos_held')} | {v.below_affine}/{v.n_ok}")
        print(f"| {factor} | " + " | ".join(cells) + " |")
    print()
    print("| d | constant fit (median over seeds) | affine fit | time per step of the default |")
    print("|---|---|---|---|")
    for d in dims:
        (v,) = [v for v in vs if v.factor == "sdze default" and v.dim == d]
        rows = df[(df["solver"] == v.solver) & (df["dim"] == d)]
        fc, fa = (rows[c].dropna().median() for c in ("floor_const_rel_l2", "floor_affine_rel_l2"))
        print(f"| {d:,} | {fc:.3f} | {fa:.3f} | "
              f"{v.time_per_step.median:.3g} s ({v.steps_done:.0f} steps) |")
    print()
    print("| claim | verdict | evidence |")
    print("|---|---|---|")
    for c in claims(df):
        print(f"| {c.claim} | {c.verdict} | {c.evidence} |")


if __name__ == "__main__":
    main(sys.argv[1])
