"""A tuning trial is the study's, not a result (issue 21, item 6): an ablation store holds each
row's lr study (`pinnbench tune`, cells marked `tuning_trial`) and then the rows' runs at their
chosen lr. The report and the ablation README read the runs alone; a store of trials alone is a
clear error, not a page of validation errors shown as results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pinnbench.cells.schema import COLUMNS
from pinnbench.cells.store import Store
from pinnbench.report import ReportError, select_runs, tuning_trials
from pinnbench.cells.store import load_results

REPO = Path(__file__).resolve().parents[1]


def _store(path: Path, trials: int, runs: int) -> Path:
    st = Store(path)
    st.begin_run("r", "x", "2026-12-04T00:00:00+00:00", [], {})
    for i in range(trials + runs):
        trial = i < trials
        row = {k: None for k in COLUMNS}
        prov = {"git_sha": "f5c4617" + "0" * 33, "git_dirty": False}
        if trial:
            prov["tuning_trial"] = f"study-{i}"
        row.update(run_id="r", cell_id=f"c{i}", problem="poisson-2body-scaled-v1", dim=100,
                   seed=i, solver=f"sdze[lr={1e-3 * (i + 1):.3g}]", solver_name="sdze",
                   status="ok", steps_done=500, final_rel_l2=0.5, message="",
                   provenance=json.dumps(prov))
        st.write_row(row)
    st.close()
    return path


def test_select_runs_leaves_the_tuning_trials_out(tmp_path):
    df = load_results(str(_store(tmp_path / "s.sqlite", trials=3, runs=2)))
    assert list(tuning_trials(df)) == [True, True, True, False, False]
    for kwargs in ({}, {"all_runs": True}, {"run_id": "r"}):
        picked = select_runs(df, **kwargs)
        assert sorted(picked["cell_id"]) == ["c3", "c4"], kwargs


def test_a_store_of_trials_alone_is_a_clear_error(tmp_path):
    df = load_results(str(_store(tmp_path / "s.sqlite", trials=2, runs=0)))
    with pytest.raises(ReportError, match="every cell in these results is a tuning trial"):
        select_runs(df, all_runs=True)
    out = subprocess.run([sys.executable, "-m", "pinnbench.cli", "report", "--store",
                          str(tmp_path / "s.sqlite"), "--all", "--out", str(tmp_path / "page")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "tuning trial" in out.stderr, out.stderr[-1000:]
    assert "Traceback" not in out.stderr


def test_the_ablation_readme_puts_the_protocol_first_and_reads_the_runs(tmp_path):
    """scripts/ablation_readme.py on the committed issue-11 store: the preface before any table,
    one row per variant and d with its paired difference, the claims, and the six commits that
    store's cells recorded (the referee's complaint, now on the page)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from ablation_readme import readme
    finally:
        sys.path.pop(0)
    text = readme(str(REPO / "reports" / "ablation-sdze" / "ablation.sqlite"),
                  "PROTOCOL: equal steps, tuned lr per row.", "T")
    lines = text.splitlines()
    assert lines[:3] == ["# T", "", "PROTOCOL: equal steps, tuned lr per row."]
    assert text.index("PROTOCOL") < text.index("|")
    assert "| crns=false |" in text and "+2.59e-01 [+8.89e-02, +3.48e-01]" in text
    assert "## Claims" in text and "commits recorded: 5392659, 5cedcbd, a86778e, b882f88, " \
        "d0b4872, f04ea32" in text


def test_the_ablation_readme_states_how_much_of_the_plan_has_run(tmp_path):
    """A page read before its runs are all in must say so before its tables: per problem and d,
    the run cells in the store against the protocol's plan (scripts/ablation_protocol.py), and
    'incomplete' in words; tuning trials are not runs and do not count."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from ablation_protocol import FOURTH_ORDER, PROBLEM, planned_cells
        from ablation_readme import readme
    finally:
        sys.path.pop(0)
    plan = planned_cells()
    # the plan recomputed from its rows: 5 seeds for on/off rows, 3 for the sweeps, 3 at 1000
    import ablation_protocol as ap
    want_100 = sum(r.seeds_100 for r in ap.rows() if r.problem == PROBLEM)
    assert plan == {(PROBLEM, 100): want_100,
                    (PROBLEM, 1000): 3 * sum(r.problem == PROBLEM for r in ap.rows()),
                    (FOURTH_ORDER, 100): sum(r.seeds_100 for r in ap.rows()
                                             if r.problem == FOURTH_ORDER)}
    store = _store(tmp_path / "s.sqlite", trials=4, runs=3)  # 3 runs at (PROBLEM, 100)
    text = readme(str(store), "PREFACE", "T", planned=plan)
    total = sum(plan.values())
    assert f"| {PROBLEM} | 100 | 3 of {want_100} |" in text
    assert f"| {FOURTH_ORDER} | 100 | 0 of {plan[(FOURTH_ORDER, 100)]} |" in text
    assert f"**Incomplete: 3 of {total} planned run cells are in the store.**" in text
    assert text.index("PREFACE") < text.index("Incomplete") < text.index("## Results")
    # without a plan (another store), no state section
    assert "Incomplete" not in readme(str(store), "PREFACE", "T")
