"""The report's comparisons under the protocol (docs/protocol.md): solvers side by side at equal
steps, at equal training time and by time to target, and the performance profile over the
workloads (problem, d). Pure functions of the prepared rows
(:func:`pinnbench.report.aggregate.prepare`).

**Compared cells.** At one (problem, d), the cells that finished (status ``ok``, after
:func:`pinnbench.judge.verdict.final_status`) and logged a curve; cells that failed are listed in
the report's failure table and count as "never reached" in time to target.

**Equal steps.** Every cell evaluates at steps 1, 2, 4, 8, ... and its last
(:func:`pinnbench.cells.measurement.eval_steps`). The common step of a (problem, d) is the largest
step that appears in the curve of every compared cell: the errors there are measured, not
interpolated.

**Equal time.** The common time of a (problem, d) is the smallest final training time
(``time_s`` of the last curve point: summed step times, evaluation excluded) over the compared
cells: every cell trained at least that long. Each cell's error at that time is that of its
**last evaluated point at or before it** (no interpolation: between evaluations the error is
not known, and a straight line between two log-spaced evaluations would invent one).

At both, each seed is judged against its own constant fit by the rule of
:func:`pinnbench.judge.targets.reaches` ("k of n seeds below"), and the error shown is the median over
seeds in log space (:class:`pinnbench.report.aggregate.LogStats`).

**Performance profile** (Dolan & Moré 2002, "Benchmarking optimization software with
performance profiles"; AlgoPerf's scoring, Dahl et al. 2023). For solver s and workload w let
t(s, w) be the median over seeds of the time to the constant-fit target
(:func:`pinnbench.judge.targets.summarise`; ``inf`` when missed) and r(s, w) = t(s, w) / min_s t(s, w)
(``inf`` when t(s, w) is ``inf``, and for every solver where no solver reached the target). The
profile is rho_s(tau) = |{w : r(s, w) <= tau}| / |W| over the workloads W that every profiled
solver ran, for tau from 1 to :data:`TAU_MAX` (4, as AlgoPerf) or the largest finite ratio if
larger. W is the set of workloads run in full by the most solvers, the larger set on a tie, then
the first in order (every workload, when every solver ran every one); a solver that did not run all
of W is left out of the profile, by name (ours: an ablation's extra problem run by two of its rows,
or series whose tuned lr differs per d, would otherwise leave no W at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pinnbench.judge import targets
from pinnbench.report.aggregate import LogStats

TAU_MAX = 4.0
#: the tau at which the page tabulates the profile
TAU_TABLE = (1.0, 1.5, 2.0, 3.0, 4.0)


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    return df.to_dict("records")


def compared(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells that finished and logged a curve point after step 0."""
    return [r for r in rows if r.get("status") == "ok"
            and any(float(p["step"]) >= 1 for p in targets.curve_of(r))]


def common_step(rows: list[dict[str, Any]]) -> int | None:
    """The largest step >= 1 in every row's curve (None without rows or without one)."""
    sets = [{int(p["step"]) for p in targets.curve_of(r) if float(p["step"]) >= 1} for r in rows]
    if not sets:
        return None
    common = set.intersection(*sets)
    return max(common) if common else None


def point_at_step(row: dict[str, Any], step: int) -> dict[str, Any] | None:
    return next((p for p in targets.curve_of(row) if int(p["step"]) == step), None)


def _time(p: dict[str, Any], clock: str) -> float | None:
    try:
        t = float(p.get(clock))
    except (TypeError, ValueError):
        return None
    return t if math.isfinite(t) else None


def common_time(rows: list[dict[str, Any]], clock: str = "time_s") -> float | None:
    """The smallest final training time over the rows (None when a row has no time)."""
    ends = []
    for r in rows:
        times = [_time(p, clock) for p in targets.curve_of(r)]
        times = [t for t in times if t is not None]
        if not times:
            return None
        ends.append(max(times))
    return min(ends) if ends else None


def point_at_time(row: dict[str, Any], t: float, clock: str = "time_s") -> dict[str, Any] | None:
    """The row's last evaluated point whose time is at or before ``t``."""
    before = [p for p in targets.curve_of(row)
              if _time(p, clock) is not None and _time(p, clock) <= t]
    return before[-1] if before else None


@dataclass
class AtPoint:
    """One series at a common step or time: its seeds' errors there, judged per seed."""

    problem: str
    dim: int
    series: str
    label: str
    at: float  # the common step, or the common time (s)
    err: LogStats | None
    below: int  # seeds below their own constant fit there
    n: int
    steps: list[int]  # the steps of the points used (equal time: they differ)


def _at(df: pd.DataFrame, which: str, clock: str = "time_s") -> list[AtPoint]:
    out = []
    for (problem, dim), g in df.groupby(["problem", "dim"], sort=True):
        rows = compared(_rows(g))
        at = common_step(rows) if which == "step" else common_time(rows, clock)
        if at is None:
            continue
        by_series: dict[str, list[dict]] = {}
        for r in rows:
            by_series.setdefault(r["series"], []).append(r)
        for series, rs in sorted(by_series.items()):
            pts = [(r, point_at_step(r, at) if which == "step" else point_at_time(r, at, clock))
                   for r in rs]
            pts = [(r, p) for r, p in pts if p is not None]
            below = 0
            for r, p in pts:
                floor = targets.floor_of(r, "constant")
                below += floor is not None and targets.reaches(p, floor)
            out.append(AtPoint(problem, int(dim), series, rs[0]["label"], float(at),
                               LogStats.of([p.get("rel_l2") for _, p in pts]), below, len(rs),
                               sorted(int(p["step"]) for _, p in pts)))
    return out


def at_equal_steps(df: pd.DataFrame) -> list[AtPoint]:
    """Every series at the common step of its (problem, d) (module docstring)."""
    return _at(df, "step")


def at_equal_time(df: pd.DataFrame, clock: str = "time_s") -> list[AtPoint]:
    """Every series at the common training time of its (problem, d) (module docstring)."""
    return _at(df, "time", clock)


@dataclass
class ToTarget:
    problem: str
    dim: int
    series: str
    label: str
    constant: targets.Summary | None
    affine: targets.Summary | None


def time_to_target(df: pd.DataFrame, clock: str = "time_s") -> list[ToTarget]:
    """Per (problem, d, series): time to the constant and the affine fit over its seeds."""
    out = []
    for (problem, dim, series), g in df.groupby(["problem", "dim", "series"], sort=True):
        rows = _rows(g)
        out.append(ToTarget(problem, int(dim), series, rows[0]["label"],
                            targets.summarise(rows, "constant", clock),
                            targets.summarise(rows, "affine", clock)))
    return out


@dataclass
class Profile:
    """rho(tau) per series over the workloads every series ran."""

    workloads: list[tuple[str, int]]
    #: series -> ratio r(s, w) per workload (in the order of ``workloads``)
    ratios: dict[str, list[float]]
    labels: dict[str, str]
    #: the labels of the series that did not run every one of ``workloads`` (sorted)
    left_out: list[str] = field(default_factory=list)

    def rho(self, series: str, tau: float) -> float:
        r = self.ratios[series]
        return sum(x <= tau for x in r) / len(r)

    @property
    def tau_max(self) -> float:
        finite = [x for r in self.ratios.values() for x in r if math.isfinite(x)]
        return max([TAU_MAX, *finite])


def performance_profile(ttt: list[ToTarget]) -> Profile | None:
    """The performance profile of the module docstring from :func:`time_to_target`'s rows
    (constant-fit target); None when fewer than two series ran any one workload."""
    times: dict[str, dict[tuple[str, int], float]] = {}
    labels: dict[str, str] = {}
    for t in ttt:
        if t.constant is None:
            continue
        times.setdefault(t.series, {})[(t.problem, t.dim)] = t.constant.median_time_s
        labels[t.series] = t.label
    # candidate workload sets: each series' own and each single workload; the profile is over
    # the one run in full by the most series, the larger on a tie, then the first in order
    candidates = {frozenset(by) for by in times.values()}
    candidates |= {frozenset([w]) for by in times.values() for w in by}

    def rank(ws: frozenset) -> tuple:
        return (-sum(ws <= set(by) for by in times.values()), -len(ws), sorted(ws))

    workloads = sorted(min(candidates, key=rank)) if candidates else []
    left = sorted(labels[s] for s, by in times.items() if not set(workloads) <= set(by))
    times = {s: by for s, by in times.items() if set(workloads) <= set(by)}
    if len(times) < 2 or not workloads:
        return None
    ratios: dict[str, list[float]] = {s: [] for s in times}
    for w in workloads:
        best = min(times[s][w] for s in times)
        for s in times:
            t = times[s][w]
            ratios[s].append(t / best if math.isfinite(t) and math.isfinite(best) and best > 0
                             else (1.0 if t == best == 0 else math.inf))
    return Profile(workloads, ratios, {s: labels[s] for s in times}, left)


def profile_figure(profile: Profile, style):
    """rho_s(tau) against tau, one step line per series."""
    import matplotlib.pyplot as plt

    from pinnbench.report.figures import PANEL_H, PANEL_W, _legend, theme

    with plt.rc_context(theme()):
        fig, ax = plt.subplots(figsize=(PANEL_W * 1.3, PANEL_H))
        tau_max = profile.tau_max
        handles = []
        for s in sorted(profile.ratios, key=lambda s: profile.labels[s]):
            finite = sorted(x for x in profile.ratios[s] if math.isfinite(x))
            xs = [1.0] + finite + [tau_max]
            ys = [profile.rho(s, x) for x in xs]
            (h,) = ax.step(xs, ys, where="post", color=style.color[s], lw=1.8,
                           label=profile.labels[s])
            handles.append(h)
        ax.set_xlim(1.0, tau_max)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("τ (time to target within τ × the best)")
        ax.set_ylabel("fraction of workloads")
        named = ", ".join(f"{p} d={d}" for p, d in profile.workloads[:3])
        more = f" and {len(profile.workloads) - 3} more" if len(profile.workloads) > 3 else ""
        ax.set_title(f"{len(profile.workloads)} workload(s): {named}{more}", fontsize=9)
        _legend(fig, handles)
    return fig


# ------------------------------------------------------------------------------- for the page
def _sci(v: float | None) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.2e}"


def fmt_time(t: float | None) -> str:
    if t is None:
        return "–"
    if math.isinf(t):
        return "∞"
    return f"{t:.3g} s"


def fmt_steps(s: float | None) -> str:
    if s is None:
        return "–"
    return "∞" if math.isinf(s) else f"{s:.0f}"


def _at_rows(points: list[AtPoint], which: str) -> list[dict[str, Any]]:
    out = []
    for p in points:
        steps = sorted(set(p.steps))
        out.append({
            "problem": p.problem, "dim": p.dim, "series": p.series, "label": p.label,
            "at": f"{p.at:.0f}" if which == "step" else fmt_time(p.at), "at_value": repr(p.at),
            "err": _sci(p.err.median if p.err else None),
            "err_value": repr(p.err.median) if p.err else "",
            "below": f"{p.below} of {p.n} seeds",
            "steps": (f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}–{steps[-1]}")
            if steps else "–",
        })
    return out


def section(df: pd.DataFrame, clock: str = "time_s") -> dict[str, Any]:
    """The tables of the comparison section for the template."""
    ttt = time_to_target(df, clock)
    profile = performance_profile(ttt)
    tt_rows = []
    for t in ttt:
        row = {"problem": t.problem, "dim": t.dim, "series": t.series, "label": t.label}
        for name, s in (("constant", t.constant), ("affine", t.affine)):
            row[f"{name}_time"] = fmt_time(s.median_time_s) if s else "no fit"
            row[f"{name}_time_value"] = repr(s.median_time_s) if s else ""
            row[f"{name}_step"] = fmt_steps(s.median_step) if s else "–"
            row[f"{name}_reached"] = s.text if s else "–"
        tt_rows.append(row)
    profile_rows = []
    if profile is not None:
        for s in sorted(profile.ratios, key=lambda s: profile.labels[s]):
            profile_rows.append({"series": s, "label": profile.labels[s],
                                 "rho": [f"{profile.rho(s, tau):.2f}" for tau in TAU_TABLE]})
    return {"steps": _at_rows(at_equal_steps(df), "step"),
            "time": _at_rows(at_equal_time(df, clock), "time"),
            "ttt": tt_rows, "profile": profile_rows, "taus": [f"{t:g}" for t in TAU_TABLE],
            "n_workloads": len(profile.workloads) if profile else 0,
            "profile_left_out": ", ".join(profile.left_out) if profile else ""}
