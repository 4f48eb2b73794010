"""The committed ablation page (reports/ablation-sdze/README.md) shows what its committed store
gives: every markdown table row that the folder's table.py computes from ablation.sqlite (through
the report's own aggregation) appears in the README verbatim. A stale page, e.g. a claims table
written under older claim rules, fails here."""

import subprocess
import sys
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parents[1] / "reports" / "ablation-sdze"


def test_the_ablation_page_tables_are_recomputed_from_its_store():
    done = subprocess.run([sys.executable, str(FOLDER / "table.py"),
                           str(FOLDER / "ablation.sqlite")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(rows) >= 20 and any(r.startswith("| claim |") for r in rows), done.stdout[-2000:]
    readme = set((FOLDER / "README.md").read_text(encoding="utf-8").splitlines())
    missing = [r for r in rows if r not in readme]
    assert not missing, "README rows not recomputed from the store:\n" + "\n".join(missing)


STUDY = Path(__file__).resolve().parents[1] / "reports" / "study-defaults"


@pytest.mark.parametrize("folder,stores,title", [
    ("study-defaults", ("pinnbench.optuna.sqlite", "pinnbench.sqlite"),
     "Defaults study (issue 21): every solver under one tuning protocol"),
    ("ablation-protocol", ("ablation.optuna.sqlite", "ablation.sqlite"),
     "SDZE ablation re-run (issue 21, item 6): the tuning stage")])
def test_a_tuning_page_is_its_stores_and_preface(folder, stores, title):
    """reports/study-defaults/README.md (and the ablation re-run's tuning page) is what
    scripts/study_snapshot writes from the committed stores and PREFACE.md, to the character:
    its state, choices, times and its check of the solvers' declared defaults (a defaults
    change without a regenerated page fails here)."""
    from pinnbench.tuning.page import page

    where = STUDY.parent / folder
    text = page(where / stores[0], where / stores[1], title,
                (where / "PREFACE.md").read_text(encoding="utf-8"))
    assert text == (where / "README.md").read_text(encoding="utf-8")


def test_every_solver_declares_the_defaults_its_completed_study_chose():
    """Issue 21, item 2: a solver spec whose studies in the committed defaults study are all
    complete declares that choice as its defaults (``tuning.defaults.differences`` is empty).
    While the study runs, every choice is provisional and this holds for none yet: it starts
    to bind spec by spec as completed snapshots are committed (docs/tuning.md)."""
    from pinnbench.tuning.defaults import choose, differences
    from pinnbench.tuning.study import storage_url, summarize

    choices = choose(summarize(storage_url(STUDY / "pinnbench.optuna.sqlite")))
    assert {c.solver for c in choices} == {
        "sdze", "zo", "zo[crns=true]", "bp", "bp[estimator=hte]", "bp[estimator=sdgd]",
        "bp[dist=coordinate]"}
    stale = {c.solver: differences(c) for c in choices
             if not c.provisional and c.score is not None and differences(c)}
    assert not stale, f"the study chose otherwise than these defaults: {stale}"
