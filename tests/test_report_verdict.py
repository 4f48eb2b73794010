"""The report's honesty: blown-up cells are diverged, untrained or at-floor cells are never
highlighted as best, every error has its floors and a verdict beside it, and the page says in
words which solver is below which floor."""

from __future__ import annotations

import pandas as pd
import pytest

from pinnbench.report import write_report
from report_fixtures import P1, base_row, parse_page, spec, summary_table

FLOOR_C, FLOOR_A = 0.9, 0.6


def _row(key, dim, err, steps=1000, **kw):
    name = "sdze" if key.startswith("sdze") else key
    r = base_row()
    r.update(cell_id=f"{key}|{dim}", solver=spec(key), solver_name=name, dim=dim,
             final_rel_l2=err, best_rel_l2=err, steps_done=steps, floor_const_rel_l2=FLOOR_C,
             floor_affine_rel_l2=FLOOR_A, final_loss=1e-3,
             curve=[{"step": 0, "time_s": 0.0, "loss": None, "rel_l2": 1.0},
                    {"step": steps, "time_s": 1.0, "loss": 1e-3, "rel_l2": err}])
    r.update(kw)
    return r


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from report_fixtures import SOLVERS

    rows = [
        _row("bp", 1000, 0.01),                      # trained, below both fits: best
        _row("zo", 1000, 233.0, final_loss=1.6e11),  # blew up but stored ok
        _row("sdze8", 1000, 0.001, steps=39),        # lowest error, but 39 steps
        _row("sdze16", 1000, 0.61),                  # at the affine fit
        _row("bp", 10000, 1.5),                      # above both fits
        _row("sdze8", 10000, 1.6),                   # above both fits
    ]
    for r in rows:
        r["solver_params"] = dict(SOLVERS[r["cell_id"].split("|")[0]][1])
    out = write_report(pd.DataFrame(rows), tmp_path_factory.mktemp("verdict"))
    html = out.read_text(encoding="utf-8")
    return html, summary_table(parse_page(html))


def _classes(cell):
    return cell["attrs"].get("class", "").split()


def test_a_cell_that_blew_up_is_reported_diverged_and_not_plotted_as_a_value(page):
    html, rows = page
    zo = rows[(P1, spec("zo"), 1000)]
    assert zo["status"]["text"].startswith("diverged"), zo["status"]
    assert zo["rel_l2"]["text"] == "–"
    assert "relative L2 error 233 &gt; 10" in html or "relative L2 error 233 > 10" in html


def test_only_trained_cells_below_the_floors_are_best(page):
    _, rows = page
    group = {k[1]: v for k, v in rows.items() if k[2] == 1000}
    for col in ("rel_l2", "time", "mem"):
        best = {s for s, v in group.items() if "best" in _classes(v[col])}
        assert best <= {spec("bp")}, (col, best)
    assert "best" in _classes(group[spec("bp")]["rel_l2"])
    # at 1e4 every solver is above the trivial fits: nothing is best
    assert not any("best" in _classes(v[c]) for k, v in rows.items() if k[2] == 10000
                   for c in ("rel_l2", "time", "mem"))


def test_each_error_has_its_floors_and_a_verdict_beside_it(page):
    _, rows = page
    bp = rows[(P1, spec("bp"), 1000)]
    assert "9.00e-01" in bp["floors"]["text"] and "6.00e-01" in bp["floors"]["text"]
    assert bp["verdict"]["text"] == "below both trivial fits (1 of 1 seeds)"
    assert rows[(P1, spec("sdze8"), 1000)]["verdict"]["text"].startswith("untrained (39 steps")
    assert rows[(P1, spec("sdze16"), 1000)]["verdict"]["text"].startswith("at the affine fit")
    assert rows[(P1, spec("bp"), 10000)]["verdict"]["text"] == \
        "above the trivial fits (1 of 1 seeds)"


def test_the_page_has_a_verdict_in_words(page):
    html, _ = page
    assert 'id="verdict"' in html
    assert "bp is below both trivial fits at d = 10^3" in html
    assert "bp is above the trivial fits at d = 10^4" in html
    assert "did not train enough to judge (&lt; 100 steps) at d = 10^3 (39 steps)" in html
    assert "ended diverged at d = 10^3" in html


def test_intervals_over_the_test_points_are_shown_beside_the_error_and_floors(tmp_path):
    r = _row("bp", 1000, 0.01, final_rel_l2_lo=0.009, final_rel_l2_hi=0.011,
             floor_affine_rel_l2_lo=0.55, floor_affine_rel_l2_hi=0.65)
    html = write_report(pd.DataFrame([r]), tmp_path / "p").read_text(encoding="utf-8")
    cells = summary_table(parse_page(html))[(P1, spec("bp"), 1000)]
    assert cells["rel_l2"]["spread"] == "95 % over test points: 9.00e-03 – 1.10e-02"
    assert "A·(a+b·x): 6.00e-01 [5.50e-01 – 6.50e-01]" in cells["floors"]["text"]


def test_medians_below_but_seeds_above_their_own_fits_read_1_of_3(tmp_path):
    """Issue 21: errors 0.28 / 0.25 / 0.31, own constant fits 0.441 / 0.199 / 0.299 (no affine
    fit). Median error 0.28 < median fit 0.299, but only seed 0 is below its own fit."""
    rows = []
    for seed, (e, fc) in enumerate(((0.28, 0.441), (0.25, 0.199), (0.31, 0.299))):
        r = _row("bp", 1000, e, seed=seed, floor_const_rel_l2=fc, floor_affine_rel_l2=None)
        r.update(cell_id=f"bp|1000|{seed}", solver_params={"points": 100, "probes": 16})
        rows.append(r)
    other = _row("sdze8", 1000, 0.5, floor_const_rel_l2=0.441, floor_affine_rel_l2=None)
    other["solver_params"] = {"crns": True, "eps": 0.001, "points": 100, "probes": 16, "rank": 8}
    html = write_report(pd.DataFrame(rows + [other]), tmp_path / "p").read_text(encoding="utf-8")
    cells = summary_table(parse_page(html))[(P1, spec("bp"), 1000)]
    assert cells["verdict"]["text"] == "1 of 3 seeds below the constant fit"
    assert "best" not in _classes(cells["rel_l2"])  # not every seed below: never green
    assert "A·c: 2.99e-01 (seeds 1.99e-01 – 4.41e-01)" in cells["floors"]["text"]
    assert "bp at d = 10^3: 1 of 3 seeds below the constant fit" in html
    assert "bp is below the constant fit at d" not in html
