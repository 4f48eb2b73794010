"""The report's tables as plain data for the template (which escapes every string).

Summary: one row per (problem, series, d) with the seed aggregates of ``aggregate.families``,
the trivial fits beside the error and the verdict in words; within each (problem, d) the best
value of each measured column (lowest error, time per step, peak memory) is flagged when at
least two series have that value, and only among the families that may be best (no diverged
seed, trained, error below the trivial fits: ``Family.may_be_best``). Each numeric cell carries
its full-precision value for machines (``data-value``) next to the rounded text for people.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from pinnbench.report.aggregate import Family, LogStats, nondefault_spec
from pinnbench.report.provenance import format_bytes

#: (column key, Family attribute, heading, formatter)
MEASURED = (
    ("rel_l2", "rel_l2", "final rel. L2", "sci"),
    ("time", "time_per_step", "time / step", "seconds"),
    ("data", "data_time", "of which data", "seconds"),
    ("solver", "solver_time", "of which solver", "seconds"),
    ("mem", "mem", "peak memory (total)", "bytes"),
)

#: the columns whose lowest value is flagged as the best of its (problem, d); the split of a
#: step's time is shown, not ranked (a solver that draws less data is not better for it)
RANKED = ("rel_l2", "time", "mem")

MESSAGE_CHARS = 600


@dataclass
class Cell:
    text: str
    value: float | None = None
    q25: float | None = None
    q75: float | None = None
    spread: str = ""
    best: bool = False
    note: str = ""


def fmt_sci(v: float) -> str:
    """Errors always in the same scientific form, so a column reads at a glance: 2.20e-03."""
    return f"{v:.2e}"


def fmt_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


FORMATS = {"sci": fmt_sci, "seconds": fmt_seconds, "bytes": format_bytes}


def _cell(stats: LogStats | None, kind: str) -> Cell:
    if stats is None:
        return Cell("–")
    f = FORMATS[kind]
    spread = f"{f(stats.q25)} – {f(stats.q75)}" if stats.n > 1 else ""
    return Cell(f(stats.median), stats.median, stats.q25, stats.q75, spread)


def summary_rows(fams: list[Family]) -> list[dict]:
    rows = []
    for f in sorted(fams, key=lambda f: (f.problem, f.dim, f.label)):
        cells = {key: _cell(getattr(f, attr), kind) for key, attr, _, kind in MEASURED}
        if f.mem is not None:
            cells["mem"].note = "GPU" if f.mem_kind == "gpu" else "CPU"
        ci = f.rel_l2_ci
        if ci and cells["rel_l2"].value is not None:
            noise = f"95 % over test points: {fmt_sci(ci[0])} – {fmt_sci(ci[1])}"
            cells["rel_l2"].spread = "; ".join(x for x in (cells["rel_l2"].spread, noise) if x)
        rows.append({
            "problem": f.problem, "label": f.label, "solver": f.solver, "dim": f.dim,
            "spec": nondefault_spec(f.solver), "cells": cells,
            "n_params": "–" if f.n_params is None or not math.isfinite(f.n_params)
            else f"{int(round(f.n_params)):,}",
            "n_params_value": f.n_params,
            "status": f.status_text, "ok": f.status_text == "ok",
            "n_seeds": f.n_seeds, "seeds": ",".join(str(s) for s in f.seeds),
            "floors": _floors_text(f), "verdict": f.verdict,
            "verdict_good": f.may_be_best, "may_be_best": f.may_be_best,
        })
    _flag_best(rows)
    return rows


def _floors_text(f: Family) -> list[str]:
    """Each trivial fit: one seed's value with its 95 % interval over the test points; several
    seeds' median with their range (each seed is judged against its own: the verdict)."""
    parts = []
    for name, v, band, span in (("A·c", f.floor_const, f.floor_const_ci, f.floor_const_range),
                                ("A·(a+b·x)", f.floor_affine, f.floor_affine_ci,
                                 f.floor_affine_range)):
        if v is None or not math.isfinite(v):
            continue
        if band:
            extra = f" [{fmt_sci(band[0])} – {fmt_sci(band[1])}]"
        elif span and span[0] != span[1]:
            extra = f" (seeds {fmt_sci(span[0])} – {fmt_sci(span[1])})"
        else:
            extra = ""
        parts.append(f"{name}: {fmt_sci(v)}{extra}")
    return parts or ["–"]


def _flag_best(rows: list[dict]) -> None:
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["problem"], r["dim"]), []).append(r)
    for group in groups.values():
        for key in RANKED:
            have = [r for r in group if r["cells"][key].value is not None]
            eligible = [r for r in have if r["may_be_best"]]
            if len(have) < 2 or not eligible:
                continue
            best = min(r["cells"][key].value for r in eligible)
            for r in eligible:
                r["cells"][key].best = r["cells"][key].value == best


def headings() -> list[str]:
    return [h for _, _, h, _ in MEASURED]


def keys() -> list[str]:
    return [k for k, *_ in MEASURED]


def failure_rows(df: pd.DataFrame) -> list[dict]:
    """Every cell that did not finish, with its message (truncated for the page)."""
    bad = df[df["status"] != "ok"].sort_values(["problem", "dim", "label", "seed"])
    out = []
    for r in bad.itertuples(index=False):
        msg = r.message or ""
        if len(msg) > MESSAGE_CHARS:
            msg = msg[:MESSAGE_CHARS] + f" … ({len(r.message) - MESSAGE_CHARS} more characters)"
        out.append({"problem": r.problem, "label": r.label, "solver": r.solver, "dim": r.dim,
                    "spec": nondefault_spec(r.solver),
                    "seed": r.seed, "status": r.status, "message": msg,
                    "steps_done": "–" if pd.isna(r.steps_done) else int(r.steps_done)})
    return out


def status_counts(df: pd.DataFrame) -> list[tuple[str, int]]:
    counts = df["status"].value_counts()
    return [(str(s), int(n)) for s, n in counts.items()]


def published_rows(df) -> list[dict]:
    """The published errors for the (problem, d) pairs of ``df`` beside the floors measured
    there (:func:`pinnbench.judge.published.beside_floors`), formatted, with a reading in words."""
    import math

    from pinnbench.judge.published import beside_floors

    table = beside_floors(df)
    out = []
    for r in table.to_dict("records"):
        const = r["floor_const_rel_l2"]
        if math.isnan(const):  # beside_floors gives NaN where the report has no floor
            continue
        affine = r["floor_affine_rel_l2"]
        has_affine = not math.isnan(affine)
        reading = ("above the constant fit: that error is within reach of A(x)·c"
                   if r["published_rel_l2"] > const else "below the constant fit")
        if has_affine and r["published_rel_l2"] <= const:
            reading += ("; above the affine fit" if r["published_rel_l2"] > affine
                        else "; below the affine fit too")
        out.append({"source": r["source"], "problem": r["problem"], "dim": int(r["dim"]),
                    "published": f"{r['published_rel_l2']:.2g}", "const": f"{const:.2g}",
                    "affine": f"{affine:.2g}" if has_affine else "-", "seeds": int(r["seeds"]),
                    "reading": reading})
    return out
