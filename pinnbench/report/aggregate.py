"""From result rows to what the report shows: series, seed aggregates, failures, curves.

A *series* is one line on a figure: one solver spec (the canonical ``solver`` string) plus the
cell settings (width, depth, steps, dtype, device) that the selected rows do not share. A
*family* is one series at one problem and one dimension d; its rows differ only by seed.

Seed aggregation happens in log space (the figures are log-log): for positive values
v_1..v_n the centre is ``10 ** median(log10 v_i)`` and the band is
``10 ** quantile(log10 v_i, [0.25, 0.75])`` (numpy's linear interpolation). For an odd n the
centre is the ordinary median; for an even n it is the geometric mean of the two middle values.
Only seeds whose cell finished (status ``ok``) enter the measurements; every other status is
counted and shown (OOM and timeouts marked where they happened). Statuses are read through
:func:`pinnbench.judge.verdict.final_status`, so a cell stored ``ok`` whose error blew up (a store
written before that rule) is reported ``diverged``; ``trained`` marks cells that ran at least
:data:`pinnbench.judge.verdict.MIN_TRAINED_STEPS` steps.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pinnbench.judge import verdict
from pinnbench.cells.schema import COLUMNS, JSON_COLUMNS

#: statuses that are marked on the figures instead of plotted as values
FAILURE_STATUSES = ("oom", "timeout", "diverged", "error", "skipped")

#: cell settings that split a solver spec into several series when they vary
CONFIG_COLUMNS = ("width", "depth", "steps", "dtype", "device")

FAMILY_KEYS = ("problem", "series", "dim")


class ReportError(ValueError):
    """The results cannot be reported (empty or missing store, unknown run, bad columns)."""


@dataclass(frozen=True)
class LogStats:
    """Seed aggregate of one positive quantity, in log space (see the module docstring)."""

    median: float
    q25: float
    q75: float
    n: int

    @classmethod
    def of(cls, values: Any) -> "LogStats | None":
        v = np.asarray(pd.to_numeric(pd.Series(values, dtype=object), errors="coerce"),
                       dtype=float)
        v = v[np.isfinite(v) & (v > 0)]
        if v.size == 0:
            return None
        v = np.sort(v)
        return cls(_log_quantile(v, 0.5), _log_quantile(v, 0.25), _log_quantile(v, 0.75),
                   int(v.size))


def _log_quantile(v: np.ndarray, q: float) -> float:
    """numpy's linear-interpolation quantile of log v, mapped back: at position h = (n-1)q,
    v[lo]^(1-t) * v[lo+1]^t with t = h - lo; exactly a data value when h is a whole number."""
    h = (v.size - 1) * q
    lo = int(math.floor(h))
    t = h - lo
    if t == 0.0:
        return float(v[lo])
    return float(v[lo] ** (1.0 - t) * v[lo + 1] ** t)


def decode_json(value: Any) -> Any:
    """JSON columns arrive decoded from ``load_results``; accept JSON text too."""
    if isinstance(value, (bytes, str)):
        text = value.decode() if isinstance(value, bytes) else value
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


#: columns added after results were first exported: absent from older DataFrames, read as null
#: columns an older store or export may lack (filled with null)
OPTIONAL_COLUMNS = ("diagnostics", "data_time_per_step_s", "solver_time_per_step_s")


def check_columns(df: pd.DataFrame) -> None:
    missing = [c for c in COLUMNS if c not in df.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise ReportError("results lack the column(s) " + ", ".join(missing) +
                          "; expected the columns of pinnbench.cells.schema.COLUMNS "
                          "(as pinnbench.load_results returns them)")


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Decode JSON columns, coerce numbers, add ``series``, ``label``, ``mem_bytes``, ``mem_kind``."""
    check_columns(df)
    out = df.copy()
    for col in OPTIONAL_COLUMNS:
        if col not in out.columns:
            out[col] = None
    for col in JSON_COLUMNS:
        out[col] = [decode_json(v) for v in out[col]]
    out["solver_params"] = [p if isinstance(p, dict) else {} for p in out["solver_params"]]
    out["provenance"] = [p if isinstance(p, dict) else {} for p in out["provenance"]]
    for col, (kind, _) in COLUMNS.items():
        if kind in ("int", "float"):
            out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
        elif kind == "str":
            out[col] = [("" if _missing(v) else str(v)) for v in out[col]]
    out["dim"] = out["dim"].astype("int64")
    out["seed"] = out["seed"].fillna(-1).astype("int64")
    judged = [verdict.final_status(r) for r in
              out[["status", "message", "final_loss", "final_rel_l2", "curve"]].to_dict("records")]
    out["status"] = [st for st, _ in judged]
    out["message"] = [m for _, m in judged]
    out["trained"] = (out["steps_done"] >= verdict.MIN_TRAINED_STEPS).to_numpy(dtype=bool)

    varying = [c for c in CONFIG_COLUMNS if out[c].nunique(dropna=False) > 1]
    out["series"] = [_series_key(row, varying) for row in out.itertuples(index=False)]
    labels = short_labels(out)
    out["label"] = [labels[s] for s in out["series"]]

    gpu = out["peak_gpu_allocated_bytes"]
    out["mem_kind"] = np.where(gpu.notna(), "gpu", "cpu")
    out["mem_bytes"] = gpu.where(gpu.notna(), out["peak_cpu_bytes"])
    # the baseline the peak sits on: the cell's memory after set-up (interpreter and libraries,
    # problem, model parameters, solver state); the peak above it is what training itself took
    base = out["baseline_gpu_allocated_bytes"].where(gpu.notna(), out["baseline_cpu_bytes"])
    out["mem_baseline_bytes"] = base
    out["mem_above_bytes"] = (out["mem_bytes"] - base).where(base.notna())
    return out


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _config_suffix(row: Any, varying: list[str]) -> str:
    short = {"width": "w", "depth": "depth", "steps": "steps", "dtype": "", "device": ""}
    parts = []
    for c in varying:
        v = getattr(row, c)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        parts.append(f"{short[c]}={v}" if short[c] else str(v))
    return " ".join(parts)


def _series_key(row: Any, varying: list[str]) -> str:
    suffix = _config_suffix(row, varying)
    return f"{row.solver} {suffix}" if suffix else row.solver


def short_labels(df: pd.DataFrame) -> dict[str, str]:
    """Legend labels: the family name plus only the parameters that differ within the family.

    ``sdze[crns=true,eps=0.001,rank=8]`` and ``sdze[crns=true,eps=0.001,rank=16]`` become
    ``sdze[rank=8]`` and ``sdze[rank=16]``; a family with one spec is just ``sdze``.
    """
    first = df.drop_duplicates("series")
    labels: dict[str, str] = {}
    for name, group in first.groupby("solver_name", sort=True):
        params = [dict(p) for p in group["solver_params"]]
        keys = sorted({k for p in params for k in p})
        differing = [k for k in keys
                     if len({json.dumps(p.get(k), sort_keys=True, default=str) for p in params}) > 1]
        for row, p in zip(group.itertuples(index=False), params):
            body = ",".join(f"{k}={_fmt_param(p.get(k))}" for k in differing)
            label = f"{name}[{body}]" if body else str(name)
            suffix = row.series[len(row.solver):].strip()
            labels[row.series] = f"{label} {suffix}" if suffix else label
    # two different series must never share a label
    seen: dict[str, int] = {}
    for s in sorted(labels):
        lab = labels[s]
        if lab in seen:
            labels[s] = s
        seen[lab] = 1
    return labels


def nondefault_spec(spec: str) -> str:
    """A solver spec shown by its non-default parameters only (``sdze[rank=4]``; ``sdze`` when
    every parameter is at its default), read against the registered solver's declared
    defaults; the spec unchanged when its solver is not installed here or it does not parse."""
    from pinnbench.solver import SOLVERS, parse_spec

    try:
        name, params = parse_spec(spec)
        cls = SOLVERS.get(name)
        declared = cls.all_parameters()
        values = {k: declared[k].coerce(k, v) for k, v in params.items() if k in declared}
        defaults = cls.defaults_for(values)
        changed = [(k, v) for k, v in sorted(params.items())
                   if k not in declared or values[k] != defaults[k]]
    except Exception:  # noqa: BLE001 - a foreign or old spec is shown as it was stored
        return spec
    return f"{name}[{','.join(f'{k}={v}' for k, v in changed)}]" if changed else name


def _fmt_param(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "-"
    return str(v)


@dataclass
class Family:
    """One series at one (problem, d): its seeds, aggregates and failures."""

    problem: str
    series: str
    label: str
    solver: str
    solver_name: str
    dim: int
    seeds: list[int]
    status_counts: dict[str, int]
    rel_l2: LogStats | None
    time_per_step: LogStats | None
    #: the step's time split (Solver.draw): drawing points, source and probes / the rest
    data_time: LogStats | None
    solver_time: LogStats | None
    mem: LogStats | None
    mem_kind: str
    n_params: float | None
    #: medians over seeds of the trivial fits: drawn on the figures, never compared with an
    #: error (each seed is judged against its own fits: ``seeds``)
    floor_const: float | None
    floor_affine: float | None
    #: every seed that finished ran at least verdict.MIN_TRAINED_STEPS steps
    trained: bool = True
    #: median steps run by the seeds that finished
    steps_done: float | None = None
    #: the envelope [min lo, max hi] of the 95 % intervals over the test points of the seeds
    #: that finished (a seed's interval is over its own test set)
    rel_l2_ci: tuple[float, float] | None = None
    #: the single seed's floor intervals (None with several seeds: each has its own)
    floor_const_ci: tuple[float, float] | None = None
    floor_affine_ci: tuple[float, float] | None = None
    #: every seed against its own floors (pinnbench.judge.verdict.count_seeds)
    seed_counts: verdict.SeedCounts | None = None
    #: the seeds' trivial fits, [min, max] over seeds (a seed's fits are its own instance's)
    floor_const_range: tuple[float, float] | None = None
    floor_affine_range: tuple[float, float] | None = None
    #: peak memory above the baseline after set-up, and that baseline (seeds that finished)
    mem_above: LogStats | None = None
    mem_baseline: LogStats | None = None
    #: CPU: the tensors' peak above the baseline (``tensor_peak_above_baseline_bytes``: the
    #: state built in training plus one step's own tensors; exact, where the resident-set peak
    #: above carries the heap's slack; seeds that finished)
    tensors_above: LogStats | None = None

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def standing(self) -> str | None:
        """Where the seeds stand, each against its own trivial fits, in words: the standing all
        seeds share (:func:`pinnbench.judge.verdict.standing`), else "k of n seeds below the constant
        fit, j of n below the affine fit"."""
        c = self.seed_counts
        if self.rel_l2 is None or c is None or not c.verdicts:
            return None
        return f"{c.uniform} ({c.n} of {c.n} seeds)" if c.uniform else c.text

    @property
    def verdict(self) -> str:
        """One phrase for the table: the standing, or why there is none to give."""
        if self.rel_l2 is None:
            return ""
        if not self.trained:
            steps = "" if self.steps_done is None else f"{self.steps_done:.0f} steps, "
            return f"untrained ({steps}< {verdict.MIN_TRAINED_STEPS})"
        return self.standing or ""

    @property
    def may_be_best(self) -> bool:
        """A value of this family may be highlighted as the best of its column: no seed
        diverged, the seeds that finished trained, and every seed that ran is below its own
        lower trivial fit."""
        return (self.rel_l2 is not None and self.trained
                and "diverged" not in self.status_counts
                and self.seed_counts is not None and self.seed_counts.all_below)

    @property
    def failures(self) -> dict[str, int]:
        return {s: n for s, n in self.status_counts.items() if s != "ok"}

    @property
    def status_text(self) -> str:
        """``ok`` when every seed finished, else e.g. ``ok 2 · timeout 1`` or ``oom 3``."""
        if set(self.status_counts) == {"ok"}:
            return "ok"
        return " · ".join(f"{s} {n}" for s, n in self.status_counts.items())


def _status_order(s: str) -> int:
    order = ("ok",) + FAILURE_STATUSES
    return order.index(s) if s in order else len(order)


def families(df: pd.DataFrame) -> list[Family]:
    """Aggregate the prepared rows over seeds, one Family per (problem, series, d)."""
    out: list[Family] = []
    for (problem, series, dim), g in df.groupby(list(FAMILY_KEYS), sort=True):
        ok = g[g["status"] == "ok"]
        counts: dict[str, int] = {}
        for s in sorted(g["status"], key=_status_order):
            counts[s] = counts.get(s, 0) + 1
        kinds = set(ok["mem_kind"]) or set(g["mem_kind"])
        n_params = pd.to_numeric(g["n_params"], errors="coerce").dropna()
        out.append(Family(
            problem=problem, series=series, label=g["label"].iloc[0], solver=g["solver"].iloc[0],
            solver_name=g["solver_name"].iloc[0], dim=int(dim),
            seeds=sorted(int(s) for s in g["seed"]), status_counts=counts,
            rel_l2=LogStats.of(ok["final_rel_l2"]),
            time_per_step=LogStats.of(ok["time_per_step_s"]),
            data_time=LogStats.of(ok["data_time_per_step_s"]),
            solver_time=LogStats.of(ok["solver_time_per_step_s"]),
            mem=LogStats.of(ok["mem_bytes"]),
            mem_kind="gpu" if "gpu" in kinds else "cpu",
            n_params=float(n_params.median()) if len(n_params) else None,
            floor_const=_finite_median(g["floor_const_rel_l2"]),
            floor_affine=_finite_median(g["floor_affine_rel_l2"]),
            trained=bool(ok["trained"].all()) if len(ok) else False,
            mem_above=LogStats.of(ok["mem_above_bytes"]),
            mem_baseline=LogStats.of(ok["mem_baseline_bytes"]),
            tensors_above=LogStats.of(ok["tensor_peak_above_baseline_bytes"])
            if "tensor_peak_above_baseline_bytes" in ok else None,
            steps_done=_finite_median(ok["steps_done"]),
            rel_l2_ci=_envelope(ok, "final_rel_l2"),
            floor_const_ci=_envelope(g, "floor_const_rel_l2") if len(g) == 1 else None,
            floor_affine_ci=_envelope(g, "floor_affine_rel_l2") if len(g) == 1 else None,
            seed_counts=verdict.count_seeds(g.to_dict("records")),
            floor_const_range=_finite_range(g["floor_const_rel_l2"]),
            floor_affine_range=_finite_range(g["floor_affine_rel_l2"]),
        ))
    return out


def _envelope(rows: pd.DataFrame, col: str) -> tuple[float, float] | None:
    """[min lo, max hi] of the rows' 95 % intervals of ``col`` (rows with both ends)."""
    lo = pd.to_numeric(rows[f"{col}_lo"], errors="coerce")
    hi = pd.to_numeric(rows[f"{col}_hi"], errors="coerce")
    both = np.isfinite(lo) & np.isfinite(hi)
    return (float(lo[both].min()), float(hi[both].max())) if both.any() else None


def _finite_range(values: pd.Series) -> tuple[float, float] | None:
    v = pd.to_numeric(values, errors="coerce")
    v = v[np.isfinite(v)]
    return (float(v.min()), float(v.max())) if len(v) else None


def _finite_median(values: pd.Series) -> float | None:
    v = pd.to_numeric(values, errors="coerce")
    v = v[np.isfinite(v)]
    return float(v.median()) if len(v) else None


@dataclass(frozen=True)
class CurveStats:
    """A seed-aggregated convergence curve: per logged step, log-space median and IQR."""

    step: np.ndarray
    time_s: np.ndarray  # median wall time at that step
    median: np.ndarray
    q25: np.ndarray
    q75: np.ndarray
    n: np.ndarray


#: statuses whose cells trained, so their curves are real (a timeout still logged its curve)
CURVE_STATUSES = ("ok", "timeout", "diverged")


def curve_stats(rows: pd.DataFrame, metric: str = "rel_l2") -> CurveStats | None:
    """Aggregate the ``curve`` lists of one family's seeds step by step."""
    points: dict[int, tuple[list[float], list[float]]] = {}
    for curve in rows["curve"]:
        if not isinstance(curve, list):
            continue
        for p in curve:
            if not isinstance(p, dict) or "step" not in p:
                continue
            try:
                step = int(p["step"])
                value = float(p.get(metric, math.nan))
                t = float(p.get("time_s", math.nan))
            except (TypeError, ValueError):
                continue
            vals, times = points.setdefault(step, ([], []))
            if math.isfinite(value) and value > 0:
                vals.append(value)
            if math.isfinite(t):
                times.append(t)
    steps = sorted(s for s, (v, _) in points.items() if v)
    if not steps:
        return None
    med, q25, q75, n, tt = [], [], [], [], []
    for s in steps:
        vals, times = points[s]
        st = LogStats.of(vals)
        med.append(st.median)
        q25.append(st.q25)
        q75.append(st.q75)
        n.append(st.n)
        tt.append(float(np.median(times)) if times else math.nan)
    return CurveStats(np.array(steps), np.array(tt), np.array(med), np.array(q25),
                      np.array(q75), np.array(n))
