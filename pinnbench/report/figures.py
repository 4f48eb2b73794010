"""The report's figures: matplotlib (Agg) with seaborn's theme and palette.

Conventions shared by every figure:
- one colour and one marker per series (``SeriesStyle``), the same in every figure;
- error, time and memory always on log axes (so figures of different runs read alike), each
  spanning at least ``MIN_LOG_DECADES`` decades, so that a change of 1e-5 never fills a panel;
  d on a log axis; steps and wall time on a symlog axis (they start at 0); never offset tick
  labels (``1e-6+9.9999e-1``);
- one panel per problem (facets); legends outside the panels, with entries only for what is
  drawn (no interquartile-range entry when every aggregate has one seed);
- the centre of a seed aggregate is the log-space median, the band its interquartile range;
- a cell that did not finish (oom, timeout, diverged, error, skipped) is never dropped: it is
  drawn as an × in its series' colour at its d, in a grey band at the top of the panel, labelled
  with its status and seed count; a cell that finished with fewer than
  ``verdict.MIN_TRAINED_STEPS`` steps (untrained) is drawn hollow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")  # noqa: E402  (before pyplot; the report never opens a window)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from pinnbench.judge import verdict  # noqa: E402
from pinnbench.report.aggregate import (CURVE_STATUSES, Family, LogStats,  # noqa: E402
                                        curve_stats)
from pinnbench.report.provenance import device_label, total_memory_bytes  # noqa: E402

SERIES_MARKERS = ("o", "s", "^", "D", "v", "P", "p", "h", "<", ">", "*", "8")
FAIL_MARKER = "x"
FAIL_LABEL = {"oom": "OOM", "timeout": "timeout", "diverged": "diverged", "error": "error",
              "skipped": "skipped"}
PANEL_W, PANEL_H = 4.6, 3.5
DPI = 110
GIB = 2.0**30
#: the least span, in decades, of a log axis of error, time or memory
MIN_LOG_DECADES = 1.0


def theme() -> dict:
    """rc parameters for every figure (applied with ``plt.rc_context``, never globally)."""
    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.8))
    rc.update({"axes.titlesize": 10, "axes.titleweight": "bold", "legend.frameon": False,
               "savefig.dpi": DPI, "figure.dpi": DPI, "axes.formatter.useoffset": False})
    return rc


class SeriesStyle:
    """Colour and marker of each series, fixed once for the whole report."""

    def __init__(self, series_labels: dict[str, str]) -> None:
        order = sorted(series_labels, key=lambda s: (series_labels[s], s))
        n = len(order)
        palette = sns.color_palette("colorblind", n) if n <= 10 else \
            sns.color_palette("tab20", n) if n <= 20 else sns.color_palette("husl", n)
        self.order = order
        self.labels = series_labels
        self.color = {s: palette[i] for i, s in enumerate(order)}
        self.marker = {s: SERIES_MARKERS[i % len(SERIES_MARKERS)] for i, s in enumerate(order)}

    def handle(self, series: str) -> Line2D:
        return Line2D([], [], color=self.color[series], marker=self.marker[series], lw=1.6,
                      label=self.labels[series])


@dataclass
class SavedFigure:
    file: str  # relative to the report folder
    title: str
    caption: str


def save(fig: plt.Figure, out_dir: Path, name: str) -> str:
    path = out_dir / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, facecolor="white")
    plt.close(fig)
    return f"figures/{name}.png"


# ------------------------------------------------------------------------------------ helpers


def _spans_decade(values: Iterable[float]) -> bool:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    return v.size > 0 and bool(np.all(v > 0)) and v.max() / v.min() >= 10.0


def _facets(n: int, ncols_max: int = 3, w: float = PANEL_W, h: float = PANEL_H):
    ncols = max(1, min(ncols_max, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _set_x_dims(ax: plt.Axes, dims: list[int]) -> None:
    dims = sorted(set(dims))
    if not dims:
        return
    ax.set_xscale("log")
    pad = 2.0 if _spans_decade(dims) or len(dims) == 1 else 1.25
    ax.set_xlim(dims[0] / pad, dims[-1] * pad)
    ax.set_xticks(dims)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _fmt_dim(v)))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _fmt_dim(v: float) -> str:
    if v <= 0:
        return f"{v:g}"
    e = math.log10(v)
    if abs(e - round(e)) < 1e-9 and v >= 1000:
        return f"$10^{{{int(round(e))}}}$"
    return f"{v:g}"


def _y_limits(ax: plt.Axes, values: list[float], n_fail_rows: int, log: bool) -> list[float]:
    """Set the y range to the data plus, when cells failed, a grey band on top for the ×
    markers; returns the axes-fraction heights of the marker rows."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and (x > 0 or not log)],
                   dtype=float)
    if log:
        ax.set_yscale("log")
    f = np.log10 if log else (lambda x: x)
    g = (lambda t: 10.0**t) if log else (lambda t: t)
    if v.size:
        lo, hi = float(f(v.min())), float(f(v.max()))
    else:
        lo, hi = (-3.0, 0.0) if log else (0.0, 1.0)
    span = hi - lo
    least = MIN_LOG_DECADES if log else max(abs(hi), 1.0) * 1e-3
    if span < least:  # a tiny change must not fill the panel
        mid = (lo + hi) / 2
        lo, hi, span = mid - least / 2, mid + least / 2, least
    lo, hi = lo - 0.08 * span, hi + 0.08 * span
    rows: list[float] = []
    if n_fail_rows:
        step = min(0.075, 0.45 / n_fail_rows)  # many failing series: rows draw closer
        band = 0.03 + step * n_fail_rows
        hi = lo + (hi - lo) / (1.0 - band)
        # in axes coordinates, so it moves no data limit
        ax.add_patch(Rectangle((0, 1 - band), 1, band, transform=ax.transAxes,
                               color="0.92", zorder=0, lw=0))
        rows = [1 - 0.03 - step * (k + 0.5) for k in range(n_fail_rows)]
    ax.set_ylim(g(lo), g(hi))
    return rows


def _mark_failures(ax: plt.Axes, style: SeriesStyle, fails: list[tuple[str, int, dict, int]],
                   rows: list[float], color_of=None) -> None:
    """Draw each failed (series, d) as an × at the top, one band row per series."""
    row_of: dict[str, int] = {}
    for key, dim, counts, n_seeds in fails:
        k = row_of.setdefault(key, len(row_of))
        y = rows[k]
        color = color_of(key) if color_of else style.color[key]
        trans = ax.get_xaxis_transform()
        ax.plot([dim], [y], marker=FAIL_MARKER, ms=8, mew=2.2, color=color, transform=trans,
                clip_on=False, zorder=5, ls="none")
        text = ", ".join(f"{FAIL_LABEL.get(s, s)}" + (f" {n}/{n_seeds}" if n != n_seeds else "")
                         for s, n in counts.items())
        ax.annotate(text, (dim, y), xycoords=trans, xytext=(6, 0), textcoords="offset points",
                    va="center", ha="left", fontsize=7, color=color, zorder=6)


def _fail_handle() -> Line2D:
    return Line2D([], [], marker=FAIL_MARKER, color="0.3", ls="none", ms=7, mew=2,
                  label="cell did not finish\n(status, seeds; grey band)")


def _legend(fig: plt.Figure, handles: list) -> None:
    """Put the legend in a margin added to the right of the panels, then lay the panels out.

    The figure is widened by the legend's measured width, so the legend never covers data and
    no costly ``bbox_inches="tight"`` pass is needed when saving.
    """
    leg = fig.legend(handles=handles, loc="upper left", fontsize=8, borderaxespad=0.2)
    width_in = leg.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi + 0.15
    panels_in = fig.get_figwidth()
    fig.set_figwidth(panels_in + width_in)
    frac = panels_in / (panels_in + width_in)
    fig.tight_layout(rect=(0, 0, frac, 1))
    leg.set_bbox_to_anchor((frac, 0.98), transform=fig.transFigure)


# ---------------------------------------------------------------------- metric against d

METRICS = {
    "error": ("rel_l2", "final relative $L^2$ error", 1.0),
    "time": ("time_per_step", "time per step (s)", 1.0),
    "memory": ("mem", "peak memory", 1.0 / GIB),
}


def memory_above_baseline(fams: list[Family]) -> bool:
    """True when every family with a memory value also has its baseline after set-up, so the
    memory figure can show the peaks above the baseline (and the baseline apart)."""
    with_mem = [f for f in fams if f.mem is not None]
    return bool(with_mem) and all(f.mem_above is not None and f.mem_baseline is not None
                                  for f in with_mem)


def metric_vs_d(fams: list[Family], style: SeriesStyle, metric: str,
                rows: pd.DataFrame | None = None) -> plt.Figure:
    """One panel per problem, one line per series: ``metric`` (error, time, memory) against d.

    error: the trivial fits A(x)·c and A(x)·(a + b·x) are drawn as grey floors.
    memory: GPU ``max_memory_allocated`` where measured, else the CPU RSS peak. Where every
    cell recorded its baseline after set-up, the lines are the peaks *above* that baseline and
    the baseline (median over the series at each d) is drawn as a grey dotted line; the total
    memory of each device (from provenance) is drawn as a horizontal line.
    """
    attr, ylabel, scale = METRICS[metric]
    problems = sorted({f.problem for f in fams})
    mem_kinds = {f.mem_kind for f in fams if f.mem is not None}
    above = metric == "memory" and memory_above_baseline(fams)
    if above:
        attr = "mem_above"
    if metric == "memory":
        what = {frozenset({"gpu"}): "GPU memory allocated",
                frozenset({"cpu"}): "CPU resident set"}.get(frozenset(mem_kinds), "memory")
        ylabel = f"peak {what} above baseline" if above else f"peak {what}"
    with plt.rc_context(theme()):
        fig, axes = _facets(len(problems))
        used_series: set[str] = set()
        any_fail = any_spread = any_untrained = drew_baseline = False
        drew_device_memory = False
        for ax, problem in zip(axes, problems):
            pf = [f for f in fams if f.problem == problem]
            yvals: list[float] = []
            fails: list[tuple[str, int, dict, int]] = []
            for series in style.order:
                sf = sorted((f for f in pf if f.series == series), key=lambda f: f.dim)
                if not sf:
                    continue
                used_series.add(series)
                pts = [(f, getattr(f, attr)) for f in sf if getattr(f, attr) is not None]
                if pts:
                    x = [f.dim for f, _ in pts]
                    med = [st.median * scale for _, st in pts]
                    lo = [st.q25 * scale for _, st in pts]
                    hi = [st.q75 * scale for _, st in pts]
                    ax.plot(x, med, color=style.color[series], marker=style.marker[series],
                            lw=1.6, ms=6, zorder=3)
                    if any(st.n > 1 for _, st in pts):
                        ax.fill_between(x, lo, hi, color=style.color[series], alpha=0.18, lw=0,
                                        zorder=2)
                        any_spread = True
                    yvals += med + lo + hi
                    for (f, _), y in zip(pts, med):
                        hollow = not f.trained
                        cpu_in_gpu = metric == "memory" and len(mem_kinds) > 1 \
                            and f.mem_kind == "cpu"
                        if hollow or cpu_in_gpu:
                            ax.plot([f.dim], [y], marker=style.marker[series],
                                    ms=6 if hollow else 3, mfc="white", mec=style.color[series],
                                    color=style.color[series], zorder=4, ls="none")
                            any_untrained |= hollow
                for f in sf:
                    if f.failures:
                        fails.append((series, f.dim, f.failures, f.n_seeds))
            if metric == "error":
                yvals += _draw_floors(ax, pf)
            data = list(yvals)  # the memory axis is scaled to the measured values
            if above:
                shown = _within_reach(_draw_baseline(ax, pf), data)
                yvals += shown
                drew_baseline |= bool(shown)  # off the axis: no legend entry (caption says)
            if metric == "memory" and rows is not None:
                lines = _draw_device_memory(ax, rows[rows["problem"] == problem], data)
                drew_device_memory |= bool(lines)
                yvals += lines
            n_rows = len({s for s, *_ in fails})
            ys = _y_limits(ax, yvals, n_rows, log=True)
            _mark_failures(ax, style, fails, ys)
            any_fail |= bool(fails)
            _set_x_dims(ax, [f.dim for f in pf])
            ax.set_title(problem)
            ax.set_xlabel("dimension d")
            ax.set_ylabel(ylabel)
            if metric == "memory":
                memory_ticks(ax)
        handles = [style.handle(s) for s in style.order if s in used_series]
        if any_spread:
            handles.append(Patch(color="0.5", alpha=0.25, label="interquartile range over seeds"))
        if any_untrained:
            handles.append(Line2D([], [], marker="o", color="0.3", mfc="white", ls="none",
                                  label=f"hollow: untrained\n(< {verdict.MIN_TRAINED_STEPS} "
                                  "steps)"))
        if metric == "error":
            handles += [Line2D([], [], color="0.35", ls="--", lw=1.3,
                               label="trivial fit A(x)·c"),
                        Line2D([], [], color="0.35", ls=":", lw=1.6,
                               label="trivial fit A(x)·(a + b·x)")]
        if metric == "memory":
            if drew_baseline:
                handles.append(Line2D([], [], color="0.45", ls=(0, (1, 1.5)), lw=2.0,
                                      label="baseline after set-up\n(not in the lines above)"))
            if drew_device_memory:
                handles.append(Line2D([], [], color="black", ls="-.", lw=1.2,
                                      label="total device memory"))
            if mem_kinds == {"gpu", "cpu"}:
                handles.append(Line2D([], [], marker="o", color="0.3", mfc="white", ls="none",
                                      ms=3, label="small hollow: CPU RSS\n(no GPU measured)"))
        if any_fail:
            handles.append(_fail_handle())
        _legend(fig, handles)
    return fig


def _draw_baseline(ax: plt.Axes, pf: list[Family]) -> list[float]:
    """The memory baseline after set-up, median over the series at each d (GiB)."""
    by_dim: dict[int, list[float]] = {}
    for f in pf:
        if f.mem_baseline is not None:
            by_dim.setdefault(f.dim, []).append(f.mem_baseline.median / GIB)
    pts = sorted((d, float(np.median(v))) for d, v in by_dim.items())
    if pts:
        ax.plot([d for d, _ in pts], [v for _, v in pts], color="0.45", ls=(0, (1, 1.5)), lw=2.0,
                zorder=1)
    return [v for _, v in pts]


def format_gib(v: float) -> str:
    """A memory tick given in GiB: 256 MiB, 1.5 GiB, 12 GiB, 1 TiB."""
    if v <= 0:
        return "0"
    if v < 1:
        mib = v * 1024
        return f"{mib:.3g} MiB" if mib >= 1 else f"{mib * 1024:.3g} KiB"
    return f"{v:.3g} GiB" if v < 1024 else f"{v / 1024:.3g} TiB"


def memory_ticks(ax: plt.Axes, most: int = 8) -> list[float]:
    """Labelled ticks across the whole memory axis (GiB units, log scale): powers of two and
    1.5 times them (256 MiB, 384 MiB, 512 MiB, ...), thinned to at most ``most``."""
    lo, hi = ax.get_ylim()
    ks = range(math.floor(math.log2(lo)) - 1, math.ceil(math.log2(hi)) + 2)
    ticks = sorted(m * 2.0**k for k in ks for m in (1.0, 1.5) if lo <= m * 2.0**k <= hi)
    if len(ticks) > most:
        ticks = [t for t in ticks if math.log2(t).is_integer()]
    step = 1
    while len(ticks[::step]) > most:
        step += 1
    ticks = ticks[::step]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_gib(v)))
    return ticks


def _draw_floors(ax: plt.Axes, pf: list[Family]) -> list[float]:
    by_dim: dict[int, tuple[list[float], list[float]]] = {}
    for f in pf:
        c, a = by_dim.setdefault(f.dim, ([], []))
        if f.floor_const is not None:
            c.append(f.floor_const)
        if f.floor_affine is not None:
            a.append(f.floor_affine)
    dims = sorted(by_dim)
    out: list[float] = []
    for idx, ls, lw in ((0, "--", 1.3), (1, ":", 1.6)):
        pts = [(d, float(np.median(by_dim[d][idx]))) for d in dims if by_dim[d][idx]]
        if pts:
            ax.plot([d for d, _ in pts], [v for _, v in pts], color="0.35", ls=ls, lw=lw,
                    zorder=1)
            out += [v for _, v in pts]
    return out


#: a reference line (baseline, device memory) sets the memory axis only within this factor of
#: the measured values; farther away it would squash the differences the figure is for
REFERENCE_REACH = 4.0


def _within_reach(values: list[float], data: list[float]) -> list[float]:
    """The values within REFERENCE_REACH of the data's range (all of them without data)."""
    d = [x for x in data if x is not None and np.isfinite(x) and x > 0]
    if not d:
        return values
    lo, hi = min(d) / REFERENCE_REACH, max(d) * REFERENCE_REACH
    return [v for v in values if lo <= v <= hi]


def _draw_device_memory(ax: plt.Axes, rows: pd.DataFrame,
                        data: list[float] | None = None) -> list[float]:
    """The total memory of each measured device, drawn only within reach of the data."""
    seen: dict[tuple[str, int], None] = {}
    for prov, kind in zip(rows["provenance"], rows["mem_kind"]):
        total = total_memory_bytes(prov, kind)
        if total is not None:
            seen.setdefault((device_label(prov, kind), total), None)
    out = []
    for label, total in seen:
        y = total / GIB
        if data is not None and not _within_reach([y], data):
            continue
        ax.axhline(y, color="black", ls="-.", lw=1.2, zorder=1)
        ax.annotate(f"{label}: {total / 2**30:.3g} GiB", (0.02, y),
                    xycoords=ax.get_yaxis_transform(), xytext=(0, -3), textcoords="offset points",
                    fontsize=7, va="top")
        out.append(y)
    return out


# ------------------------------------------------------------------------- convergence

#: at most this many d side by side; more wrap into further (step, time) row pairs
CONVERGENCE_COLUMNS = 4


def convergence(df: pd.DataFrame, style: SeriesStyle, problem: str) -> plt.Figure | None:
    """Error against step (top row) and against wall time (bottom row), one column per d."""
    rows = df[(df["problem"] == problem) & df["status"].isin(CURVE_STATUSES)]
    dims = sorted(rows["dim"].unique())
    stats: dict[tuple[str, int], object] = {}
    for (series, dim), g in rows.groupby(["series", "dim"], sort=True):
        cs = curve_stats(g)
        if cs is not None:
            stats[(series, int(dim))] = cs
    dims = [d for d in dims if any(k[1] == d for k in stats)]
    if not dims:
        return None
    with plt.rc_context(theme()):
        ncols = min(CONVERGENCE_COLUMNS, len(dims))
        blocks = math.ceil(len(dims) / ncols)  # each block: a row against step, one against time
        fig, axes = plt.subplots(2 * blocks, ncols, figsize=(3.6 * ncols, 3.2 * 2 * blocks),
                                 squeeze=False)
        for k in range(len(dims), blocks * ncols):
            axes[2 * (k // ncols), k % ncols].set_visible(False)
            axes[2 * (k // ncols) + 1, k % ncols].set_visible(False)
        used: set[str] = set()
        any_spread = False
        for k, dim in enumerate(dims):
            j = k % ncols
            for i, xkey in enumerate(("step", "time_s")):
                ax = axes[2 * (k // ncols) + i, j]
                xs_all: list[float] = []
                ys_all: list[float] = []
                for series in style.order:
                    cs = stats.get((series, dim))
                    if cs is None:
                        continue
                    used.add(series)
                    x = getattr(cs, xkey)
                    keep = np.isfinite(x)
                    if not keep.any():
                        continue
                    ax.plot(x[keep], cs.median[keep], color=style.color[series],
                            marker=style.marker[series], ms=3.5, lw=1.4)
                    if (cs.n[keep] > 1).any():
                        ax.fill_between(x[keep], cs.q25[keep], cs.q75[keep],
                                        color=style.color[series], alpha=0.18, lw=0)
                        any_spread = True
                    xs_all += list(x[keep])
                    ys_all += list(cs.q25[keep]) + list(cs.q75[keep])
                _log_or_symlog(ax, xs_all)
                _y_limits(ax, ys_all, 0, log=True)
                ax.set_xlabel("training step" if xkey == "step" else "wall time (s)")
                if j == 0:
                    ax.set_ylabel("relative $L^2$ error")
                if i == 0:
                    ax.set_title(f"d = {dim:,}")
        fig.suptitle(problem, fontweight="bold", fontsize=11)
        handles = [style.handle(s) for s in style.order if s in used]
        if any_spread:
            handles.append(Patch(color="0.5", alpha=0.25, label="interquartile range over seeds"))
        _legend(fig, handles)
    return fig


def _log_or_symlog(ax: plt.Axes, xs: list[float]) -> None:
    x = np.asarray([v for v in xs if np.isfinite(v)], dtype=float)
    if x.size == 0:
        return
    pos = x[x > 0]
    if not pos.size:
        return
    if x.min() <= 0:
        # zero (step 0, time 0) on a log axis: linear below the first power of ten, half a
        # decade wide, so 0 and that power stand apart
        ax.set_xscale("symlog", linthresh=10.0 ** math.floor(math.log10(pos.min())),
                      linscale=0.5)
    else:
        ax.set_xscale("log")


# ---------------------------------------------------------------------------- ablations

#: solver parameters ablated when the store holds several values of them (docs/sdze-tuning.md)
ABLATION_PARAMS = {"crns": "CRNS", "rank": "rank r", "r": "rank r"}


def ablation_groups(df: pd.DataFrame, param: str) -> list[tuple[str, pd.DataFrame]]:
    """Groups of rows (same problem, family, other parameters and settings) in which ``param``
    takes at least two values; each with a title naming what it holds fixed."""
    has = df[[param in p for p in df["solver_params"]]]
    if has.empty:
        return []
    has = has.assign(
        _ctx=[json.dumps({k: v for k, v in p.items() if k != param}, sort_keys=True, default=str)
              + "|" + s[len(sv):] for p, s, sv in zip(has["solver_params"], has["series"],
                                                       has["solver"])],
        _val=[json.dumps(p[param], default=str) for p in has["solver_params"]])
    out = []
    for (problem, name), g in has.groupby(["problem", "solver_name"], sort=True):
        contexts = [c for c, gc in g.groupby("_ctx", sort=True) if gc["_val"].nunique() >= 2]
        ctx_params = [json.loads(c.split("|", 1)[0]) for c in contexts]
        keys = sorted({k for p in ctx_params for k in p})
        differing = [k for k in keys if len({json.dumps(p.get(k), default=str)
                                             for p in ctx_params}) > 1]
        for c, p in zip(contexts, ctx_params):
            fixed = ",".join(f"{k}={p.get(k)}" for k in differing)
            suffix = c.split("|", 1)[1].strip()
            title = f"{problem} · {name}" + (f"[{fixed}]" if fixed else "") + \
                (f" {suffix}" if suffix else "")
            out.append((title, g[g["_ctx"] == c]))
    return out


def ablation(df: pd.DataFrame, param: str) -> plt.Figure | None:
    """Final error and time per step against the values of ``param``, one line per d."""
    groups = ablation_groups(df, param)
    if not groups:
        return None
    dims = sorted({int(d) for _, g in groups for d in g["dim"]})
    colors = dict(zip(dims, sns.color_palette("viridis", len(dims)) if len(dims) > 1
                      else [sns.color_palette("viridis", 3)[0]]))
    with plt.rc_context(theme()):
        fig, axes = plt.subplots(len(groups), 2, figsize=(2 * PANEL_W, PANEL_H * len(groups)),
                                 squeeze=False)
        any_fail = any_spread = False
        for (title, g), row in zip(groups, axes):
            values = sorted({json.loads(v) for v in g["_val"]}, key=_sort_key)
            is_bool = all(isinstance(v, bool) for v in values)
            xpos = {json.dumps(v): (i if is_bool else float(v)) for i, v in enumerate(values)}
            for ax, col, ylabel in ((row[0], "final_rel_l2", "final relative $L^2$ error"),
                                    (row[1], "time_per_step_s", "time per step (s)")):
                yvals: list[float] = []
                fails: list[tuple[str, float, dict, int]] = []
                for dim, gd in g.groupby("dim", sort=True):
                    pts = []
                    for v in values:
                        cell = gd[gd["_val"] == json.dumps(v)]
                        if cell.empty:
                            continue
                        st = LogStats.of(cell.loc[cell["status"] == "ok", col])
                        if st is not None:
                            pts.append((xpos[json.dumps(v)], st))
                        bad = cell[cell["status"] != "ok"]["status"].value_counts().to_dict()
                        if bad:
                            fails.append((int(dim), xpos[json.dumps(v)], bad, len(cell)))
                    if pts:
                        x = [p for p, _ in pts]
                        spread = any(s.n > 1 for _, s in pts)
                        any_spread |= spread
                        ax.errorbar(x, [s.median for _, s in pts],
                                    yerr=[[s.median - s.q25 for _, s in pts],
                                          [s.q75 - s.median for _, s in pts]] if spread else None,
                                    color=colors[int(dim)], marker="o", ms=5, lw=1.5, capsize=3)
                        yvals += [s.q25 for _, s in pts] + [s.q75 for _, s in pts]
                n_rows = len({k for k, *_ in fails})
                ys = _y_limits(ax, yvals, n_rows, log=True)
                _mark_failures(ax, None, fails, ys, color_of=lambda d: colors[d])
                any_fail |= bool(fails)
                if is_bool:
                    ax.set_xticks(range(len(values)))
                    ax.set_xticklabels(["off" if not v else "on" for v in values])
                    ax.set_xlim(-0.5, len(values) - 0.5)
                else:
                    if _spans_decade(values) or (min(values) > 0 and max(values) / min(values) >= 4):
                        ax.set_xscale("log", base=2)
                    ax.set_xticks([float(v) for v in values])
                    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
                    lo, hi = min(values), max(values)
                    if ax.get_xscale() == "log":
                        ax.set_xlim(lo / 1.5, hi * 1.5)
                    else:
                        pad = 0.1 * (hi - lo) if hi > lo else 1.0
                        ax.set_xlim(lo - pad, hi + pad)
                ax.set_xlabel(ABLATION_PARAMS.get(param, param))
                ax.set_ylabel(ylabel)
                ax.set_title(title, fontsize=9)
        handles = [Line2D([], [], color=colors[d], marker="o", label=f"d = {d:,}") for d in dims]
        if any_spread:
            handles.append(Line2D([], [], color="0.3", marker="|", ms=8, ls="none",
                                  label="interquartile range over seeds"))
        if any_fail:
            handles.append(_fail_handle())
        _legend(fig, handles)
    return fig


def _sort_key(v):
    return (0, float(v)) if isinstance(v, (int, float)) else (1, str(v))


# --------------------------------------------------------- variance of the ZO quotient vs eps

#: key in the optional ``diagnostics`` JSON column: list of {eps, crns, variance, samples}
VARIANCE_KEY = "zo_quotient_variance"


def variance_points(df: pd.DataFrame) -> pd.DataFrame:
    """Long table (problem, series, dim, seed, eps, crns, variance) from ``diagnostics``."""
    cols = ["problem", "series", "label", "dim", "seed", "eps", "crns", "variance"]
    if "diagnostics" not in df.columns:
        return pd.DataFrame(columns=cols)
    recs = []
    for r in df.itertuples(index=False):
        diag = r.diagnostics
        if not isinstance(diag, dict):
            continue
        for p in diag.get(VARIANCE_KEY) or []:
            try:
                recs.append((r.problem, r.series, r.label, int(r.dim), int(r.seed),
                             float(p["eps"]), bool(p.get("crns", True)), float(p["variance"])))
            except (KeyError, TypeError, ValueError):
                continue
    return pd.DataFrame(recs, columns=cols)


def variance_vs_eps(df: pd.DataFrame, style: SeriesStyle) -> plt.Figure | None:
    """Var of the two-point quotient [L(θ+εz) − L(θ−εz)]/(2ε) against ε, CRNS on and off.

    Without CRNS the variance grows like Var_ω[L]/(2ε²) (solvers/zo.py); with CRNS it stays
    O(1) as ε → 0. One panel per (problem, d); colour and marker by series, solid for CRNS on,
    dashed for off.
    """
    pts = variance_points(df)
    if pts.empty:
        return None
    panels = sorted({(p, int(d)) for p, d in zip(pts["problem"], pts["dim"])})
    problems = sorted({p for p, _ in panels})
    ncols = max(sum(1 for q, _ in panels if q == p) for p in problems)
    with plt.rc_context(theme()):
        fig, axes = plt.subplots(len(problems), ncols, squeeze=False,
                                 figsize=(3.8 * ncols, 3.2 * len(problems)))
        any_spread = False
        for i, problem in enumerate(problems):
            dims = [d for p, d in panels if p == problem]
            for ax in axes[i, len(dims):]:
                ax.set_visible(False)
            for ax, dim in zip(axes[i], dims):
                pp = pts[(pts["problem"] == problem) & (pts["dim"] == dim)]
                yvals: list[float] = []
                for series in style.order:
                    for crns in (True, False):
                        g = pp[(pp["series"] == series) & (pp["crns"] == crns)]
                        agg = [(e, LogStats.of(ge["variance"])) for e, ge in g.groupby("eps")]
                        agg = [(e, st) for e, st in agg if st is not None]
                        if not agg:
                            continue
                        x = [e for e, _ in agg]
                        ax.plot(x, [st.median for _, st in agg], color=style.color[series],
                                marker=style.marker[series], ls="-" if crns else "--", lw=1.5,
                                ms=5)
                        if any(st.n > 1 for _, st in agg):
                            ax.fill_between(x, [st.q25 for _, st in agg],
                                            [st.q75 for _, st in agg],
                                            color=style.color[series], alpha=0.15, lw=0)
                            any_spread = True
                        yvals += [st.q25 for _, st in agg] + [st.q75 for _, st in agg]
                ax.set_xscale("log")
                _y_limits(ax, yvals, 0, log=True)
                ax.set_xlabel("ε")
                ax.set_ylabel("variance of the ZO quotient")
                ax.set_title(f"{problem} · d = {dim:,}", fontsize=9)
        used = set(pts["series"])
        handles = [style.handle(s) for s in style.order if s in used]
        handles += [Line2D([], [], color="0.3", ls="-", label="CRNS on"),
                    Line2D([], [], color="0.3", ls="--", label="CRNS off")]
        if any_spread:
            handles.append(Patch(color="0.5", alpha=0.25, label="interquartile range over seeds"))
        _legend(fig, handles)
    return fig
