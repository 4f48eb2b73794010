"""Time to target (pinnbench/judge/targets.py) on hand-made curves: which bound is compared with what,
reached at the last point, never reached, no interval, and the median over seeds."""

from __future__ import annotations

import math

import pytest

from pinnbench.judge import targets, verdict


def pt(step, err, lo=None, hi=None, t=None):
    p = {"step": step, "time_s": 0.5 * step if t is None else t, "rel_l2": err}
    if lo is not None:
        p["rel_l2_lo"], p["rel_l2_hi"] = lo, hi
    return p


def row(curve, const=0.5, const_ci=(0.48, 0.52), affine=None, affine_ci=None, **kw):
    r = {"status": "ok", "curve": curve, "floor_const_rel_l2": const,
         "floor_affine_rel_l2": affine}
    if const_ci:
        r["floor_const_rel_l2_lo"], r["floor_const_rel_l2_hi"] = const_ci
    if affine_ci:
        r["floor_affine_rel_l2_lo"], r["floor_affine_rel_l2_hi"] = affine_ci
    return {**r, **kw}


def test_the_upper_bound_of_the_error_is_compared_with_the_lower_bound_of_the_fit():
    # step 4: error 0.45 < 0.48 but its upper bound 0.49 is not below the fit's lower 0.48
    # step 8: upper bound 0.47 < 0.48: reached there
    curve = [pt(0, 0.1, 0.09, 0.11), pt(1, 0.9, 0.85, 0.95), pt(2, 0.6, 0.55, 0.65),
             pt(4, 0.45, 0.41, 0.49), pt(8, 0.44, 0.41, 0.47), pt(16, 0.3, 0.28, 0.32)]
    hit = targets.time_to_target(row(curve))
    assert (hit.step, hit.time_s, hit.reached) == (8.0, 4.0, True)


def test_step_zero_does_not_count():
    # the untrained model below its fit at step 0 has not earned the target
    hit = targets.time_to_target(row([pt(0, 0.1, 0.09, 0.11), pt(1, 0.9, 0.85, 0.95)]))
    assert not hit.reached


def test_reached_at_the_last_point():
    curve = [pt(1, 0.9, 0.85, 0.95), pt(2, 0.7, 0.65, 0.75), pt(3, 0.3, 0.29, 0.31, t=7.25)]
    hit = targets.time_to_target(row(curve))
    assert (hit.step, hit.time_s) == (3.0, 7.25)


def test_never_reached_is_infinite():
    curve = [pt(1, 0.9, 0.85, 0.95), pt(2, 0.49, 0.47, 0.51)]  # overlaps the fit: not below
    hit = targets.time_to_target(row(curve))
    assert hit.step == math.inf and hit.time_s == math.inf and not hit.reached
    # a cell without a curve (out of memory) or with a blown-up error never reaches it either
    assert targets.time_to_target(row([], status="oom")).time_s == math.inf
    assert not targets.time_to_target(row([pt(1, math.nan), pt(2, math.inf)])).reached


def test_without_intervals_the_error_must_be_ten_percent_below_the_fit():
    # no interval on the floor: the point value against (1 - 0.10) * 0.5 = 0.45
    curve = [pt(1, 0.46, 0.3, 0.31), pt(2, 0.451), pt(4, 0.449), pt(8, 0.1)]
    hit = targets.time_to_target(row(curve, const_ci=None))
    assert hit.step == 4.0
    # no interval on the point (the floor has one): the same tolerance rule
    hit = targets.time_to_target(row([pt(1, 0.46), pt(2, 0.449)]))
    assert hit.step == 2.0


def test_the_affine_target_exists_only_where_the_row_has_an_affine_fit():
    curve = [pt(1, 0.4, 0.39, 0.41), pt(2, 0.2, 0.19, 0.21)]
    assert targets.time_to_target(row(curve), "affine") is None
    r = row(curve, affine=0.3, affine_ci=(0.29, 0.31))
    assert targets.time_to_target(r, "constant").step == 1.0
    assert targets.time_to_target(r, "affine").step == 2.0


def test_a_target_reached_at_the_last_point_agrees_with_the_verdict():
    curve = [pt(1, 0.9, 0.85, 0.95), pt(2, 0.3, 0.29, 0.31)]
    r = row(curve)
    last = curve[-1]
    assert verdict.compare(last["rel_l2"], r["floor_const_rel_l2"],
                           (last["rel_l2_lo"], last["rel_l2_hi"]),
                           (r["floor_const_rel_l2_lo"], r["floor_const_rel_l2_hi"])) == "below"
    assert targets.time_to_target(r).step == 2.0


def test_another_clock_can_be_read():
    curve = [{**pt(1, 0.9, 0.85, 0.95), "cpu_time_s": 1.5},
             {**pt(2, 0.3, 0.29, 0.31), "cpu_time_s": 3.5}]
    assert targets.time_to_target(row(curve), clock="cpu_time_s").time_s == 3.5
    # a point without that clock: reached at a step, time unknown (infinite)
    assert targets.time_to_target(row([pt(2, 0.3, 0.29, 0.31)]), clock="cpu_time_s").time_s \
        == math.inf


def test_seed_summary_median_and_k_of_n():
    fast = row([pt(1, 0.9, 0.85, 0.95), pt(2, 0.3, 0.29, 0.31, t=2.0)])
    slow = row([pt(1, 0.9, 0.85, 0.95), pt(8, 0.3, 0.29, 0.31, t=8.0)])
    never = row([pt(1, 0.9, 0.85, 0.95)])
    skipped = row([], status="skipped")
    s = targets.summarise([fast, slow, never, skipped])
    assert (s.reached, s.n, s.text) == (2, 3, "2 of 3 seeds reached")
    assert (s.median_time_s, s.median_step) == (8.0, 8.0)
    # an even count: the geometric mean of the two middle values; half missed: infinite
    s = targets.summarise([fast, slow])
    assert s.median_time_s == pytest.approx(4.0) and s.median_step == pytest.approx(4.0)
    assert targets.summarise([fast, never]).median_time_s == math.inf
    assert targets.summarise([skipped]) is None
