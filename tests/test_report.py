"""The report page: numbers in its table, figures on disk, escaping, errors, run selection."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pinnbench.report import ReportError, select_runs, write_report
from pinnbench.report import aggregate
from pinnbench.report.aggregate import LogStats
from pinnbench.report.figures import ablation_groups
from pinnbench.cells.schema import COLUMNS
from report_fixtures import (DEVICE_MEMORY, OOM_MESSAGE, P1, P2, PLAN, SCRIPT, err,
                             expected_families, full_report, known_results, make_row, mem, n_params,
                             parse_page, solver_time, spec, summary_table, time_per_step,
                             data_time)

FIGURES = {"error_vs_d", "time_vs_d", "memory_vs_d", "convergence_0", "convergence_1",
           "ablation_crns", "ablation_rank", "variance_vs_eps", "ablation_error_vs_time",
           "performance_profile"}


def log_median(values: list[float]) -> float:
    """Median in log space, written out: the middle value, or the geometric mean of the two."""
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else math.sqrt(v[n // 2 - 1] * v[n // 2])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    page = full_report(tmp_path_factory)
    html = page.read_text(encoding="utf-8")
    return page, html, parse_page(html)


# ------------------------------------------------------------------------------ the table


def test_page_is_index_html_in_out_dir(report):
    page, html, _ = report
    assert page.name == "index.html" and page.is_file()
    assert html.startswith("<!DOCTYPE html>")


def test_table_has_one_row_per_problem_solver_dim(report):
    rows = summary_table(report[2])
    assert set(rows) == set(expected_families())


def test_table_holds_the_seed_medians(report):
    rows = summary_table(report[2])
    for (problem, solver, dim), fam in expected_families().items():
        cells = rows[(problem, solver, dim)]
        ok = fam["ok_seeds"]
        for col, f in (("rel_l2", err), ("time", time_per_step), ("data", data_time),
                       ("solver", solver_time), ("mem", mem)):
            cell = cells[col]["attrs"]
            if not ok:
                assert "data-value" not in cell, (problem, solver, dim, col)
                assert cells[col]["text"] == "–"
                continue
            expected = log_median([f(fam["key"], dim, s) for s in ok])
            assert float(cell["data-value"]) == pytest.approx(expected, rel=1e-12), \
                (problem, solver, dim, col)
        assert cells["seeds"]["text"] == str(len(fam["seeds"]))
        assert cells["seeds"]["attrs"]["data-seeds"] == ",".join(map(str, sorted(fam["seeds"])))
        assert cells["n_params"]["text"] == f"{n_params(dim):,}"


def test_table_numbers_by_hand(report):
    rows = summary_table(report[2])
    bp = rows[(P1, spec("bp"), 1000)]
    assert bp["rel_l2"]["text"] == "2.20e-03"            # 2e-3 * (1 + 0.1)
    assert bp["rel_l2"]["spread"] == "2.10e-03 – 2.30e-03"  # sqrt(1 * 1.1), sqrt(1.1 * 1.2)
    assert float(bp["rel_l2"]["attrs"]["data-q25"]) == pytest.approx(2e-3 * math.sqrt(1.1))
    assert float(bp["rel_l2"]["attrs"]["data-q75"]) == pytest.approx(2e-3 * math.sqrt(1.1 * 1.2))
    assert bp["time"]["text"].startswith("4.2 ms")       # 4e-3 * 1.05
    assert bp["mem"]["text"].startswith("1.88 GiB GPU")  # 2e9 * 1.01 bytes
    # two seeds: the geometric mean of both
    off = rows[(P1, spec("sdze8off"), 1000)]
    assert float(off["rel_l2"]["attrs"]["data-value"]) == pytest.approx(0.2 * math.sqrt(1.1))
    # the single-seed family: its one value, no spread
    single = rows[(P1, spec("sdze16"), 1000)]
    assert float(single["rel_l2"]["attrs"]["data-value"]) == pytest.approx(8e-3)
    assert single["seeds"]["text"] == "1" and single["status"]["text"] == "ok"
    assert single["rel_l2"]["text"] == "8.00e-03" and single["rel_l2"]["spread"] == ""


def test_table_statuses_of_failed_cells(report):
    rows = summary_table(report[2])
    assert rows[(P1, spec("bp"), 100000)]["status"]["text"] == "oom 3"
    assert rows[(P1, spec("zo"), 10000)]["status"]["text"] == "diverged 3"
    assert rows[(P1, spec("zo"), 100000)]["status"]["text"] == "ok 2 · timeout 1"
    assert rows[(P1, spec("sdze8off"), 10000)]["status"]["text"] == "diverged 2"
    # the timed-out family is measured on its two finished seeds
    zo = rows[(P1, spec("zo"), 100000)]
    assert float(zo["rel_l2"]["attrs"]["data-value"]) == pytest.approx(
        0.3 * 100**0.1 * math.sqrt(1.1 * 1.2))


def test_best_value_per_column_is_highlighted(report):
    rows = summary_table(report[2])
    group = {k: v for k, v in rows.items() if k[0] == P1 and k[2] == 1000}

    def best(col):
        return {k[1] for k, v in group.items() if "best" in v[col]["attrs"]["class"].split()}

    assert best("rel_l2") == {spec("bp")}         # 2.2e-3
    assert best("time") == {spec("sdze8off")}     # sqrt(1e-3 * 1.05e-3)
    assert best("mem") == {spec("sdze8off")}      # sqrt(3e8 * 3.03e8) bytes
    # a column with one value at its (problem, d) is not "best" of anything
    lone = rows[(P1, spec("sdze8"), 100000)]
    zo = rows[(P1, spec("zo"), 100000)]
    assert "best" in lone["rel_l2"]["attrs"]["class"]  # sdze8 and zo both measured at 1e5
    assert "best" not in zo["rel_l2"]["attrs"]["class"]


def test_failures_table_lists_every_unfinished_cell(report):
    page = report[2]
    body = [r for r in page.tables["failures-table"] if r["cells"][0]["tag"] == "td"]
    n_bad = sum(len(seeds) for _, _, _, seeds, status in PLAN if status != "ok")
    assert len(body) == n_bad == 9
    statuses = sorted(r["cells"][4]["text"] for r in body)
    assert statuses == sorted(["oom"] * 3 + ["diverged"] * 5 + ["timeout"])
    messages = {r["cells"][6]["text"] for r in body}
    assert " ".join(OOM_MESSAGE.split()) in messages


def test_provenance_section(report):
    page = report[2]
    rows = {r["cells"][0]["text"]: [c["text"] for c in r["cells"][1:]]
            for r in page.tables["provenance-table"]}
    assert rows["git sha"] == ["0123abcd"]
    assert rows["torch"] == ["2.11.0"]
    assert rows["CUDA"] == ["12.8"]
    assert rows["device"] == ["NVIDIA H100 80GB HBM3"]
    assert rows["device memory"] == [f"{DEVICE_MEMORY / 2**30:.3g} GiB"] == ["79.6 GiB"]
    assert rows["dirty"] == ["no"]
    assert rows["threads"] == ["16"]
    assert rows["host memory"] == ["-"]
    assert rows["command line"] == ["pinnbench run --problems poisson-2body-v1 --dims 1e3,1e4,1e5"]
    assert rows["cells"] == [str(len(known_results()))]
    assert "pid" not in rows     # differs in every cell: not provenance of the numbers


# ---------------------------------------------------------------------------- figures


def test_figures_exist_decode_and_are_not_blank(report):
    import matplotlib.image as mpimg

    page, _, parsed = report
    srcs = [a["src"] for t, a in parsed.tags if t == "img"]
    assert {Path(s).stem for s in srcs} == FIGURES
    assert len(srcs) == len(FIGURES)
    for src in srcs:
        assert not Path(src).is_absolute() and not src.startswith(("http", "file:"))
        path = page.parent / src
        assert path.stat().st_size > 5000, src
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400, (src, img.shape)
        assert float(np.std(img[..., :3])) > 0.02, f"{src} looks blank"


# --------------------------------------------------------------------------- escaping


def test_strings_from_the_store_are_escaped(report):
    _, html, parsed = report
    assert SCRIPT not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert not [t for t, _ in parsed.tags if t == "script"]
    assert all(set(a) <= {"src", "alt"} for t, a in parsed.tags if t == "img")
    # ... and shows as text, parameters and message alike
    text = "".join(parsed.text)
    assert SCRIPT in text
    assert "onerror='window.__pwned=2'" in text


def test_problem_ids_and_messages_are_escaped(tmp_path):
    row = make_row("bp", P1, 1000, 0, "oom")
    row.update(problem="evil<b onmouseover=alert(1)>-v1", message="</td></table><script>x</script>",
               provenance={"host": "<i>host</i>", "argv": ["pinnbench", "<script>"]})
    df = pd.DataFrame([row])[list(COLUMNS)]
    html = write_report(df, tmp_path).read_text()
    parsed = parse_page(html)
    assert not [t for t, _ in parsed.tags if t in ("script", "b", "i")]
    text = "".join(parsed.text)
    for s in ("evil<b onmouseover=alert(1)>-v1", "</td></table><script>x</script>",
              "<i>host</i>"):
        assert s in text


# ----------------------------------------------------------------------------- errors


def test_empty_dataframe_is_a_report_error(tmp_path):
    empty = pd.DataFrame(columns=list(COLUMNS))
    with pytest.raises(ReportError, match="holds no results"):
        write_report(empty, tmp_path)
    assert issubclass(ReportError, ValueError)
    assert not (tmp_path / "index.html").exists()


def test_missing_store_is_a_report_error(tmp_path):
    with pytest.raises(ReportError, match=r"no results store at .*nope\.sqlite.*--store"):
        write_report(tmp_path / "nope.sqlite", tmp_path / "out")
    with pytest.raises(ReportError, match="is a folder"):
        write_report(tmp_path, tmp_path / "out")


def _store(path: Path, rows: list[dict]) -> Path:
    """A real results store (pinnbench.cells.store) holding ``rows``."""
    store_mod = pytest.importorskip("pinnbench.cells.store")
    store = store_mod.Store(path)
    try:
        for row in rows:
            store.write_row(row)
    finally:
        store.close()
    return path


def test_empty_store_is_a_report_error(tmp_path):
    store = _store(tmp_path / "results.sqlite", [])
    with pytest.raises(ReportError, match=r"the store .*results\.sqlite.* holds no results"):
        write_report(store, tmp_path / "out")


def test_a_file_that_is_no_store_is_a_report_error(tmp_path):
    pytest.importorskip("pinnbench.cells.store")
    bad = tmp_path / "notes.sqlite"
    bad.write_text("not a database")
    with pytest.raises(ReportError, match=r"cannot read the results store .*notes\.sqlite"):
        write_report(bad, tmp_path / "out")


def test_missing_columns_are_a_report_error(tmp_path):
    df = known_results(diagnostics=False).drop(columns=["curve", "provenance"])
    with pytest.raises(ReportError, match="curve, provenance"):
        write_report(df, tmp_path)


def test_bad_source_type_is_a_report_error(tmp_path):
    with pytest.raises(ReportError, match="DataFrame or the path"):
        write_report(42, tmp_path)


# ----------------------------------------------------------------------- run selection


def _two_runs() -> pd.DataFrame:
    new = known_results(diagnostics=False)
    old = new.copy()
    old["run_id"] = "run-a"
    old["started_at"] = "2026-03-01T10:00:00Z"
    old["finished_at"] = "2026-03-01T11:00:00Z"
    old["final_rel_l2"] = 1.0
    return pd.concat([new, old], ignore_index=True)  # the older run last: order must not matter


def test_default_is_the_latest_run():
    df = _two_runs()
    assert set(select_runs(df)["run_id"]) == {"run-b"}
    assert set(select_runs(df, run_id="run-a")["run_id"]) == {"run-a"}


def test_unknown_run_lists_the_runs():
    with pytest.raises(ReportError, match=r"no run 'zzz'.*run-a, run-b"):
        select_runs(_two_runs(), run_id="zzz")
    with pytest.raises(ReportError, match="not both"):
        select_runs(_two_runs(), run_id="run-a", all_runs=True)


def test_all_runs_keeps_the_newest_row_of_each_cell():
    df = _two_runs()
    sel = select_runs(df, all_runs=True)
    assert len(sel) == len(known_results()) and sel["cell_id"].is_unique
    assert set(sel["run_id"]) == {"run-b"}     # run-b finished later
    extra = make_row("bp", P2, 100000, 0, "ok")
    extra.update(run_id="run-a", started_at="2026-03-01T10:00:00Z")
    sel = select_runs(pd.concat([df, pd.DataFrame([extra])], ignore_index=True), all_runs=True)
    assert set(sel["run_id"]) == {"run-a", "run-b"}  # a cell only run-a holds stays


# ------------------------------------------------------------------------ aggregation


def test_log_stats_is_median_and_quartiles_in_log_space():
    st = LogStats.of([1000.0, 1.0, 100.0, 10.0, float("nan"), 0.0, -5.0])
    assert st.n == 4
    assert st.median == pytest.approx(10**1.5)
    assert st.q25 == pytest.approx(10**0.75)
    assert st.q75 == pytest.approx(10**2.25)
    assert LogStats.of([float("nan")]) is None
    assert LogStats.of([]) is None


def test_memory_is_gpu_where_measured_else_cpu():
    a = make_row("bp", P1, 1000, 0, "ok")
    b = make_row("bp", P1, 1000, 1, "ok")
    b.update(peak_gpu_allocated_bytes=None, peak_cpu_bytes=7_000_000_000)
    df = aggregate.prepare(pd.DataFrame([a, b])[list(COLUMNS)])
    assert list(df["mem_kind"]) == ["gpu", "cpu"]
    assert list(df["mem_bytes"]) == [a["peak_gpu_allocated_bytes"], 7_000_000_000]
    c = dict(a, peak_gpu_allocated_bytes=None, peak_cpu_bytes=5_000_000_000, device="cpu")
    fam, = aggregate.families(aggregate.prepare(pd.DataFrame([c])[list(COLUMNS)]))
    assert fam.mem_kind == "cpu" and fam.mem.median == 5_000_000_000


def test_json_text_columns_are_decoded():
    decoded = aggregate.families(aggregate.prepare(known_results(diagnostics=False)))
    text = aggregate.families(aggregate.prepare(known_results(diagnostics=False,
                                                              json_text=True)))
    assert [(f.series, f.label, f.rel_l2, f.mem) for f in decoded] == \
        [(f.series, f.label, f.rel_l2, f.mem) for f in text]


def test_short_labels_name_only_the_parameters_that_differ():
    df = aggregate.prepare(known_results(diagnostics=False))
    labels = dict(zip(df["solver"], df["label"]))
    assert labels[spec("bp")] == "bp"
    assert labels[spec("zo")] == "zo"
    assert labels[spec("sdze8")] == "sdze[crns=true,rank=8]"
    assert labels[spec("sdze8off")] == "sdze[crns=false,rank=8]"
    assert labels[spec("sdze16")] == "sdze[crns=true,rank=16]"


def test_settings_that_vary_split_series():
    a = make_row("bp", P1, 1000, 0, "ok")
    b = dict(make_row("bp", P1, 1000, 0, "ok"), width=256, cell_id="other")
    df = aggregate.prepare(pd.DataFrame([a, b])[list(COLUMNS)])
    assert sorted(df["label"]) == ["bp w=128", "bp w=256"]
    assert len(aggregate.families(df)) == 2


def test_curve_stats_aggregate_seeds_per_step():
    rows = pd.DataFrame({"curve": [
        [{"step": 0, "time_s": 0.0, "rel_l2": 1.0}, {"step": 10, "time_s": 1.0, "rel_l2": 0.1}],
        [{"step": 0, "time_s": 0.0, "rel_l2": 4.0}, {"step": 10, "time_s": 3.0, "rel_l2": 0.4}],
    ]})
    cs = aggregate.curve_stats(rows)
    assert list(cs.step) == [0, 10]
    assert cs.median == pytest.approx([2.0, 0.2])     # geometric means
    assert cs.time_s == pytest.approx([0.0, 2.0])
    assert list(cs.n) == [2, 2]


def test_ablation_groups_hold_other_parameters_fixed():
    df = aggregate.prepare(known_results(diagnostics=False))
    (title, g), = ablation_groups(df, "crns")
    assert title == f"{P1} · sdze"
    assert set(g["solver"]) == {spec("sdze8"), spec("sdze8off")}
    (title, g), = ablation_groups(df, "rank")
    assert set(g["solver"]) == {spec("sdze8"), spec("sdze16")}
    assert ablation_groups(df, "eps") == []


# ---------------------------------------- a small report read from a store path (one render)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """P2 / bp only, written to a real store and read back through ``write_report(path)``,
    with partial provenance records and a stale figure from an earlier report in the folder."""
    tmp = tmp_path_factory.mktemp("tiny")
    df = known_results(diagnostics=False)
    df = df[(df["problem"] == P2) & (df["solver_name"] == "bp")].reset_index(drop=True)
    df["provenance"] = [{}, {"git_sha": "feed"},
                        {"git_sha": "beef", "argv": ["pinnbench", "run", "--store", "a b.sqlite"]},
                        {"torch": "2.11.0"}, None, {"pid": 1}]
    store = _store(tmp / "results.sqlite", df.to_dict("records"))
    out = tmp / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "old_figure.png").write_bytes(b"stale")
    (out / "index.html").write_text('<meta name="generator" content="pinnbench 0.0">')  # ours
    page = write_report(store, out)
    return page, parse_page(page.read_text())


def test_report_from_a_store_path(tiny):
    rows = summary_table(tiny[1])
    assert set(rows) == {(P2, spec("bp"), 1000), (P2, spec("bp"), 10000)}
    assert float(rows[(P2, spec("bp"), 1000)]["rel_l2"]["attrs"]["data-value"]) == \
        pytest.approx(2e-3 * 1.1)


def test_rewriting_a_report_drops_stale_figures(tiny):
    names = {p.stem for p in (tiny[0].parent / "figures").glob("*.png")}
    assert names == {"error_vs_d", "time_vs_d", "memory_vs_d", "convergence_0"}


def test_provenance_tolerates_missing_keys(tiny):
    rows = {r["cells"][0]["text"]: r["cells"][1]["text"]
            for r in tiny[1].tables["provenance-table"]}
    assert rows["git sha"] == "feed; beef"   # values that differ between cells are all listed
    assert rows["torch"] == "2.11.0"
    assert rows["CUDA"] == "-"
    assert rows["command line"] == "pinnbench run --store 'a b.sqlite'"


def test_unfinished_cells_are_marked_on_the_figures_at_their_d():
    import matplotlib.pyplot as plt

    from pinnbench.report import figures
    from pinnbench.report.figures import FAIL_MARKER, SeriesStyle, metric_vs_d

    df = aggregate.prepare(known_results(diagnostics=False))
    style = SeriesStyle(dict(zip(df["series"], df["label"])))
    fig = metric_vs_d(aggregate.families(df), style, "memory", rows=df)
    try:
        ax, = [a for a in fig.axes if a.get_title() == P1]
        marks = sorted((float(line.get_xdata()[0]), style.labels[s])
                       for line in ax.lines if line.get_marker() == FAIL_MARKER
                       for s in style.order if line.get_color() == style.color[s])
        assert marks == [(1e4, "sdze[crns=false,rank=8]"), (1e4, "zo"), (1e5, "bp"), (1e5, "zo")]
        assert sorted(t.get_text() for t in ax.texts if not t.get_text().startswith("NVIDIA")) \
            == ["OOM", "diverged", "diverged", "timeout 1/3"]
        # the device's 79.6 GiB (provenance) is over 4x the largest peak (5.9 GiB): left off
        # the axis, which is scaled to the data (tests/test_report_figures.py draws it in reach)
        assert max(mem(k, d, s) for k, _, d, seeds, st in PLAN if st == "ok" for s in seeds) \
            * figures.REFERENCE_REACH < DEVICE_MEMORY
        assert not any(np.allclose(line.get_ydata(), DEVICE_MEMORY / 2**30) for line in ax.lines)
        assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    finally:
        plt.close(fig)


def test_published_numbers_are_shown_beside_the_floors_measured_here(tmp_path):
    """STDE's d = 1e4 two-body Poisson error (4.7e-3) beside a measured constant floor of 4.1e-3
    (two seeds, median) reads as above the constant fit; a d the literature has no number for
    adds no row."""
    rows = []
    for seed, const in ((0, 4.0e-3), (1, 4.2e-3)):
        row = make_row("bp", "poisson-2body-v1", 10_000, seed, "ok")
        row.update(floor_const_rel_l2=const, floor_affine_rel_l2=math.nan)
        rows.append(row)
    other = make_row("bp", "poisson-2body-v1", 20_000, 0, "ok")
    other.update(floor_const_rel_l2=1e-3)
    df = pd.DataFrame(rows + [other])[list(COLUMNS)]
    text = "".join(parse_page(write_report(df, tmp_path).read_text()).text)
    assert "Published numbers beside the floors" in text
    assert "STDE (Shi et al., NeurIPS 2024)" in text and "0.0047" in text and "0.0041" in text
    assert "above the constant fit" in text and "20,000" not in text.split("Published")[1]
