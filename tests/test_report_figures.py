"""Figures that do not mislead: no offset tick labels, log axes for error/time/memory always
(at least a decade tall), legend entries only for what is drawn, untrained cells hollow, memory
ticks across the whole range and peaks above a stated baseline."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from pinnbench.report import aggregate, figures
from report_fixtures import P1, base_row, known_results, spec


def _rows(n_seeds=1, errs=(0.999991, 0.999990), dims=(10**6, 10**7), steps=1000,
          peak=400 * 2**20, baseline=250 * 2**20):
    rows = []
    for dim in dims:
        for seed in range(n_seeds):
            r = base_row()
            r.update(cell_id=f"{dim}|{seed}", dim=dim, seed=seed, steps_done=steps,
                     final_rel_l2=errs[-1], peak_gpu_allocated_bytes=None,
                     peak_cpu_bytes=peak * (1 + 0.1 * seed) * (dim / 10**6) ** 0.2,
                     baseline_cpu_bytes=baseline, time_per_step_s=0.0101 + 1e-6 * seed,
                     curve=[{"step": s, "time_s": 0.01 * s, "loss": 1.0, "rel_l2": e}
                            for s, e in zip((0, steps), errs)])
            rows.append(r)
    df = aggregate.prepare(pd.DataFrame(rows))
    return df, figures.SeriesStyle(dict(zip(df["series"], df["label"])))


def _draw_all(df, style):
    fams = aggregate.families(df)
    figs = {m: figures.metric_vs_d(fams, style, m, rows=df) for m in ("error", "time", "memory")}
    figs["convergence"] = figures.convergence(df, style, P1)
    for fig in figs.values():
        fig.canvas.draw()
    return figs


@pytest.fixture
def close_all():
    yield
    plt.close("all")


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_no_axis_has_offset_tick_labels_and_tiny_changes_stay_flat(close_all):
    """At large d the error moves by 1e-5 around 1: no '1e-6+9.9999e-1' and no steep line."""
    figs = _draw_all(*_rows())
    for name, fig in figs.items():
        for ax in _visible_axes(fig):
            for axis in (ax.xaxis, ax.yaxis):
                assert axis.get_offset_text().get_text() == "", (name, axis)
    for ax in _visible_axes(figs["convergence"]):
        lo, hi = ax.get_ylim()
        assert ax.get_yscale() == "log" and math.log10(hi / lo) >= figures.MIN_LOG_DECADES


def test_error_time_and_memory_are_always_on_log_axes(close_all):
    for df_style in (_rows(), _rows(errs=(1.0, 1e-4), dims=(10, 10**5))):
        figs = _draw_all(*df_style)
        for name in ("error", "time", "memory"):
            for ax in _visible_axes(figs[name]):
                assert ax.get_yscale() == "log" and ax.get_xscale() == "log", name


def _legend_texts(fig):
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_the_spread_legend_entry_needs_more_than_one_seed(close_all):
    one = _draw_all(*_rows(n_seeds=1))
    assert not any("interquartile" in t for f in one.values() for t in _legend_texts(f))
    three = _draw_all(*_rows(n_seeds=3))
    assert all(any("interquartile" in t for t in _legend_texts(three[m]))
               for m in ("error", "time", "memory", "convergence"))


def test_memory_ticks_span_the_range_below_one_gib_and_the_baseline_is_stated(close_all):
    df, style = _rows(peak=400 * 2**20, baseline=250 * 2**20)
    fig = figures.metric_vs_d(aggregate.families(df), style, "memory", rows=df)
    fig.canvas.draw()
    (ax,) = _visible_axes(fig)
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert len(labels) >= 2 and all(t.endswith("MiB") for t in labels), labels
    lo, hi = ax.get_ylim()
    assert all(lo <= v <= hi for v in ax.get_yticks())
    assert "above baseline" in ax.get_ylabel()
    # lines: the peak above the baseline (150 MiB at d = 1e6), and the baseline (250 MiB)
    ys = [list(line.get_ydata()) for line in ax.lines]
    assert any(math.isclose(y[0], 150 / 1024, rel_tol=1e-6) for y in ys if y)
    assert any(math.isclose(y[0], 250 / 1024, rel_tol=1e-6) for y in ys if y)
    assert any("baseline after set-up" in t for t in _legend_texts(fig))


def test_untrained_cells_are_drawn_hollow_with_a_legend_entry(close_all):
    df, style = _rows(steps=39)
    fig = figures.metric_vs_d(aggregate.families(df), style, "error", rows=df)
    (ax,) = _visible_axes(fig)
    assert any(line.get_markerfacecolor() == "white" for line in ax.lines)
    assert any("untrained" in t for t in _legend_texts(fig))
    trained = _rows(steps=1000)
    fig = figures.metric_vs_d(aggregate.families(trained[0]), trained[1], "error")
    assert not any("untrained" in t for t in _legend_texts(fig))


def test_full_report_figures_have_no_offset_text(tmp_path, close_all):
    df = aggregate.prepare(known_results())
    style = figures.SeriesStyle(dict(zip(df["series"], df["label"])))
    fams = aggregate.families(df)
    for fig in (figures.metric_vs_d(fams, style, "memory", rows=df),
                figures.convergence(df, style, P1), figures.ablation(df, "rank"),
                figures.variance_vs_eps(df, style)):
        fig.canvas.draw()
        for ax in _visible_axes(fig):
            assert ax.xaxis.get_offset_text().get_text() == ""
            assert ax.yaxis.get_offset_text().get_text() == ""


def test_the_memory_axis_is_scaled_to_the_data(close_all):
    """Issue 24: a 23.5 GiB device line and a far baseline squashed peaks of tens of MiB. Lines
    more than 4x beyond the data are left off the axis; the peaks' range sets it."""
    df, style = _rows(dims=(10**6,), peak=2010 * 2**20, baseline=2000 * 2**20)  # 10 MiB above
    df["provenance"] = [{**p, "host_memory_bytes": int(23.5 * 2**30)} for p in df["provenance"]]
    fig = figures.metric_vs_d(aggregate.families(df), style, "memory", rows=df)
    fig.canvas.draw()
    (ax,) = _visible_axes(fig)
    lo, hi = ax.get_ylim()
    assert lo <= 10 / 1024 <= hi
    assert hi < 2000 / 1024  # neither the baseline nor the device line stretches the axis
    assert not any("total device memory" in t for t in _legend_texts(fig))
    assert not any("baseline after set-up" in t for t in _legend_texts(fig))  # off the axis
    # within reach (32 MiB, 3.2x the peak), the device line is drawn and on the axis
    df["provenance"] = [{**p, "host_memory_bytes": 32 * 2**20} for p in df["provenance"]]
    fig = figures.metric_vs_d(aggregate.families(df), style, "memory", rows=df)
    (ax,) = _visible_axes(fig)
    assert ax.get_ylim()[1] >= 32 / 1024
    assert any("total device memory" in t for t in _legend_texts(fig))
