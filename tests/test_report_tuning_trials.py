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


def _ablation_store(path: Path) -> Path:
    """tests/test_report_ablation.py's synthetic ablation cells (closed-form errors), in a store,
    two of them from another commit."""
    from test_report_ablation import make_rows

    st = Store(path)
    st.begin_run("abl", "pinnbench ablate sdze", "2026-12-04T00:00:00+00:00", [], {})
    for i, row in enumerate(make_rows().to_dict("records")):
        sha = ("1234567" if i < 2 else "707c647") + "0" * 33
        row["provenance"] = {**(row.get("provenance") or {}), "git_sha": sha, "git_dirty": False}
        st.write_row(row)
    st.finish_run("abl", "2026-12-04T00:01:00+00:00", "finished")
    st.close()
    return path


def test_the_ablation_readme_puts_the_protocol_first_and_reads_the_runs(tmp_path):
    """scripts/ablation_readme.py on a store of known cells: the preface before any table, one
    row per variant and d with its seed-paired difference to the base (recomputed here from the
    cells' closed-form errors), the claims, and the commits the cells recorded."""
    from test_report_ablation import SEEDS, err, ok_seeds

    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from ablation_readme import readme
    finally:
        sys.path.pop(0)
    text = readme(str(_ablation_store(tmp_path / "a.sqlite")),
                  "PROTOCOL: equal steps, tuned lr per row.", "T")
    lines = text.splitlines()
    assert lines[:3] == ["# T", "", "PROTOCOL: equal steps, tuned lr per row."]
    assert text.index("PROTOCOL") < text.index("|")
    for dim in (100, 1000):
        seeds = [s for s in SEEDS if s in ok_seeds("crns=false", dim)]
        mean = sum(err("crns=false", dim, s) - err("sdze default", dim, s) for s in seeds) / len(
            seeds)
        (row,) = [ln for ln in text[text.index(f"d = {dim:,}"):].splitlines()
                  if ln.startswith("| crns=false |")][:1]
        assert f"{mean:+.2e}" in row and f"0 of {len(seeds)} lower" in row, row
    words = [ln for ln in lines if ln.startswith("In words, each against the base (or the row it is against), at equal steps: ")]
    assert len(words) == 2  # one per (problem, d) table
    assert "higher: crns=false, " in words[0] and "within the noise" not in words[0]
    # the rows with no seed below their own constant fit are named, in words, per table
    from test_report_ablation import FLOOR_CONST, SPECS, err_ci, floor
    lead = ("Learned nothing (no seed below its own constant fit, so a difference to or from it "
            "compares runs that did not learn): ")
    for dim, line in zip((100, 1000), words):
        dead = {f for f in SPECS if not any(err_ci(f, dim, s)[1] < floor(FLOOR_CONST, s)[1]
                                            for s in ok_seeds(f, dim))}
        assert (lead in line) == bool(dead), line
        if dead:
            assert set(line.split(lead)[1].rstrip(".").split(", ")) == dead, line
    assert lead in words[1]  # d = 1000: crns=false and zo[crns=false] are at or above the fit
    assert "## Claims" in text
    assert "commits recorded: 1234567, 707c647; cells from a tree with uncommitted changes: 0" \
        in text


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
