"""The report's ablation section (issue 11): a solver's claims checked against the run's data,
the final error of every variant beside the floors, error against wall time, and the
gradient-estimate variance against the rank.

The harness names no solver: a solver family with a page declares it
(:meth:`pinnbench.solver.Solver.ablation_page`, an :class:`pinnbench.ablation_page.AblationPage`:
the family, the reference families shown beside it, the parameters of the rank figure) and its
claims (:meth:`pinnbench.solver.Solver.claims`, kinds of :mod:`pinnbench.ablation_page`); this
module judges each kind by the rules below.

Everything is computed from the rows of the run (after :func:`pinnbench.report.aggregate.prepare`):
the ``diagnostics`` column (:mod:`pinnbench.cells.diagnostics`), the peaks, the time per step and the
final errors. A claim the run has no data for is marked "not measurable here", with what is
missing.

**The base spec.** ``pinnbench ablate NAME`` runs a base spec and variants that each change one
parameter. The base is recovered from the data: the spec of the page's family from which the
most other specs of the family differ in exactly one parameter. Each variant is named by that
parameter (``crns=false``); a reference family's specs are named by the parameters the page lists
for it (``zo[crns=false]``).

**Tuned variants** (:func:`design_view`). When each variant ran at its own tuned step size
(``pinnbench run --tuned``, scripts/ablation_protocol.py: every row a spec with lr left open),
two specs differ in their factor *and* in the tuned lr. A cell of a tuned study is therefore read
by its design: the spec its study fixed (the study's name begins with it,
:func:`pinnbench.tuning.study.study_name`), the tuned values kept aside (``tuned_params``, shown
beside the factor); the base and the factors are found among the designs.

**Aggregates over seeds.** Errors: the median (in log space, as the rest of the report,
:class:`pinnbench.report.aggregate.LogStats`) and the range [min, max] of the ok cells; their
95 % interval over the test points is the envelope [min lo, max hi] of the cells' own intervals.
Floors are never aggregated against an error: "below constant / affine" counts the seeds whose
error is below their *own* fit (:func:`pinnbench.judge.verdict.judge_seed`). Variance ratios
(the diagnostics' ``gradient_variance``, at the final theta): the median over seeds.

**Paired differences at equal steps** (:func:`paired_differences`). A variant is compared with
the base seed by seed (same problem, d and seed: the same problem instance and test set), at the
largest evaluated step both cells reached (:func:`pinnbench.report.protocol.common_step` of the
pair), as d_i = err_variant - err_base there. The table gives the mean of the d_i, the number of
pairs in which the variant is lower, and a paired bootstrap 95 % interval of the mean: the
pairs are resampled with replacement :data:`BOOTSTRAP_RESAMPLES` times from
``numpy.random.default_rng(BOOTSTRAP_SEED)`` and the 2.5 and 97.5 percentiles of the resampled
means are taken (Efron & Tibshirani 1993, ch. 13, percentile interval); fewer than two pairs
give no interval.

**Claims** (docs/protocol.md). Each would read differently had the solver learned nothing:
the scale claim (:class:`~pinnbench.ablation_page.TrainsAt`) needs a cell at the claimed d below
its own constant fit; "faster than" a comparator is time to target (a solver that never reaches
its fit is never faster), measurable only when both contestants ran a configuration chosen by
``pinnbench tune`` (:func:`tuned_study`); "leaner" compares the training peak
(:func:`training_peak`) and counts only where the base is below its own constant fit in most
seeds. The variance and cost claims (held-basis variance against r, gradient accuracy, per-step
cost, the quotient's variance against eps) are properties of the estimator and its cost,
measured from the diagnostics and step times, not from training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pinnbench.judge import verdict
from pinnbench.ablation_page import (AblationPage, BeatsFullReference, CheaperPerStep, FasterThan,
                                     HeldVarianceSlope, LeanerThan, TrainsAt, VarianceFlatInEps)
from pinnbench.report.aggregate import LogStats, nondefault_spec

#: the zeroth-order families the section covers
#: verdicts of a claim
REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE = "reproduced", "not reproduced", "not measurable here"
#: a claim the data do not earn (the solver learned nothing where the claim is about training)
NOT_SHOWN = "not shown (trained nothing)"
#: paired bootstrap of the ablation's differences (module docstring)
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
RATIO_KEYS = ("ratio_step", "ratio_window", "ratio_held", "cos_held")


def pages(df: pd.DataFrame) -> list[AblationPage]:
    """The ablation pages of the solver families in ``df`` that declare one
    (:meth:`pinnbench.solver.Solver.ablation_page`), by family name; a family whose solver is not
    installed here (a plugin not imported) has none."""
    from pinnbench.solver import SOLVERS

    out = []
    for name in sorted({n for n in df["solver_name"] if isinstance(n, str)}):
        try:
            cls = SOLVERS.get(name)
        except ValueError:
            continue
        page = cls.ablation_page()
        if page is not None:
            out.append(page)
    return out


def page_of(df: pd.DataFrame, page: AblationPage | None = None) -> AblationPage | None:
    """``page``, or the first page of ``df`` (:func:`pages`); None when no family has one."""
    return page if page is not None else next(iter(pages(df)), None)


def page_claims(page: AblationPage) -> tuple:
    """The claim definitions of ``page``'s family (:meth:`pinnbench.solver.Solver.claims`)."""
    from pinnbench.solver import SOLVERS

    return tuple(SOLVERS.get(page.family).claims())


def design_view(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every tuned cell's ``solver`` / ``solver_params`` replaced by its design: the
    parameters its study fixed (module docstring); the values the study chose go to the column
    ``tuned_params`` ({} for an untuned cell). Idempotent; untuned rows are unchanged."""
    if "tuned_params" in df.columns:
        return df
    from pinnbench.solver import format_spec, parse_spec
    from pinnbench.tuning.study import tuned_spec

    df = df.copy()
    solvers, params, tuned = [], [], []
    for row in df.to_dict("records"):
        study, p = tuned_study(row), row.get("solver_params")
        if study is None or not isinstance(p, dict):
            solvers.append(row.get("solver"))
            params.append(p)
            tuned.append({})
            continue
        fixed = set(parse_spec(tuned_spec(study))[1])
        solvers.append(format_spec(row["solver_name"], {k: v for k, v in p.items()
                                                        if k in fixed}))
        params.append({k: v for k, v in p.items() if k in fixed})
        # a cell whose study chose nothing was stored unrun: its values are defaults, not a choice
        prov = row.get("provenance") if isinstance(row.get("provenance"), dict) else {}
        tuned.append({} if prov.get("untuned") else {k: v for k, v in p.items() if k not in fixed})
    df["solver"], df["solver_params"], df["tuned_params"] = solvers, params, tuned
    return df


def page_rows(df: pd.DataFrame, page: AblationPage | None) -> pd.DataFrame:
    """The rows of ``page``'s families (none without a page)."""
    return df[df["solver_name"].isin(page.names if page is not None else ())]


def _diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def base_spec(df: pd.DataFrame, family: str) -> str | None:
    """The spec of ``family`` the others of it vary one parameter at a time; the only one when
    there is one; None without the family (or when no two specs differ in exactly one
    parameter)."""
    specs = {s: p for s, p, n in zip(df["solver"], df["solver_params"], df["solver_name"])
             if isinstance(s, str) and n == family}
    if len(specs) < 2:
        return next(iter(specs), None)
    count = {s: sum(len(_diff(p, q)) == 1 for t, q in specs.items() if t != s)
             for s, p in specs.items()}
    best = max(count.values())
    return min(s for s, c in count.items() if c == best) if best > 0 else None


def _base_params(rows: pd.DataFrame, base: str | None) -> dict | None:
    return None if base is None else rows.loc[rows["solver"] == base, "solver_params"].iloc[0]


def default_factor(page: AblationPage) -> str:
    """The name of the base in the variant table (``sdze default``)."""
    return f"{page.family} default"


def factor_name(page: AblationPage, name: str, params: dict, base_params: dict | None) -> str:
    """How a spec differs from the base: '<family> default', 'crns=false', a reference family's
    spec by its listed parameters ('zo[crns=true]'), or the list of differing parameters."""
    listed = dict(page.references).get(name)
    if listed is not None:
        return f"{name}[{','.join(f'{k}={_fmt(params.get(k))}' for k in listed)}]"
    if base_params is None:
        return page.family
    diff = _diff(params, base_params)
    if not diff:
        return default_factor(page)
    return ",".join(f"{k}={_fmt(params.get(k))}" for k in diff)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:g}" if isinstance(v, float) else str(v)


def final_ratios(diag: Any) -> dict[str, float] | None:
    """The variance ratios at the final theta from a cell's diagnostics, or None."""
    try:
        final = diag["gradient_variance"]["final"]
        return {k: float(final[k]) for k in (*RATIO_KEYS, "n_params")}
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class Variant:
    problem: str
    dim: int
    solver: str
    factor: str
    n_seeds: int
    n_ok: int
    err: LogStats | None
    err_min: float | None
    err_max: float | None
    ci_lo: float | None
    ci_hi: float | None
    below_const: int
    below_affine: int
    time_per_step: LogStats | None
    steps_done: float | None
    ratios: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    #: seed-paired difference to the base at equal steps (None for the base itself)
    paired: "Paired | None" = None
    #: the solver family of the spec (the page's own, or a reference family)
    family: str = ""
    #: the values a tuned study chose for these cells (lr, ...; {} when untuned)
    tuned: dict = field(default_factory=dict)
    #: the median over seeds of the lowest evaluated error along each cell's curve and of the
    #: step where it was (a diagnostic of the curve's shape, chosen on the test set: never a
    #: result; a final error far above it says the error rose after that step)
    lowest: float | None = None
    lowest_step: float | None = None
    #: the factors of the other rows whose cells gave this row's numbers, seed by seed (one
    #: computation under two names: e.g. rank = width, where no matrix gets a subspace, is
    #: subspace=false), in table order; "" when none did
    same_as: str = ""


@dataclass(frozen=True)
class Paired:
    """err_variant - err_base, seed by seed at the step both reached (module docstring)."""

    diffs: tuple[float, ...]
    steps: tuple[int, ...]
    mean: float
    ci: tuple[float, float] | None

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def lower(self) -> int:
        return sum(d < 0 for d in self.diffs)


def paired_bootstrap(diffs: list[float], resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """The percentile 95 % interval of the mean of ``diffs`` over ``resamples`` resamples of the
    pairs with replacement (numpy Generator seeded with ``seed``); None for fewer than 2."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def pair(base_row: dict, variant_row: dict) -> tuple[float, int] | None:
    """(err_variant - err_base, step) at the largest step both cells' curves reached; None
    unless both finished with a finite error there."""
    from pinnbench.report.protocol import common_step, point_at_step

    if base_row.get("status") != "ok" or variant_row.get("status") != "ok":
        return None
    step = common_step([base_row, variant_row])
    if step is None:
        return None
    a, b = point_at_step(base_row, step), point_at_step(variant_row, step)
    ea, eb = (None if p is None else p.get("rel_l2") for p in (a, b))
    if ea is None or eb is None or not (np.isfinite(ea) and np.isfinite(eb)):
        return None
    return float(eb) - float(ea), step


def paired_differences(base: pd.DataFrame, variant: pd.DataFrame) -> Paired | None:
    """The seed-paired differences of ``variant``'s cells to ``base``'s (one problem and d)."""
    by_seed = {int(r["seed"]): r for r in base.to_dict("records")}
    diffs, steps = [], []
    for r in variant.to_dict("records"):
        b = by_seed.get(int(r["seed"]))
        got = None if b is None else pair(b, r)
        if got is not None:
            diffs.append(got[0])
            steps.append(got[1])
    if not diffs:
        return None
    return Paired(tuple(diffs), tuple(steps), float(np.mean(diffs)), paired_bootstrap(diffs))


def _median(values) -> float | None:
    v = [float(x) for x in values if x is not None and np.isfinite(x)]
    return float(np.median(v)) if v else None


def _finite(values) -> list[float]:
    return [float(x) for x in values if x is not None and np.isfinite(x)]


def variants(df: pd.DataFrame, page: AblationPage | None = None) -> list[Variant]:
    """One :class:`Variant` per (problem, d, spec of the page's families), the base first, then
    the family's variants in spec order, then the reference families'."""
    df = design_view(df)
    page = page_of(df, page)
    zo = page_rows(df, page)
    if zo.empty:
        return []
    base = base_spec(zo, page.family)
    base_params = _base_params(zo, base)
    out, numbers = [], {}
    groups = dict(list(zo.groupby(["problem", "dim", "solver"], sort=True)))
    for (problem, dim, solver), g in groups.items():
        ok = g[g["status"] == "ok"]
        numbers[(problem, int(dim), solver)] = _numbers(g)
        err = _finite(ok["final_rel_l2"])
        seeds = [verdict.judge_seed(r) for r in ok.to_dict("records")
                 if r["final_rel_l2"] is not None and np.isfinite(r["final_rel_l2"])]
        base_rows = zo[(zo["problem"] == problem) & (zo["dim"] == dim) & (zo["solver"] == base)]
        ratios = [final_ratios(d) for d in ok["diagnostics"]]
        ratios = [r for r in ratios if r]
        name, params = g["solver_name"].iloc[0], g["solver_params"].iloc[0]
        pairings = [(factor_name(page, name, params, base_params),
                     None if solver == base or base_rows.empty else base_rows)]
        if name == page.family and base_params is not None and len(
                _diff(params, base_params)) > 1:
            near = _one_factor_from(params, base_params, {
                s: h for (p, d, s), h in groups.items()
                if (p, d) == (problem, dim) and s != solver and h["solver_name"].iloc[0] == name})
            pairings = [(f"{k}={_fmt(params.get(k))} (against "
                         f"{factor_name(page, name, ref_params, base_params)})", rows)
                        for k, ref_params, rows in near] or pairings
        for factor, ref_rows in pairings:
            out.append(Variant(
                problem=problem, dim=int(dim), solver=solver,
                factor=factor, n_seeds=len(g), n_ok=len(ok),
                err=LogStats.of(err), err_min=min(err) if err else None,
                err_max=max(err) if err else None,
                lowest=_median(ok["best_rel_l2"]), lowest_step=_median(ok["best_step"]),
                ci_lo=min(_finite(ok["final_rel_l2_lo"]), default=None),
                ci_hi=max(_finite(ok["final_rel_l2_hi"]), default=None),
                below_const=sum(v.constant == "below" for v in seeds),
                below_affine=sum(v.affine == "below" for v in seeds),
                time_per_step=LogStats.of(ok["time_per_step_s"]),
                steps_done=_median(ok["steps_done"]),
                ratios={k: float(np.median([r[k] for r in ratios])) for k in RATIO_KEYS}
                if ratios else {},
                statuses=g["status"].value_counts().to_dict(),
                paired=None if ref_rows is None else paired_differences(ref_rows, g),
                family=name, tuned=_tuned_of(g)))
    default = default_factor(page)
    out.sort(key=lambda v: (v.problem, v.dim, 0 if v.factor == default
                            else 1 if v.family == page.family else 2, v.factor))
    for v in out:
        mine = numbers[(v.problem, v.dim, v.solver)]
        v.same_as = ", ".join(u.factor for u in out if u.solver != v.solver and (
            u.problem, u.dim) == (v.problem, v.dim) and _one_computation(
            mine, numbers[(u.problem, u.dim, u.solver)]))
    return out


def _one_computation(a: dict, b: dict) -> bool:
    """Two rows' numbers (:func:`_numbers`) are one computation when they share a seed and agree
    exactly on every seed both ran (a row may have run more seeds than its twin)."""
    shared = a.keys() & b.keys()
    return bool(shared) and all(a[s] == b[s] for s in shared)


def _one_factor_from(params: dict, base_params: dict, others: dict[str, pd.DataFrame]):
    """For a spec that differs from the base in several parameters (the re-run's
    crns=false with loss=unbiased): every other row it differs from in exactly one parameter,
    that row being one parameter closer to the base, as (that parameter, the row's parameters,
    its cells), by parameter. Compared with the base it would move two factors at once (a void
    comparison); compared with such a row it moves one."""
    n = len(_diff(params, base_params))
    out = []
    for h in others.values():
        p = h["solver_params"].iloc[0]
        d = _diff(params, p)
        if len(d) == 1 and len(_diff(p, base_params)) == n - 1:
            out.append((d[0], p, h))
    return sorted(out, key=lambda t: t[0])


def _numbers(g: pd.DataFrame) -> dict[int, tuple]:
    """What a row's cells computed, seed by seed: seed -> (status, final error, final loss), the
    floats as their repr (compared exactly)."""
    return {int(r["seed"]): (str(r["status"]), repr(r["final_rel_l2"]), repr(r["final_loss"]))
            for r in g.to_dict("records")}


# ------------------------------------------------------------------------------- the claims
@dataclass
class Claim:
    claim: str
    verdict: str
    evidence: str
    source: str  # the figure or the columns behind it


def _tuned_of(g: pd.DataFrame) -> dict:
    """The tuned values of a group's cells: each parameter's value when all cells agree, else
    its values in order (one study per (spec, problem, d) gives one value)."""
    out: dict[str, Any] = {}
    for t in g["tuned_params"] if "tuned_params" in g.columns else ():
        for k, v in (t or {}).items():
            out.setdefault(k, [])
            if v not in out[k]:
                out[k].append(v)
    return {k: v[0] if len(v) == 1 else v for k, v in out.items()}


def _f2(v: float) -> str:
    return f"{round(v, 2) + 0.0:.2f}"  # + 0.0: never "-0.00"


def _slope(eps: list[float], var: list[float]) -> float | None:
    if len(eps) < 2 or min(var) <= 0:
        return None
    return float(np.polyfit(np.log10(eps), np.log10(var), 1)[0])


def crns_evidence(df: pd.DataFrame, page: AblationPage | None = None,
                  points: int = VarianceFlatInEps.points) -> dict[str, Any] | None:
    """Per cell of the page with quotient variances for both CRNS settings: the log-log slopes
    against eps over the ``points`` smallest eps both have (the claim is about eps -> 0; at large
    eps the loss leaves its linear regime along z and both variances rise), and the off/on ratio
    at the smallest; medians over those cells."""
    from pinnbench.report.figures import variance_points

    pts = variance_points(page_rows(df[df["status"] == "ok"], page_of(df, page)))
    slopes_on, slopes_off, ratios, eps_min, eps_max = [], [], [], None, None
    for _, g in pts.groupby(["problem", "series", "dim", "seed"], sort=True):
        small = sorted(set(g.loc[g["crns"], "eps"]) & set(g.loc[~g["crns"], "eps"]))
        small = small[:points]
        g = g[g["eps"].isin(small)]
        on, off = g[g["crns"]].sort_values("eps"), g[~g["crns"]].sort_values("eps")
        s_on = _slope(list(on["eps"]), list(on["variance"]))
        s_off = _slope(list(off["eps"]), list(off["variance"]))
        if s_on is None or s_off is None:
            continue
        slopes_on.append(s_on)
        slopes_off.append(s_off)
        eps_max = max(small) if eps_max is None else max(eps_max, max(small))
        e = float(min(small))
        if np.isfinite(e):
            eps_min = e if eps_min is None else min(eps_min, e)
            ratios.append(float(off.loc[off["eps"] == e, "variance"].iloc[0]
                                / on.loc[on["eps"] == e, "variance"].iloc[0]))
    if not slopes_on:
        return None
    return {"slope_on": float(np.median(slopes_on)), "slope_off": float(np.median(slopes_off)),
            "ratio": float(np.median(ratios)) if ratios else None, "eps": eps_min,
            "eps_max": eps_max, "cells": len(slopes_on)}


def _claim_crns(df: pd.DataFrame, page: AblationPage, base: str | None,
                c: VarianceFlatInEps) -> Claim:
    ev = crns_evidence(df, page, c.points)
    if ev is None:
        return Claim(c.claim, NOT_MEASURABLE, "no cell recorded the quotient variance with CRNS "
                     "on and off (run with --diagnostics)", "diagnostics.zo_quotient_variance")
    ok = ev["slope_off"] <= c.naive_max and abs(ev["slope_on"]) <= c.flat
    text = (f"log-log slope of the quotient variance against ε for ε ≤ {ev['eps_max']:g}: "
            f"{_f2(ev['slope_off'])} without CRNS, {_f2(ev['slope_on'])} with (median over "
            f"{ev['cells']} cells; −2 is 1/ε², 0 is flat)")
    if ev["ratio"] is not None:
        text += f"; at ε = {ev['eps']:g} CRNS lowers it {ev['ratio']:.3g}×"
    return Claim(c.claim, REPRODUCED if ok else NOT_REPRODUCED, text,
                 "figure “variance of the quotient against ε”")


def subspace_evidence(df: pd.DataFrame, page: AblationPage,
                      full: tuple[str, ...]) -> list[dict[str, Any]]:
    """Per (problem, d): the base spec's ratios against those of the first factor of ``full``
    present there (the full-Gaussian reference), medians over seeds at the final theta."""
    vs = variants(df, page)
    out = []
    keys = sorted({(v.problem, v.dim) for v in vs})
    for problem, dim in keys:
        here = {v.factor: v for v in vs if (v.problem, v.dim) == (problem, dim)}
        base = here.get(default_factor(page))
        ref = next((here[f] for f in full if f in here), None)
        if base is None or ref is None or not base.ratios or not ref.ratios:
            continue
        out.append({"problem": problem, "dim": dim, "base": base.ratios,
                    "full": ref.ratios, "full_factor": ref.factor,
                    "solver": base.solver})
    return out


def held_slopes(df: pd.DataFrame, page: AblationPage | None = None) -> list[dict[str, Any]]:
    """Per (problem, d) with at least two ranks: the log-log slope of the held-basis variance
    (``ratio_held``, median over seeds per rank) against the rank r, and those medians."""
    pts = rank_points(df, page)
    out: list[dict[str, Any]] = []
    if pts.empty:
        return out
    for (problem, dim), g in pts[~pts["full"].astype(bool)].groupby(["problem", "dim"], sort=True):
        med = g.groupby("rank")["ratio_held"].median()
        med = med[np.isfinite(med) & (med > 0)]
        if len(med) < 2:
            continue
        slope = _slope([float(r) for r in med.index], [float(v) for v in med.values])
        out.append({"problem": problem, "dim": int(dim), "slope": slope,
                    "ranks": [int(r) for r in med.index], "held": [float(v) for v in med]})
    return out


def _claim_held(df: pd.DataFrame, page: AblationPage, base: str | None,
                c: HeldVarianceSlope) -> Claim:
    ev = [e for e in held_slopes(df, page) if e["slope"] is not None]
    if not ev:
        return Claim(c.claim, NOT_MEASURABLE, f"needs ratio_held of {page.family} cells at two "
                     "or more ranks (pinnbench ablate with --diagnostics)",
                     "diagnostics.gradient_variance")
    ok = all(e["slope"] <= c.max_slope for e in ev)
    parts = [f"d = {e['dim']:,}: ratio_held " + ", ".join(
        f"{h:.3g} at r = {r}" for r, h in zip(e["ranks"], e["held"]))
        + f"; fitted log-log slope {_f2(e['slope'])}" for e in ev]
    return Claim(c.claim, REPRODUCED if ok else NOT_REPRODUCED,
                 "; ".join(parts) + f" (1 is linear; O(r) needs a slope ≤ {c.max_slope:g}; "
                 "medians over seeds)", "figure “gradient-estimate variance against the rank”")


def _claim_accuracy(df: pd.DataFrame, page: AblationPage, base: str | None,
                    c: BeatsFullReference) -> Claim:
    ev = subspace_evidence(df, page, c.full)
    if not ev:
        return Claim(c.claim, NOT_MEASURABLE, f"no base {page.family} cell and full-Gaussian "
                     "cell both recorded the gradient-estimate variance (run with --diagnostics)",
                     "diagnostics.gradient_variance")
    parts, ok = [], True
    for e in ev:
        b, f = e["base"], e["full"]
        ok &= b["ratio_window"] < f["ratio_window"]
        parts.append(f"d = {e['dim']:,}: error of the window's mean estimate "
                     f"E‖ḡ−G‖²/‖G‖² = {b['ratio_window']:.3g} ({default_factor(page)}) vs "
                     f"{f['ratio_window']:.3g} ({e['full_factor']}, full Gaussian); cosine of "
                     f"the held basis's mean with G {b['cos_held']:.2f}")
    return Claim(c.claim, REPRODUCED if ok else NOT_REPRODUCED,
                 "; ".join(parts) + " (reproduced needs the subspace's averaged estimate closer "
                 "to G than the full Gaussian's at every d; per step both are ≈ P/q, since "
                 "E[zzᵀ] = I)", "diagnostics.gradient_variance: ratio_window, cos_held")


def _claim_cost(df: pd.DataFrame, page: AblationPage, base: str | None,
                c: CheaperPerStep) -> Claim:
    lo, hi = c.dims
    default = default_factor(page)
    vs = [v for v in variants(df, page) if lo <= v.dim <= hi and v.time_per_step is not None]
    pairs = []
    for problem, dim in sorted({(v.problem, v.dim) for v in vs}):
        here = {v.factor: v for v in vs if (v.problem, v.dim) == (problem, dim)}
        if default in here and c.than in here:
            pairs.append((problem, dim, here[default].time_per_step.median,
                          here[c.than].time_per_step.median))
    if base is None or not pairs:
        return Claim(c.claim, NOT_MEASURABLE, f"needs the {default} and {c.than} at "
                     f"d = {lo:.0e} to {hi:.0e}", "time_per_step_s")
    ok = all(a < b for *_, a, b in pairs)
    text = "; ".join(f"{p} d = {d:,}: {a:.3g} s vs {b:.3g} s per step ({b / a:.3g}×)"
                     for p, d, a, b in pairs)
    return Claim(c.claim, REPRODUCED if ok else NOT_REPRODUCED,
                 f"{default} vs {c.than} (median time per step): {text}", "time_per_step_s")


def _learned(rows: pd.DataFrame) -> tuple[int, int]:
    """(seeds below their own constant fit, seeds) of a group of cells."""
    c = verdict.count_seeds(rows.to_dict("records"))
    return c.below_const, c.n


def _claim_scale(df: pd.DataFrame, page: AblationPage, base: str | None, c: TrainsAt) -> Claim:
    family = page.family
    rows = df[(df["solver_name"] == family) & (df["dim"] >= c.dim)
              & df["device"].astype(str).str.startswith("cuda")]
    if rows.empty:
        return Claim(c.claim, NOT_MEASURABLE, f"no {family} cell at d ≥ {c.dim:.0e} on a GPU",
                     "status, steps_done")
    counts = ", ".join(f"{k}: {v}" for k, v in rows["status"].value_counts().items())
    judged = [r for r in rows.to_dict("records") if verdict.judged(r)]
    seeds = [verdict.judge_seed(r) for r in judged]
    below = [r for r, v in zip(judged, seeds) if v.constant == "below"]
    detail = "; ".join(f"d = {int(r['dim']):,} seed {v.seed}: {v.rel_l2:.3g} vs its constant "
                       f"fit {_g(v.floor_const)} after {int(r['steps_done'])} steps"
                       for r, v in zip(judged, seeds))
    text = (f"{family} cells at d ≥ {c.dim:.0e}: {counts}; {len(below)} of {len(rows)} below "
            f"their own constant fit" + (f" ({detail})" if detail else
                                         f" (none ran {verdict.MIN_TRAINED_STEPS} steps to a "
                                         "finite error)"))
    if not below:
        return Claim(c.claim, NOT_SHOWN, text, "status, steps_done, final_rel_l2, floors")
    peak = LogStats.of(pd.DataFrame(below)["mem_bytes"])
    return Claim(c.claim, REPRODUCED, text + f"; peak {_g(peak.median / 2**30 if peak else None)} "
                 "GiB", "status, steps_done, final_rel_l2, floors, peak memory")


def tuned_study(row: dict[str, Any]) -> str | None:
    """The ``pinnbench tune`` study whose chosen configuration the cell ran (``pinnbench run
    --tuned``; docs/tuning.md): the row's ``tuned_study`` or its provenance's; None when the
    cell was not tuned (read as untuned)."""
    for where in (row, row.get("provenance") if isinstance(row.get("provenance"), dict) else {}):
        v = where.get("tuned_study")
        if isinstance(v, str) and v.strip():
            return v
    return None


def _contests(df: pd.DataFrame, page: AblationPage, base: str | None, comparator: str,
              claim: str, source: str):
    """(the contests, None): (problem, dim, device, base cells, ``comparator`` cells) wherever
    both ran; or ([], the claim marked not measurable) when they ran together nowhere."""
    out = []
    if base is not None:
        sd, other = df[df["solver"] == base], df[df["solver_name"] == comparator]
        keys = ["problem", "dim", "device"]
        common = sorted(set(zip(*(sd[k] for k in keys))) & set(zip(*(other[k] for k in keys))))
        for problem, dim, device in common:
            pick = (df["problem"] == problem) & (df["dim"] == dim) & (df["device"] == device)
            out.append((problem, int(dim), device, sd[pick[sd.index]], other[pick[other.index]]))
    if out:
        return out, None
    return [], Claim(claim, NOT_MEASURABLE, f"no {comparator} cell at a (problem, d, device) "
                     f"where the {default_factor(page)} ran", source)


def _claim_faster(df: pd.DataFrame, page: AblationPage, base: str | None,
                  c: FasterThan) -> Claim:
    from pinnbench.judge.targets import summarise
    from pinnbench.report.protocol import fmt_time
    from pinnbench.tuning.study import study_protocol

    contests, missing = _contests(df, page, base, c.comparator, c.claim, "curve time_s, floors")
    if missing is not None:
        return missing
    parts, good, studies = [], True, set()
    for problem, dim, device, a, b in contests:
        ta = summarise(a.to_dict("records"), "constant")
        tb = summarise(b.to_dict("records"), "constant")
        if ta is None or tb is None:
            continue
        studies |= {tuned_study(r) for r in pd.concat([a, b]).to_dict("records")}
        good &= ta.median_time_s < tb.median_time_s
        parts.append(f"{problem} d = {dim:,} on {device}: {fmt_time(ta.median_time_s)} "
                     f"({ta.text}) vs {fmt_time(tb.median_time_s)} ({tb.text}) to the constant "
                     "fit")
    if not parts:
        return Claim(c.claim, NOT_MEASURABLE, "no constant fit to reach in these cells",
                     "floor_const_rel_l2")
    text = (f"median time to target, {default_factor(page)} vs {c.comparator}: "
            + "; ".join(parts))
    source = "curve time_s, floors, provenance tuned_study"
    if None in studies:
        return Claim(c.claim, f"{NOT_MEASURABLE} (contestants not tuned by the same protocol)",
                     text + "; some cells did not run a configuration chosen by pinnbench tune "
                     "(docs/tuning.md)", source)
    protocols = {study_protocol(s) for s in studies}
    if None in protocols:  # names of another form: shown as they are
        return Claim(c.claim, REPRODUCED if good else NOT_REPRODUCED,
                     text + f"; tuned: {', '.join(sorted(studies))}", source)
    if len({p for _, p in protocols}) > 1:
        return Claim(c.claim, f"{NOT_MEASURABLE} (contestants not tuned by the same protocol)",
                     text + "; tuned by different protocols: " + "; ".join(
                         f"{nondefault_spec(s)} ({p})" for s, p in sorted(protocols)), source)
    specs = ", ".join(sorted({nondefault_spec(s) for s, _ in protocols}))
    return Claim(c.claim, REPRODUCED if good else NOT_REPRODUCED,
                 text + f"; tuned by one protocol ({next(iter(protocols))[1]}): {specs}", source)


def training_peak(row: dict[str, Any]) -> float | None:
    """Peak memory of training beyond what set-up must hold, with the optimizer's state
    whenever it was allocated: on a GPU, ``peak_gpu_allocated_bytes - param_bytes`` (Adam
    allocates its moments at the first step, a solver may allocate its state at set-up: both
    count); on a CPU, the resident set's peak during training above the baseline after set-up
    (``peak_cpu_bytes - baseline_cpu_bytes``; state allocated at set-up sits in that baseline).
    Never the memory after set-up alone (before Adam's state exists)."""
    def num(k):
        v = row.get(k)
        return float(v) if v is not None and np.isfinite(v) else None

    gpu, params = num("peak_gpu_allocated_bytes"), num("param_bytes")
    if gpu is not None and params is not None:
        return gpu - params
    cpu, base = num("peak_cpu_bytes"), num("baseline_cpu_bytes")
    return cpu - base if cpu is not None and base is not None else None


def _claim_leaner(df: pd.DataFrame, page: AblationPage, base: str | None,
                  c: LeanerThan) -> Claim:
    contests, missing = _contests(df, page, base, c.comparator, c.claim, "training peak")
    if missing is not None:
        return missing
    parts, good, earned = [], True, 0
    for problem, dim, device, a, b in contests:
        k, n = _learned(a)  # every base cell of this (problem, d, device), before the ok filter
        a, b = a[a["status"] == "ok"], b[b["status"] == "ok"]
        pa = LogStats.of([training_peak(r) for r in a.to_dict("records")])
        pb = LogStats.of([training_peak(r) for r in b.to_dict("records")])
        if pa is None or pb is None:
            continue
        where = (f"{problem} d = {dim:,} on {device}: {pa.median / 2**20:.4g} MiB vs "
                 f"{pb.median / 2**20:.4g} MiB")
        if 2 * k <= n:
            parts.append(where + f" (not counted: {page.family} below its own constant fit in "
                                 f"{k} of {n} seeds, it learned nothing there)")
            continue
        earned += 1
        good &= pa.median < pb.median
        parts.append(where)
    if not parts:
        return Claim(c.claim, NOT_MEASURABLE, "no training peak for both", "training peak")
    text = ("training peak (beyond the parameters on a GPU, above the baseline on a CPU), "
            f"{default_factor(page)} vs {c.comparator}: " + "; ".join(parts))
    if not earned:
        return Claim(c.claim, NOT_SHOWN, text, "peak memory, param_bytes, floors")
    return Claim(c.claim, REPRODUCED if good else NOT_REPRODUCED, text,
                 "peak memory, param_bytes, floors")


#: the rule that judges each kind of claim (pinnbench.ablation_page)
JUDGES = {VarianceFlatInEps: _claim_crns, HeldVarianceSlope: _claim_held,
          BeatsFullReference: _claim_accuracy, CheaperPerStep: _claim_cost, TrainsAt: _claim_scale,
          FasterThan: _claim_faster, LeanerThan: _claim_leaner}


def claims(df: pd.DataFrame, page: AblationPage | None = None) -> list[Claim]:
    """The claims of ``page``'s family (:meth:`pinnbench.solver.Solver.claims`; default: the
    first page of ``df``), in the order it declares them, each judged from the run's data
    (docs/protocol.md); a kind this report does not know is a TypeError."""
    df = design_view(df)
    page = page_of(df, page)
    if page is None:
        return []
    base = base_spec(page_rows(df, page), page.family)
    out = []
    for c in page_claims(page):
        judge = JUDGES.get(type(c))
        if judge is None:
            raise TypeError(f"solver {page.family!r} declares a claim of unknown kind "
                            f"{type(c).__name__}; kinds: {', '.join(k.__name__ for k in JUDGES)}")
        out.append(judge(df, page, base, c))
    return out


# ------------------------------------------------------------------------------- for the page
def _sci(v: float | None) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.2e}"


def _g(v: float | None) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.3g}"


def variant_rows(vs: list[Variant]) -> list[dict[str, Any]]:
    """The variant table as the template shows it (text) with the raw values (data attributes)."""
    rows = []
    for v in vs:
        ok = v.err is not None
        rows.append({
            "problem": v.problem, "dim": v.dim, "factor": v.factor, "solver": v.solver,
            "family": v.family, "spec": nondefault_spec(v.solver) + "".join(
                f" · tuned {k}={_fmt(t)}" for k, t in sorted(v.tuned.items())),
            "err": _sci(v.err.median) if ok else "–",
            "err_value": repr(v.err.median) if ok else "",
            "range": f"[{_sci(v.err_min)}, {_sci(v.err_max)}]" if ok else "",
            "lowest": "–" if v.lowest is None else f"{_sci(v.lowest)} at step "
                      f"{v.lowest_step:.0f}",
            "ci": f"[{_sci(v.ci_lo)}, {_sci(v.ci_hi)}]" if v.ci_lo is not None else "–",
            "below_const": f"{v.below_const}/{v.n_ok}",
            "below_affine": f"{v.below_affine}/{v.n_ok}",
            **_paired_cells(v.paired),
            "time": _g(v.time_per_step.median) if v.time_per_step else "–",
            "steps": "–" if v.steps_done is None else f"{v.steps_done:.0f}",
            **{k: _g(v.ratios.get(k)) for k in RATIO_KEYS},
            "seeds": f"{v.n_ok}/{v.n_seeds} ok" + ("" if v.n_ok == v.n_seeds else " (" + ", ".join(
                f"{k}: {n}" for k, n in sorted(v.statuses.items()) if k != "ok") + ")"),
            "note": f"same numbers as {v.same_as}, seed by seed: one computation, not a second "
                    "comparison" if v.same_as else "",
            "learned": LEARNED_NOTHING if v.n_ok and not v.below_const else "",
        })
    return rows


#: a row none of whose finished seeds is below its own constant fit: its differences compare
#: runs that did not learn, whatever their sign
LEARNED_NOTHING = "learned nothing (no seed below its constant fit)"


def paired_verdict(p: Paired | None) -> str:
    """A seed-paired difference in words: lower or higher than its reference (the base, or the
    row it is against) only where its 95 % interval excludes 0; "within the noise" where it
    holds 0; no verdict from one pair."""
    if p is None:
        return ""
    if p.ci is None:
        return "one pair: no interval"
    if p.ci[1] < 0:
        return "lower"
    if p.ci[0] > 0:
        return "higher"
    return "within the noise (its interval holds 0)"


def _paired_cells(p: Paired | None) -> dict[str, str]:
    if p is None:
        return {"diff": "–", "diff_value": "", "diff_ci": "–", "pairs": "–", "pair_steps": "–",
                "paired_verdict": ""}
    lo, hi = min(p.steps), max(p.steps)
    return {"diff": f"{p.mean:+.2e}", "diff_value": repr(p.mean),
            "paired_verdict": paired_verdict(p),
            "diff_ci": "–" if p.ci is None else f"[{p.ci[0]:+.2e}, {p.ci[1]:+.2e}]",
            "pairs": f"{p.lower} of {p.n} lower", "pair_steps": f"{lo}" if lo == hi
            else f"{lo}–{hi}"}


def section(df: pd.DataFrame, page: AblationPage | None = None) -> dict[str, Any] | None:
    """The section's tables for the template (None when no cell of the run has a page)."""
    df = design_view(df)
    page = page_of(df, page)
    vs = variants(df, page)
    if not vs:
        return None
    rows = page_rows(df, page)
    windows = sorted({int(d["gradient_variance"]["window"]) for d in rows["diagnostics"]
                      if final_ratios(d) is not None})
    base = base_spec(rows, page.family)
    return {"title": page.title, "claims": claims(df, page), "variants": variant_rows(vs),
            "base": base or "–", "base_short": nondefault_spec(base or "–"),
            "window": ", ".join(map(str, windows)) or "W", "resamples": BOOTSTRAP_RESAMPLES,
            "bootstrap_seed": BOOTSTRAP_SEED}


# ------------------------------------------------------------------------------- the figures
def rank_points(df: pd.DataFrame, page: AblationPage | None = None) -> pd.DataFrame:
    """(problem, dim, seed, rank, ratio_step, ratio_held) of the ok cells of the page's family
    that differ from the base only in the page's ``rank`` parameter (the base included), and
    (..., rank = NaN) of the variant that differs in its ``full`` parameter (the full Gaussian
    reference)."""
    df = design_view(df)
    page = page_of(df, page)
    cols = ["problem", "dim", "seed", "rank", "full", "ratio_step", "ratio_held"]
    if page is None or page.rank is None:
        return pd.DataFrame(columns=cols)
    zo = page_rows(df[df["status"] == "ok"], page)
    base = base_spec(zo, page.family)
    if base is None:
        return pd.DataFrame(columns=cols)
    base_params = _base_params(zo, base)
    recs = []
    for r in zo[zo["solver_name"] == page.family].itertuples(index=False):
        diff = _diff(r.solver_params, base_params)
        ratios = final_ratios(r.diagnostics)
        if ratios is None or not (diff == [] or diff == [page.rank] or diff == [page.full]):
            continue
        full = diff == [page.full]
        recs.append((r.problem, int(r.dim), int(r.seed),
                     math.nan if full else float(r.solver_params[page.rank]), full,
                     ratios["ratio_step"], ratios["ratio_held"]))
    return pd.DataFrame(recs, columns=cols)


def variance_vs_rank(df: pd.DataFrame, page: AblationPage | None = None):
    """E||g_hat - G||^2 / ||G||^2 (solid) and the held-basis exploration ratio (dashed) against
    the rank, one colour per d, medians over seeds; dotted: the full Gaussian (the page's
    ``full`` parameter false)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.lines import Line2D

    from pinnbench.report.figures import PANEL_H, PANEL_W, _legend, _y_limits, theme

    page = page_of(df, page)
    pts = rank_points(df, page)
    ranked = pts[~pts["full"]]
    if ranked.empty or ranked["rank"].nunique() < 2:
        return None
    problems = sorted(ranked["problem"].unique())
    dims = sorted(pts["dim"].unique())
    colors = dict(zip(dims, sns.color_palette("viridis", max(len(dims), 2))))
    with plt.rc_context(theme()):
        fig, axes = plt.subplots(1, len(problems), figsize=(PANEL_W * 1.2 * len(problems),
                                                             PANEL_H), squeeze=False)
        for ax, problem in zip(axes[0], problems):
            pp = pts[pts["problem"] == problem]
            ys: list[float] = []
            for dim, g in pp.groupby("dim", sort=True):
                gr = g[~g["full"]]
                for key, ls in (("ratio_step", "-"), ("ratio_held", "--")):
                    agg = [(rk, LogStats.of(gg[key])) for rk, gg in gr.groupby("rank")]
                    agg = [(rk, s) for rk, s in agg if s is not None]
                    if agg:
                        ax.plot([rk for rk, _ in agg], [s.median for _, s in agg], ls=ls,
                                marker="o", ms=4, color=colors[dim])
                        ys += [s.median for _, s in agg]
                full = LogStats.of(g.loc[g["full"], "ratio_step"])
                if full is not None:
                    ax.axhline(full.median, ls=":", color=colors[dim], lw=1.2)
                    ys.append(full.median)
            ax.set_xscale("log", base=2)
            _y_limits(ax, ys, 0, log=True)
            ax.set_xlabel("rank r")
            ax.set_ylabel("variance ratio")
            ax.set_title(problem, fontsize=9)
        handles = [Line2D([], [], color=colors[d], marker="o", label=f"d = {d:,}") for d in dims]
        handles += [Line2D([], [], color="0.3", ls="-", label="E‖ĝ−G‖²/‖G‖² (one step)"),
                    Line2D([], [], color="0.3", ls="--", label="held basis, about its mean"),
                    Line2D([], [], color="0.3", ls=":", label=f"full Gaussian ({page.full}=false)")]
        _legend(fig, handles)
    return fig


def error_vs_time(df: pd.DataFrame, style, page: AblationPage | None = None):
    """Relative L2 error against wall time of training, every cell's curve of the page (thin,
    one colour per spec), one panel per (problem, d); grey: the constant (dashed) and affine
    (dotted) fits, medians over seeds."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from pinnbench.report.figures import (PANEL_H, PANEL_W, _legend, _log_or_symlog, _y_limits,
                                          theme)

    page = page_of(df, page)
    zo = page_rows(df[df["status"].isin(("ok", "timeout", "diverged"))], page)
    panels = sorted({(p, int(d)) for p, d in zip(zo["problem"], zo["dim"])})
    if not panels:
        return None
    with plt.rc_context(theme()):
        fig, axes = plt.subplots(1, len(panels), figsize=(PANEL_W * 1.2 * len(panels),
                                                          PANEL_H * 1.2), squeeze=False)
        design = design_view(zo)  # named as the table names them: by factor, not tuned lr
        base_params = _base_params(design, base_spec(design, page.family))
        label = {r.series: factor_name(page, r.solver_name, r.solver_params, base_params)
                 for r in design.itertuples(index=False)}
        # one colour per factor: a row's cells at two d ran at two tuned lrs (two series)
        colour: dict[str, Any] = {}
        for series in sorted(label):
            colour.setdefault(label[series], style.color[series])
        used, any_bad = set(), False
        for ax, (problem, dim) in zip(axes[0], panels):
            g = zo[(zo["problem"] == problem) & (zo["dim"] == dim)]
            xs, ys = [], []
            for r in g.itertuples(index=False):
                pts = [(c["time_s"], c["rel_l2"]) for c in (r.curve or [])
                       if c.get("rel_l2") is not None and np.isfinite(c["rel_l2"])
                       and c.get("time_s") is not None]
                if not pts:
                    continue
                used.add(label[r.series])
                bad = r.status == "diverged"
                any_bad |= bad
                ax.plot([p for p, _ in pts], [e for _, e in pts], color=colour[label[r.series]],
                        lw=0.9, alpha=0.75, ls="--" if bad else "-")
                xs += [p for p, _ in pts]
                if not bad:  # a diverged curve is drawn, clipped, and does not set the range
                    ys += [e for _, e in pts]
            for col, ls in (("floor_const_rel_l2", "--"), ("floor_affine_rel_l2", ":")):
                v = _median(g[col])
                if v is not None:
                    ax.axhline(v, color="0.45", ls=ls, lw=1.2)
                    ys.append(v)
            _log_or_symlog(ax, xs)
            ax.set_xlim(left=0.0)
            _y_limits(ax, ys, 0, log=True)
            ax.set_xlabel("wall time of training (s)")
            ax.set_ylabel("relative $L^2$ error")
            ax.set_title(f"{problem} · d = {dim:,}", fontsize=9)
        handles = [Line2D([], [], color=colour[f], lw=1.6, label=f) for f in sorted(used)]
        handles += [Line2D([], [], color="0.45", ls="--", label="constant fit A(x)·c"),
                    Line2D([], [], color="0.45", ls=":", label="affine fit A(x)·(a + b·x)")]
        if any_bad:
            handles.append(Line2D([], [], color="0.3", ls="--", lw=0.9,
                                  label="diverged cell (clipped)"))
        _legend(fig, handles)
    return fig

