"""The committed report pages are what their committed stores give: each page is recomputed here
from its store (and its hand-written PREFACE.md) and compared, so a stale page, e.g. one written
under older claim rules, fails."""

import sys
from pathlib import Path

import pytest

REPORTS = Path(__file__).resolve().parents[1] / "reports"
FOLDER = REPORTS / "ablation-sdze"


def test_the_ablation_page_is_its_store_and_preface():
    """reports/ablation-sdze/README.md (issue 21, item 6) is scripts/ablation_readme.py's README
    of the re-run's committed store (reports/ablation-protocol/ablation.sqlite, tuning trials
    left out) under the page's PREFACE.md, with the protocol's plan: every table row, the state
    of the plan and the claims, to the character."""
    sys.path.insert(0, str(REPORTS.parent / "scripts"))
    try:
        from ablation_protocol import planned_cells
        from ablation_readme import DEFAULT_TITLE, readme
    finally:
        sys.path.pop(0)
    text = readme(str(REPORTS / "ablation-protocol" / "ablation.sqlite"),
                  (FOLDER / "PREFACE.md").read_text(encoding="utf-8"), DEFAULT_TITLE,
                  planned_cells())
    assert text == (FOLDER / "README.md").read_text(encoding="utf-8")


STUDY = REPORTS / "study-defaults"


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


GPU3 = Path(__file__).resolve().parents[1] / "reports" / "gpu-h200" / "run3"


def _gpu_rows(store: str) -> dict:
    """{(solver, d): row} of a committed GPU store."""
    import sqlite3

    con = sqlite3.connect(f"file:{GPU3 / store}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    rows = {(r["solver_name"], r["dim"]): dict(r) for r in con.execute("SELECT * FROM results")}
    con.close()
    return rows


def _roofline_rows(text: str) -> dict:
    """{(solver, d): (s/step, data s)} of the roofline stage's tables."""
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 10 and f[0].isdigit() and f[1] in ("bp", "sdze"):
            out[(f[1], int(f[0]))] = (float(f[2]), float(f[5]))
    return out


def test_the_third_gpu_run_is_recomputed_from_its_files():
    """reports/gpu-h200/README.md, third run: the sweep's table is gpu_summary's of the committed
    store, and every ratio the page quotes comes out of the committed files."""
    sys.path.insert(0, str(GPU3.parents[2] / "scripts"))
    try:
        from gpu_summary import summary
    finally:
        sys.path.pop(0)
    readme = (GPU3.parent / "README.md").read_text(encoding="utf-8")
    table = summary(str(GPU3 / "gpu.sqlite"), str(GPU3 / "env.txt")).split("\n\n", 1)[1]
    assert table.strip() in readme
    sweep = _gpu_rows("gpu.sqlite")
    ratio = {d: sweep[("sdze", d)]["time_per_step_s"] / sweep[("bp", d)]["time_per_step_s"]
             for d in (10**6, 10**7)}
    assert f"{ratio[10**6]:.2f}x in the sweep" in readme and f"{ratio[10**7]:.2f}x in the sweep" in readme
    roof_text = (GPU3 / "roofline.txt").read_text()
    roof = _roofline_rows(roof_text)
    for d in (10**6, 10**7):
        r = roof[("sdze", d)][0] / roof[("bp", d)][0]
        assert f"{r:.2f}x in the roofline" in readme, (d, r)
    data = {s: roof[(s, 10**7)] for s in ("bp", "sdze")}
    assert (f"{1e3 * data['bp'][1]:.0f} of bp's {1e3 * data['bp'][0]:.0f} ms and "
            f"{1e3 * data['sdze'][1]:.0f} of sdze's {1e3 * data['sdze'][0]:.0f} ms") in readme
    # one read of W0 (128 x 1e7 float32) at the floors stage's copy bandwidth
    import re

    bw = float(re.search(r"copy bandwidth \(read \+ write\): ([\d.]+) GB/s", roof_text)[1]) * 1e9
    floor = 128 * 10**7 * 4 / bw
    assert f"{1e3 * floor:.2f} ms)" in readme
    assert f"{sweep[('sdze', 10**7)]['time_per_step_s'] / floor:.0f}x (sweep)" in readme
    # the second command: the draw at both block sizes, and the peaks at d = 1e7
    after = (GPU3 / "after-blocks.txt").read_text()
    draws = {int(f[0]): (float(f[1]), float(f[2])) for f in map(str.split, after.splitlines())
             if len(f) == 5 and f[0].isdigit()}
    slow, fast = draws[10**7]
    assert f"({slow:.0f} -> {fast:.0f} ms)" in readme and f"{slow / fast:.2f}x faster at d = 1e7" in readme
    assert f"{draws[10**6][0] / draws[10**6][1]:.2f}x at 1e6" in readme
    peaks = _gpu_rows("after-blocks.sqlite")
    gib = 2**30
    for solver in ("sdze", "bp"):
        before = sweep[(solver, 10**7)]["peak_gpu_allocated_bytes"] / gib
        now = peaks[(solver, 10**7)]["peak_gpu_allocated_bytes"] / gib
        assert f"from {before:.1f} to" in readme and f"{now:.1f} GiB" in readme, (solver, before, now)


def test_the_schedule_check_quoted_by_the_ablation_page_is_its_store():
    """The ablation page's PREFACE quotes a side check of the lr schedule (three 2000-step cells
    of the base sdze, reports/ablation-sdze/schedule-check.sqlite): each error at step 256 and at
    the end, and the constant-lr cell's training loss, recomputed here from the curves."""
    import json
    import sqlite3

    con = sqlite3.connect(f"file:{FOLDER / 'schedule-check.sqlite'}?mode=ro", uri=True)
    cells = {json.loads(p)["git_sha"][:7] + ":" + s.split("decay_steps=")[1].split(",")[0]:
             json.loads(c) for s, c, p in con.execute(
                 "SELECT solver, curve, provenance FROM results")}
    con.close()
    preface = " ".join((FOLDER / "PREFACE.md").read_text(encoding="utf-8").split())

    def at(curve, step, key="rel_l2"):
        (p,) = [p for p in curve if p["step"] == step]
        return p[key]

    assert set(cells) == {"6a92a14:0", "6a92a14:budget", "6a92a14:500"}
    const, budget, short = (cells[f"6a92a14:{k}"] for k in ("0", "budget", "500"))
    assert (f"with a constant lr the error goes from {at(const, 256):.3f} at step 256 to "
            f"{at(const, 2000):.3f} at step 2000 (training loss {at(const, 256, 'loss'):.0f} to "
            f"{at(const, 2000, 'loss'):.0f})") in preface
    assert (f"decayed over the 2000 steps, from {at(budget, 256):.3f} to "
            f"{at(budget, 2000):.3f}") in preface
    assert f"(the tuning's schedule), from {at(short, 256):.3f} to {at(short, 2000):.3f}" \
        in preface
    docs = " ".join((REPORTS.parent / "docs" / "tuning.md").read_text(encoding="utf-8").split())
    assert (f"took the error from {at(const, 256):.3f} at step 256 to {at(const, 2000):.3f}; "
            f"decayed over 500 steps it ended at {at(short, 2000):.3f}") in docs


QUICK = REPORTS / "cpu-default"


def _page_text(html: str) -> str:
    """The page without what depends on where and when it was written: the generation time and
    the relative links to docs/."""
    import re

    html = re.sub(r"generated \d{4}-\d\d-\d\d \d\d:\d\d UTC", "generated", html)
    return re.sub(r'href="[^"]*?docs/', 'href="docs/', html)


def test_the_quick_start_page_is_its_store(tmp_path):
    """reports/cpu-default/index.html is `pinnbench report` of its committed store (the quick
    start's run): every table, sentence and verdict, to the character."""
    import shutil

    from pinnbench.report import write_report

    store = shutil.copy(QUICK / "pinnbench.sqlite", tmp_path / "store.sqlite")  # read a copy
    page = write_report(str(store), tmp_path / "page")
    assert _page_text(page.read_text(encoding="utf-8")) == \
        _page_text((QUICK / "index.html").read_text(encoding="utf-8"))


def test_the_readme_quotes_the_quick_start_store():
    """README.md's "What a run shows" quotes the committed run: each solver's error at each d,
    its time per step in ms, its training peak above the baseline and its step's tensors in
    MiB, and the factors between bp and sdze."""
    import sqlite3

    con = sqlite3.connect(f"file:{QUICK / 'pinnbench.sqlite'}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    rows = {(r["solver_name"], r["dim"]): dict(r) for r in con.execute("SELECT * FROM results")}
    con.close()
    readme = (REPORTS.parent / "README.md").read_text(encoding="utf-8")
    text = " ".join(readme.split())
    for d in (100, 1000, 10_000):
        bp, sdze = rows[("bp", d)], rows[("sdze", d)]
        assert f"{bp['final_rel_l2']:.3f} against {sdze['final_rel_l2']:.3f}" in text, d
        accuracy = sdze["final_rel_l2"] / bp["final_rel_l2"]
        assert f"{accuracy:.2f}×" in text, (d, accuracy)
    mib = {k: (r["peak_cpu_bytes"] - r["baseline_cpu_bytes"]) / 2**20 for k, r in rows.items()}
    assert f"{mib[('bp', 100)]:.1f} against {mib[('sdze', 100)]:.0f} MiB above the baseline at " \
        "d = 100" in text
    assert f"{mib[('bp', 10_000)]:.0f} against {mib[('sdze', 10_000)]:.0f} MiB at 10^4" in text
    for d in (100, 10_000):  # the page's resident-set factors
        assert f"{mib[('sdze', d)] / mib[('bp', d)]:.3g}×" in text, d
    t = {k: r["tensor_peak_above_baseline_bytes"] / 2**20 for k, r in rows.items()}
    for d, where in ((100, "at d = 100"), (10_000, "at 10^4")):
        ratio = t[("sdze", d)] / t[("bp", d)]
        assert f"{t[('bp', d)]:.1f} against {t[('sdze', d)]:.0f} MiB {where} ({ratio:.1f}×)" \
            in text, (d, ratio)
    ms = {k: 1e3 * r["time_per_step_s"] for k, r in rows.items()}
    for d, where in ((100, "at d = 100"), (10_000, "at 10^4")):
        ratio = ms[("sdze", d)] / ms[("bp", d)]
        assert f"{ratio:.1f}× bp's {where}" in text or f"{ratio:.1f}× {where}" in text, (d, ratio)
    assert f"({ms[('sdze', 100)]:.1f} against {ms[('bp', 100)]:.1f} ms)" in text
    assert f"({ms[('sdze', 10_000)]:.0f} against {ms[('bp', 10_000)]:.1f} ms)" in text
