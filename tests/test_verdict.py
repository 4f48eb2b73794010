"""The status rule (diverged), the trained flag, the standing against the floors and the verdict
in words: pure functions of result rows."""

import math

import pytest

from pinnbench.judge import verdict


def row(**kw):
    base = {"problem": "p-v1", "dim": 100, "solver": "bp", "seed": 0, "status": "ok",
            "message": "", "steps_done": 500, "final_loss": 1e-3, "final_rel_l2": 0.01,
            "floor_const_rel_l2": 0.2, "floor_affine_rel_l2": 0.05,
            "curve": [{"step": 0, "rel_l2": 1.0, "loss": None},
                      {"step": 1, "rel_l2": 0.9, "loss": 10.0},
                      {"step": 500, "rel_l2": kw.get("final_rel_l2", 0.01),
                       "loss": kw.get("final_loss", 1e-3)}]}
    return {**base, **kw}


def test_blown_up_cells_of_the_issue_are_diverged():
    # bp[lr=100] at d = 100: rel L2 233 after 30 steps; sdze[lr=1000,normalize=false]: 1.13e9
    for rel, loss in ((233.0, 1.6e11), (1.13e9, 1.3e25)):
        status, message = verdict.final_status(row(final_rel_l2=rel, final_loss=loss))
        assert status == "diverged" and "blew up" in message, message


def test_growth_rules_catch_blow_ups_below_ten():
    grew = row(final_rel_l2=0.5, curve=[{"step": 0, "rel_l2": 1e-3, "loss": None},
                                        {"step": 10, "rel_l2": 0.5, "loss": 1.0}])
    assert verdict.final_status(grew)[0] == "diverged"
    loss_up = row(final_rel_l2=0.9, final_loss=1e8,
                  curve=[{"step": 0, "rel_l2": 1.0, "loss": None},
                         {"step": 1, "rel_l2": 1.0, "loss": 10.0},
                         {"step": 9, "rel_l2": 0.9, "loss": 1e8}])
    assert "loss grew" in verdict.final_status(loss_up)[1]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_is_diverged(bad):
    assert verdict.final_status(row(final_loss=bad))[0] == "diverged"
    r = row()
    r["curve"][-1]["rel_l2"] = bad
    assert verdict.final_status(r)[0] == "diverged"


def test_healthy_and_non_ok_rows_keep_their_status():
    assert verdict.final_status(row()) == ("ok", "")
    # at the trivial floor of 1 (no training progress) is not a blow-up
    assert verdict.final_status(row(final_rel_l2=1.0))[0] == "ok"
    assert verdict.final_status(row(status="oom", message="x", final_rel_l2=500)) == ("oom", "x")
    # a row read back from the store: NaN for missing numbers, no curve
    stored = row(final_loss=float("nan"), curve=[])
    assert verdict.final_status(stored)[0] == "ok"
    assert verdict.final_status({**stored, "final_rel_l2": 233.0})[0] == "diverged"


def test_trained_needs_the_stated_number_of_steps():
    assert verdict.trained(row(steps_done=verdict.MIN_TRAINED_STEPS))
    assert not verdict.trained(row(steps_done=39))
    assert not verdict.trained(row(steps_done=None))


@pytest.mark.parametrize("err,words", [
    (0.01, "below both trivial fits"),
    (0.052, "at the affine fit"),
    (0.1, "above the affine fit, below the constant fit"),
    (0.9, "above the trivial fits"),
    (0.205, "above the affine fit, at the constant fit"),
])
def test_standing_against_the_floors(err, words):
    assert verdict.standing(err, 0.2, 0.05).startswith(words)
    assert verdict.below_floor(err, 0.2, 0.05) == (words == "below both trivial fits")


def test_verdict_names_the_solver_below_the_floor_and_the_failures():
    rows = [row(solver="bp", dim=100), row(solver="bp", dim=1000, final_rel_l2=0.9),
            row(solver="sdze", dim=100, final_rel_l2=0.3),
            row(solver="sdze", dim=1000, steps_done=3),
            row(solver="zo", dim=100, final_rel_l2=233.0),
            row(solver="zo", dim=1000, status="oom", message="out of memory")]
    lines = verdict.problem_verdicts(rows)["p-v1"]
    text = "\n".join(lines)
    assert "bp is below both trivial fits at d = 100: 1 of 1 seeds below the constant fit, " \
        "1 of 1 below the affine fit (each seed against its own fits; relative L2 vs constant " \
        "/ affine fit: seed 0: 1.00e-02 vs 2.00e-01 / 5.00e-02)." in lines
    assert "bp is above the trivial fits at d = 10^3: 0 of 1 seeds" in text
    assert "sdze is above the trivial fits at d = 100: 0 of 1 seeds below the constant fit, " \
        "0 of 1 below the affine fit" in text
    assert "sdze did not train enough to judge (< 100 steps) at d = 10^3 (3 steps)." in lines
    assert "zo ended diverged at d = 100." in lines and "zo ended oom at d = 10^3." in lines


def test_intervals_over_the_test_points_decide_at_the_floor():
    # 0.056 is more than 10 % above 0.05, but the intervals overlap: within the noise
    words = verdict.standing(0.056, 0.2, 0.05, {"rel_l2": (0.045, 0.07),
                                                "affine": (0.04, 0.06)})
    assert words == "within the noise of the test set of the affine fit"
    # 0.049 is within 10 % of 0.05, but the intervals are apart: below
    assert verdict.standing(0.049, 0.2, 0.05, {"rel_l2": (0.0489, 0.0491),
                                               "affine": (0.0499, 0.0501)}) \
        == "below both trivial fits"
    r = row(final_rel_l2=0.056, final_rel_l2_lo=0.045, final_rel_l2_hi=0.07,
            floor_affine_rel_l2_lo=0.04, floor_affine_rel_l2_hi=0.06)
    assert "bp is within the noise of the test set of the affine fit at d = 100" in \
        "\n".join(verdict.problem_verdicts([r])["p-v1"])


def test_failures_say_how_many_seeds():
    rows = [row(solver="bp", dim=10**5, seed=s, status="oom") for s in range(3)] + \
        [row(solver="zo", dim=10**5, seed=0, status="timeout")] + \
        [row(solver="zo", dim=10**5, seed=s) for s in (1, 2)]
    lines = verdict.problem_verdicts(rows)["p-v1"]
    assert "bp ended oom at d = 10^5 (3 of 3 seeds)." in lines
    assert "zo ended timeout at d = 10^5 (1 of 3 seeds)." in lines


@pytest.mark.parametrize("isolated", [False, True])
def test_run_cell_applies_the_rule(isolated):
    """bp[lr=100] at d = 100 blows up to relative L2 ~ 1e2 with a finite loss: diverged."""
    from pinnbench.cells.cell import run_cell
    from pinnbench.solver import list_solvers

    if "bp" not in list_solvers():
        pytest.skip("the real solvers are not installed")
    r = run_cell({"problem": "poisson-2body-v1", "dim": 100, "solver": "bp[lr=100]",
                  "steps": 30, "threads": 1, "floors": False}, isolated=isolated)
    assert r["final_rel_l2"] > verdict.DIVERGED_REL_L2
    assert r["status"] == "diverged" and "blew up" in r["message"], r["message"]


def _seed(seed, err, fc, fa=None, **kw):
    return row(seed=seed, dim=1000, final_rel_l2=err, floor_const_rel_l2=fc,
               floor_affine_rel_l2=fa, **kw)


def test_each_seed_is_judged_against_its_own_floors():
    """Issue 21: errors 0.28 / 0.25 / 0.31 against the seeds' own constant fits 0.441 / 0.199 /
    0.299. The median error 0.28 is below the median fit 0.299, yet only seed 0 is below its
    own fit (0.25 > 0.199; 0.31 is within 10 % of 0.299): 1 of 3 seeds."""
    rows = [_seed(0, 0.28, 0.441), _seed(1, 0.25, 0.199), _seed(2, 0.31, 0.299)]
    counts = verdict.count_seeds(rows)
    assert (counts.n, counts.below_const, counts.uniform) == (3, 1, None)
    assert counts.text == "1 of 3 seeds below the constant fit"
    (line,) = verdict.problem_verdicts(rows)["p-v1"]
    assert line.startswith("bp at d = 10^3: 1 of 3 seeds below the constant fit ("), line
    assert "seed 1: 2.50e-01 vs 1.99e-01" in line and " is below" not in line


def test_a_seed_that_did_not_finish_counts_in_n_and_is_never_below():
    rows = [_seed(0, 0.1, 0.5, 0.3), _seed(1, 0.1, 0.5, 0.3, status="oom"),
            _seed(2, 0.1, 0.5, 0.3, steps_done=10), _seed(3, 0.1, 0.5, 0.3, status="skipped")]
    counts = verdict.count_seeds(rows)
    assert (counts.n, counts.below_const, counts.below_affine) == (3, 1, 1)
    assert counts.text == "1 of 3 seeds below the constant fit, 1 of 3 below the affine fit"
    assert counts.uniform is None and not counts.all_below


def test_the_intervals_of_each_seed_are_its_own():
    # seed 0's error interval overlaps its own fit's: at the fit, though 0.49 < 0.5
    rows = [_seed(0, 0.49, 0.5, final_rel_l2_lo=0.47, final_rel_l2_hi=0.51,
                  floor_const_rel_l2_lo=0.48, floor_const_rel_l2_hi=0.52),
            _seed(1, 0.3, 0.5, final_rel_l2_lo=0.29, final_rel_l2_hi=0.31,
                  floor_const_rel_l2_lo=0.48, floor_const_rel_l2_hi=0.52)]
    verdicts = verdict.count_seeds(rows).verdicts
    assert [v.constant for v in verdicts] == ["at", "below"]
    with pytest.raises(ValueError, match="own floors"):
        verdict.row_intervals(rows)
