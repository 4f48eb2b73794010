"""The report's comparisons under the protocol (pinnbench/report/protocol.py): equal steps,
equal time, time to target and the performance profile, recomputed here by hand from rows whose
first step below their own constant fit is set per seed."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pinnbench.report import aggregate, protocol, write_report
from pinnbench.cells.schema import COLUMNS
from report_fixtures import SOLVERS, base_row, parse_page, spec

P = "poisson-2body-scaled-v1"
ABOVE, BELOW = 0.8, 0.3  # against a constant fit of 0.5 with the interval [0.49, 0.51]
#: (solver key, d) -> (last step, seconds per step, first step below the fit per seed or None)
PLAN = {
    ("bp", 100): (16, 1.5, (4, 8, 8)),
    ("sdze8", 100): (8, 1.0, (2, 2, None)),
    ("bp", 1000): (16, 1.0, (4, 4, 4)),
    ("sdze8", 1000): (8, 1.0, (None, None, 2)),
}


def curve(last, dt, first_below):
    steps = [0] + [2**k for k in range(10) if 2**k <= last]
    out = []
    for s in steps:
        e = 1.0 if s == 0 else BELOW if first_below is not None and s >= first_below else ABOVE
        out.append({"step": s, "time_s": s * dt, "loss": 1.0, "rel_l2": e,
                    "rel_l2_lo": 0.99 * e, "rel_l2_hi": 1.01 * e})
    return out


def rows() -> pd.DataFrame:
    out = []
    for (key, dim), (last, dt, firsts) in PLAN.items():
        name, params = SOLVERS[key]
        for seed, first in enumerate(firsts):
            c = curve(last, dt, first)
            r = base_row()
            r.update(run_id="p", cell_id=f"{key}|{dim}|{seed}", problem=P, dim=dim, seed=seed,
                     solver=spec(key), solver_name=name, solver_params=dict(params),
                     steps=16, steps_done=last, curve=c, final_rel_l2=c[-1]["rel_l2"],
                     final_rel_l2_lo=c[-1]["rel_l2_lo"], final_rel_l2_hi=c[-1]["rel_l2_hi"],
                     floor_const_rel_l2=0.5, floor_const_rel_l2_lo=0.49,
                     floor_const_rel_l2_hi=0.51, floor_affine_rel_l2=None)
            out.append(r)
    return pd.DataFrame(out)[list(COLUMNS)]


@pytest.fixture(scope="module")
def df():
    return aggregate.prepare(rows())


def _by(points):
    return {(p.dim, p.series): p for p in points}


def test_equal_steps_is_the_largest_step_every_cell_reached(df):
    pts = _by(protocol.at_equal_steps(df))
    # bp logs up to 16, sdze up to 8: both compared at step 8
    bp, sd = pts[(100, spec("bp"))], pts[(100, spec("sdze8"))]
    assert bp.at == sd.at == 8
    assert (bp.err.median, bp.below, bp.n) == (BELOW, 3, 3)
    assert (sd.err.median, sd.below, sd.n) == (BELOW, 2, 3)  # errors 0.3, 0.3, 0.8


def test_equal_time_takes_the_last_point_at_or_before_the_shortest_run(df):
    pts = _by(protocol.at_equal_time(df))
    # d = 100: sdze ends at 8 s, bp at 24 s; bp's last point at or before 8 s is step 4 (6 s)
    bp, sd = pts[(100, spec("bp"))], pts[(100, spec("sdze8"))]
    assert bp.at == sd.at == 8.0
    assert bp.steps == [4, 4, 4] and sd.steps == [8, 8, 8]
    assert (bp.err.median, bp.below) == (ABOVE, 1)  # seeds below from step 4, 8, 8
    assert (sd.err.median, sd.below) == (BELOW, 2)


def test_time_to_target_per_problem_d_and_solver(df):
    ttt = {(t.dim, t.series): t for t in protocol.time_to_target(df)}
    bp100 = ttt[(100, spec("bp"))].constant
    assert (bp100.median_time_s, bp100.median_step, bp100.reached) == (12.0, 8.0, 3)  # 6, 12, 12 s
    sd100 = ttt[(100, spec("sdze8"))].constant
    assert (sd100.median_time_s, sd100.reached, sd100.n) == (2.0, 2, 3)
    sd1000 = ttt[(1000, spec("sdze8"))].constant
    assert sd1000.median_time_s == math.inf and sd1000.text == "1 of 3 seeds reached"
    assert ttt[(100, spec("bp"))].affine is None  # no affine fit in these rows


def test_the_performance_profile_recomputed_by_hand(df):
    prof = protocol.performance_profile(protocol.time_to_target(df))
    assert prof.workloads == [(P, 100), (P, 1000)]
    # d = 100: bp 12 s, sdze 2 s -> ratios 6 and 1; d = 1000: bp 4 s, sdze inf -> 1 and inf
    assert prof.ratios[spec("bp")] == [6.0, 1.0]
    assert prof.ratios[spec("sdze8")] == [1.0, math.inf]
    assert [prof.rho(spec("bp"), t) for t in (1, 4, 6)] == [0.5, 0.5, 1.0]
    assert [prof.rho(spec("sdze8"), t) for t in (1, 4, 100)] == [0.5, 0.5, 0.5]
    assert prof.tau_max == 6.0


def test_a_workload_no_solver_reached_counts_for_nobody():
    ttt = [protocol.ToTarget("p", 1, s, s, _summary(t), None)
           for s, t in (("a", math.inf), ("b", math.inf))]
    prof = protocol.performance_profile(ttt)
    assert prof.ratios == {"a": [math.inf], "b": [math.inf]}
    assert prof.rho("a", 1e9) == 0.0


def test_a_series_that_ran_one_extra_workload_does_not_empty_the_profile():
    """The ablation re-run ran sdze and sdze[crns=false] on a fourth-order problem too, and no
    other row there: no workload was run by every series, and the page's profile vanished. The
    profile is over the workloads run by the most series; the series that did not run all of
    them are left out by name (here c, which ran only the extra workload, where a ran too)."""
    t = {("p", 1): {"a": 2.0, "b": 4.0, "d": 8.0}, ("p", 2): {"a": 3.0, "b": 1.0, "d": 1.0},
         ("q", 1): {"a": 5.0, "c": 5.0}}
    ttt = [protocol.ToTarget(p, d, s, s.upper(), _summary(v), None)
           for (p, d), by in t.items() for s, v in by.items()]
    prof = protocol.performance_profile(ttt)
    assert prof.workloads == [("p", 1), ("p", 2)]
    assert prof.ratios == {"a": [1.0, 3.0], "b": [2.0, 1.0], "d": [4.0, 1.0]}
    assert prof.left_out == ["C"]
    # every series on every workload: nothing left out
    full = protocol.performance_profile([x for x in ttt if x.series != "c"])
    assert full.left_out == [] and full.workloads == [("p", 1), ("p", 2)]


def test_series_tuned_per_d_give_a_profile_over_one_workload():
    """The ablation page's series carry their tuned lr and budget, so no series ran both d: the
    workloads each tied at the most series, no series ran them all, and the profile vanished
    again. The profile is over the set of workloads run in full by the most series (the larger
    set on a tie, then the first in order); the others are left out by name."""
    t = {("p", 1): {"a": 2.0, "b": 4.0, "c": 1.0}, ("p", 2): {"x": 1.0, "y": 3.0}}
    ttt = [protocol.ToTarget(p, d, s, s.upper(), _summary(v), None)
           for (p, d), by in t.items() for s, v in by.items()]
    prof = protocol.performance_profile(ttt)
    assert prof.workloads == [("p", 1)]
    assert prof.ratios == {"a": [2.0], "b": [4.0], "c": [1.0]}
    assert prof.left_out == ["X", "Y"]
    # a tie in series and in workloads: the first workload in order
    t[("p", 2)]["z"] = 2.0
    ttt = [protocol.ToTarget(p, d, s, s.upper(), _summary(v), None)
           for (p, d), by in t.items() for s, v in by.items()]
    prof = protocol.performance_profile(ttt)
    assert prof.workloads == [("p", 1)] and prof.left_out == ["X", "Y", "Z"]


def _summary(t):
    from pinnbench.judge.targets import Summary

    return Summary("constant", t, t, int(math.isfinite(t)), 1)


def test_the_page_shows_the_comparison_tables(tmp_path):
    out = tmp_path / "r"
    page = parse_page(write_report(rows(), out).read_text(encoding="utf-8"))

    def table(name):
        return {(int(r["attrs"]["data-dim"]), r["attrs"]["data-series"]):
                {c["attrs"]["data-col"]: c["text"] for c in r["cells"] if "data-col" in c["attrs"]}
                for r in page.tables[name] if "data-dim" in r["attrs"]}

    steps, time, ttt = table("equal-steps-table"), table("equal-time-table"), table("ttt-table")
    assert steps[(100, spec("sdze8"))] == {"at": "8", "err": "3.00e-01", "below": "2 of 3 seeds"}
    assert time[(100, spec("bp"))] == {"at": "8 s", "err": "8.00e-01", "steps": "4",
                                       "below": "1 of 3 seeds"}
    assert ttt[(100, spec("bp"))]["constant_time"] == "12 s"
    assert ttt[(1000, spec("sdze8"))]["constant_time"] == "∞"
    assert ttt[(1000, spec("sdze8"))]["constant_reached"] == "1 of 3 seeds reached"
    assert ttt[(100, spec("bp"))]["affine_time"] == "no fit"
    prof = {r["attrs"]["data-series"]: [c["text"] for c in r["cells"][1:]]
            for r in page.tables["profile-table"] if "data-series" in r["attrs"]}
    assert prof[spec("bp")] == ["0.50", "0.50", "0.50", "0.50", "0.50"]  # tau 1 .. 4; 6 needed
    assert prof[spec("sdze8")] == ["0.50"] * 5
    assert (out / "figures" / "performance_profile.png").stat().st_size > 5_000
