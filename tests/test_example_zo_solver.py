"""docs/examples/zo_solver.py, a zeroth-order solver outside the repository's solvers/, gets what
sdze gets, by the hooks the harness asks (DESIGN.md "Contracts: Solver"): an ablation page with
its claims judged from its cells, diagnostics in the cell's column, and a roofline row. Real
cells run (tiny: d = 10, width 8) into a temporary store; every number checked is recomputed
here from the stored rows or from a closed form."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from report_fixtures import parse_page

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "zo_solver.py"
NAME = "example-zo"
TINY = ["--dims", "10", "--steps", "8", "--seeds", "0..1", "--width", "8", "--depth", "1",
        "--points", "10", "--jobs", "2", "--threads", "1", "--quiet",
        "--no-report"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``pinnbench ablate example-zo`` and a bp sweep beside it, in one store, and the report."""
    from pinnbench.cli import main
    from pinnbench.plugins import import_plugins
    from pinnbench.report import write_report
    from pinnbench.cells.store import load_results

    import_plugins([str(EXAMPLE)])  # the report reads the solver's page in this process
    tmp = tmp_path_factory.mktemp("example-zo")
    store = tmp / "s.sqlite"
    assert main(["ablate", NAME, "--import", str(EXAMPLE), "--diagnostics", "--store",
                 str(store), *TINY]) == 0
    assert main(["run", "--solvers", "bp", "--store", str(store), *TINY]) == 0
    html = write_report(str(store), tmp / "report", all_runs=True).read_text(encoding="utf-8")
    return load_results(str(store)), parse_page(html), html


def _geo_median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else math.sqrt(v[len(v) // 2 - 1] * v[len(v) // 2])


def _factor(params: dict) -> str:
    """The variant's name on the page: the base (q = 2, eps = 1e-3) and one parameter changed."""
    if params["eps"] != 1e-3:
        return f"eps={params['eps']:g}"
    return f"{NAME} default" if params["q"] == 2 else f"q={params['q']}"


def test_the_cells_hold_the_solvers_diagnostics(run):
    """ratio_step of full Gaussian directions is (P + 1)/q in expectation (Isserlis): the 2W = 20
    draws the example takes land within a factor 2 of it."""
    df, _, _ = run
    ours = df[df["solver_name"] == NAME]
    assert len(ours) == 4 * 2 and set(ours["status"]) == {"ok"}
    for params, diag in zip(ours["solver_params"], ours["diagnostics"]):
        final = diag["gradient_variance"]["final"]
        p, q = final["n_params"], params["q"]
        assert p == (10 + 1) * 8 + 8 + 1  # 10 -> 8 -> 1
        assert 0.5 < final["ratio_step"] / ((p + 1) / q) < 2.0, (q, final)
        assert final["ratio_window"] < final["ratio_step"]
        assert (final["ratio_held"], final["cos_held"]) == (final["ratio_step"], 1.0)


def test_the_report_has_its_ablation_page_with_numbers_from_its_cells(run):
    df, page, html = run
    assert "example-zo&#39;s claims, checked against this run" in html
    ours = df[df["solver_name"] == NAME]
    rows = page.tables["variants-table"][1:]
    assert {r["attrs"]["data-factor"] for r in rows} == {f"{NAME} default", "q=1", "q=4",
                                                           "eps=0.01"}
    for row in rows:
        cells = {c["attrs"]["data-col"]: c["text"] for c in row["cells"]
                 if "data-col" in c["attrs"]}
        mine = ours[[_factor(p) == row["attrs"]["data-factor"] for p in ours["solver_params"]]]
        ratios = sorted(d["gradient_variance"]["final"]["ratio_step"] for d in mine["diagnostics"])
        assert cells["ratio_step"] == f"{(ratios[0] + ratios[1]) / 2:.3g}"
        assert cells["time"] == f"{_geo_median(list(mine['time_per_step_s'])):.3g}"
    claims = {r["cells"][0]["text"]: (r["cells"][1]["text"], r["cells"][2]["text"])
              for r in page.tables["claims-table"][1:]}
    assert list(claims) == ["Two directions cost less per step than four",
                            "Leaner than backprop (training peak)"]
    times = {f: _geo_median([t for t, p in zip(ours["time_per_step_s"], ours["solver_params"])
                             if _factor(p) == f]) for f in (f"{NAME} default", "q=4")}
    verdict, evidence = claims["Two directions cost less per step than four"]
    a, b = times[f"{NAME} default"], times["q=4"]
    assert f"d = 10: {a:.3g} s vs {b:.3g} s per step ({b / a:.3g}×)" in evidence
    assert verdict == ("reproduced" if a < b else "not reproduced")
    verdict, evidence = claims["Leaner than backprop (training peak)"]
    assert f"{NAME} default vs bp" in evidence and re.search(r"[\d.]+ MiB vs [\d.]+ MiB", evidence)
    assert '<img src="figures/ablation_error_vs_time.png"' in html


def test_the_roofline_asks_the_example_for_its_bound(capsys):
    """A row for the plugin (``--import``): the bound printed is the example's own cost model,
    2q (F1 + H) FLOPs and D + (4q + 2) W bytes, against the machine rates the run measured."""
    from pinnbench.bench import roofline as rf

    argv = ["--import", str(EXAMPLE), "--solvers", NAME, "--dims", "100", "--steps", "1",
            "--repeats", "1", "--width", "8", "--depth", "1", "--timeout", "600"]
    assert rf.main(argv) == 0
    out = capsys.readouterr().out
    (row,) = [line.split() for line in out.splitlines() if line.split()[1:2] == [NAME]]
    step_s, bound_s, ratio = float(row[2]), float(row[3]), float(row[4])
    assert step_s > 0 and bound_s > 0 and ratio == pytest.approx(step_s / bound_s, rel=0.06)
    n, v, q, d, h = 100, 16, 2, 100, 8
    cost = rf.step_cost(NAME, d, h, 1)
    assert cost.flops == 2 * q * (2 * (n + v) * d * h + 0.0)  # depth 1: no hidden layer
    assert cost.bytes == 4 * (n + v) * d + (4 * q + 2) * 4 * d * h
    assert NAME in rf.default_specs().split(";")
