"""What a cell's numbers mean: the status rule, whether a cell trained enough to count, where its
error sits against the trivial fits, and the verdict in words for a whole run.

Everything here is a pure function of result rows (plain dicts with the columns of
:mod:`pinnbench.schema`), so the cell runner, the sweep, ``pinnbench show`` and the report all
apply the same rule, also to rows stored before the rule existed.

**Diverged.** A cell that finished its steps is ``diverged`` (not ``ok``) when any of:

- its final loss or final relative L2 error is not finite (NaN or ±inf);
- its final relative L2 error exceeds ``DIVERGED_REL_L2`` = 10: the model is ten times further
  from u* than the zero function (whose relative L2 is 1);
- its final relative L2 error exceeds ``DIVERGED_GROWTH`` = 100 times the error of the untrained
  model (the curve's step 0);
- its final loss exceeds ``LOSS_GROWTH`` = 10^6 times the first loss it logged.

**Trained.** A cell counts as trained when it ran at least ``MIN_TRAINED_STEPS`` = 100 steps:
fewer steps say how fast a step is, not what the method reaches.

**Standing against the floors.** ``floor_const_rel_l2`` and ``floor_affine_rel_l2`` are the
errors of the trivial fits A(x)·c and A(x)·(a + b·x) (:mod:`pinnbench.floors`). Where the row
has 95 % intervals over the draw of the test points (``final_rel_l2_lo/hi``,
``floor_*_rel_l2_lo/hi``), an error is *at* a floor when the two intervals overlap (within the
noise of the test set), *below* or *above* it otherwise; without intervals it is *at* a floor
within ``FLOOR_TOLERANCE`` = 10 % (relative). Only a trained, non-diverged cell clearly below the lower
floor has learned more than the trivial fit; the report highlights nothing else as best.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable

DIVERGED_REL_L2 = 10.0
DIVERGED_GROWTH = 100.0
LOSS_GROWTH = 1e6
MIN_TRAINED_STEPS = 100
FLOOR_TOLERANCE = 0.10


def _num(v: Any) -> float | None:
    """A float, or None for missing values (None, NaN from a DataFrame stays NaN: see callers)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _present(v: Any) -> float | None:
    """A finite-or-infinite number, None when missing (None or NaN are both 'missing' in rows
    read back from the store, where a non-finite float is stored as NULL)."""
    x = _num(v)
    return None if x is None or math.isnan(x) else x


def divergence(row: dict[str, Any]) -> str | None:
    """Why the cell's final state counts as diverged, or None when it does not (module
    docstring)."""
    curve = [c for c in (row.get("curve") or []) if isinstance(c, dict)]
    last = curve[-1] if curve else {}
    # a row read back from the store has NaN for a missing (NULL) number; its curve (JSON)
    # keeps NaN and inf as they were
    loss = _present(row.get("final_loss"))
    last_loss = _num(last.get("loss"))
    for value in (loss, last_loss):
        if value is not None and not math.isfinite(value):
            return f"the loss became {value}"
    rel = _num(last.get("rel_l2")) if curve else _num(row.get("final_rel_l2"))
    if curve and rel is not None and not math.isfinite(rel):
        return f"the relative L2 error became {rel}"
    rel = _present(row.get("final_rel_l2")) if rel is None else rel
    if rel is not None and rel > DIVERGED_REL_L2:
        return (f"relative L2 error {rel:.3g} > {DIVERGED_REL_L2:g} (the zero function has 1): "
                "training blew up")
    start = next((_present(c.get("rel_l2")) for c in curve if c.get("step") == 0), None)
    if rel is not None and start and rel > DIVERGED_GROWTH * start:
        return (f"relative L2 error grew from {start:.3g} to {rel:.3g} "
                f"(> {DIVERGED_GROWTH:g}x): training blew up")
    first_loss = next((_present(c.get("loss")) for c in curve
                       if _present(c.get("loss")) is not None), None)
    if loss is not None and first_loss and first_loss > 0 and loss > LOSS_GROWTH * first_loss:
        return (f"loss grew from {first_loss:.3g} to {loss:.3g} (> {LOSS_GROWTH:g}x): "
                "training blew up")
    return None


def final_status(row: dict[str, Any]) -> tuple[str, str]:
    """(status, message) of a row under the rule above: an ``ok`` row that diverged becomes
    ``diverged`` with the reason as its message; every other row keeps its own."""
    status, message = row.get("status") or "", row.get("message") or ""
    if status == "ok":
        reason = divergence(row)
        if reason:
            return "diverged", reason
    return status, message


def apply(row: dict[str, Any]) -> dict[str, Any]:
    """Set ``status`` and ``message`` of ``row`` (in place) by :func:`final_status`; returns it."""
    row["status"], row["message"] = final_status(row)
    return row


def trained(row: dict[str, Any]) -> bool:
    """At least ``MIN_TRAINED_STEPS`` training steps ran."""
    steps = _present(row.get("steps_done"))
    return steps is not None and steps >= MIN_TRAINED_STEPS


Interval = tuple[float, float]


def _interval(v: Any) -> Interval | None:
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        return None
    lo, hi = _present(v[0]), _present(v[1])
    return (lo, hi) if lo is not None and hi is not None and lo <= hi else None


def compare(err: float, floor: float, err_ci: Any = None, floor_ci: Any = None) -> str:
    """'below', 'at' or 'above': by the 95 % intervals over the test points when both are
    known (overlapping intervals: 'at', within the noise of the test set), else by
    ``FLOOR_TOLERANCE``."""
    a, b = _interval(err_ci), _interval(floor_ci)
    if a and b:
        return "below" if a[1] < b[0] else "above" if a[0] > b[1] else "at"
    if err < floor * (1 - FLOOR_TOLERANCE):
        return "below"
    return "at" if err <= floor * (1 + FLOOR_TOLERANCE) else "above"


def standing(rel_l2: float | None, floor_const: float | None, floor_affine: float | None,
             intervals: dict[str, Any] | None = None) -> str | None:
    """Where an error sits against the trivial fits, in words (None without an error or floors):
    'below both trivial fits', 'within the noise of the test set of the affine fit',
    'at the affine fit (within 10%)', 'above the trivial fits', ... ``intervals``: optional
    95 % intervals ``{"rel_l2": (lo, hi), "constant": (lo, hi), "affine": (lo, hi)}``."""
    rel_l2 = _present(rel_l2)
    ci = intervals or {}
    floors = {name: f for name, f in (("constant", _present(floor_const)),
                                      ("affine", _present(floor_affine))) if f is not None}
    if rel_l2 is None or not floors:
        return None
    name, low = min(floors.items(), key=lambda kv: kv[1])
    low_cmp = compare(rel_l2, low, ci.get("rel_l2"), ci.get(name))
    if low_cmp == "below":
        return "below both trivial fits" if len(floors) == 2 else f"below the {name} fit"
    if low_cmp == "at":
        if _interval(ci.get("rel_l2")) and _interval(ci.get(name)):
            return f"within the noise of the test set of the {name} fit"
        return f"at the {name} fit (within {FLOOR_TOLERANCE:.0%})"
    high_name, high = max(floors.items(), key=lambda kv: kv[1])
    high_cmp = compare(rel_l2, high, ci.get("rel_l2"), ci.get(high_name)) \
        if len(floors) == 2 else "above"
    if high_cmp == "below":
        return f"above the {name} fit, below the {high_name} fit"
    if high_cmp == "at":
        return f"above the {name} fit, at the {high_name} fit"
    return "above the trivial fits" if len(floors) == 2 else f"above the {name} fit"


def below_floor(rel_l2: float | None, floor_const: float | None,
                floor_affine: float | None, intervals: dict[str, Any] | None = None) -> bool:
    """True when the error is clearly below the lower trivial fit (or there is no floor to
    compare with and the error is finite)."""
    s = standing(rel_l2, floor_const, floor_affine, intervals)
    if s is None:
        return _present(rel_l2) is not None and math.isfinite(float(rel_l2))
    return s.startswith("below")


# -- the verdict of a run, in words -----------------------------------------------------------------
def _fmt_dims(dims: Iterable[int]) -> str:
    def one(d: int) -> str:
        e = math.log10(d) if d > 0 else 0
        return f"10^{round(e)}" if d >= 1000 and abs(e - round(e)) < 1e-9 else f"{d:,}"
    return ", ".join(one(d) for d in sorted(dims))


def _median(values: list[float]) -> float:
    """The median in log space, as the report aggregates seeds (an even count: the geometric
    mean of the two middle values)."""
    v = sorted(values)
    n = len(v)
    if n % 2:
        return v[n // 2]
    a, b = v[n // 2 - 1], v[n // 2]
    return math.sqrt(a * b) if a > 0 and b > 0 else (a + b) / 2


def problem_verdicts(rows: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Per problem, sentences that say what the run found: for each solver (``label`` of a row,
    else its ``solver``) at which d it is below, at or above the trivial fits (median over
    seeds of trained, ok cells), and which cells are untrained, diverged or failed."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_problem[str(r.get("problem"))].append(r)
    out: dict[str, list[str]] = {}
    for problem, prs in sorted(by_problem.items()):
        lines: list[str] = []
        groups: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for r in prs:
            groups[str(r.get("label") or r.get("solver"))][int(r["dim"])].append(r)
        for label, by_dim in sorted(groups.items()):
            where: dict[str, list[tuple[int, float, float | None]]] = defaultdict(list)
            untrained: list[str] = []
            failed: dict[str, list[int]] = defaultdict(list)
            for dim, cells in sorted(by_dim.items()):
                good = []
                for r in cells:
                    status, _ = final_status(r)
                    if status != "ok":
                        failed[status].append(dim)
                    elif not trained(r):
                        steps = _present(r.get("steps_done"))
                        untrained.append(f"d = {_fmt_dims([dim])} ({int(steps or 0)} steps)")
                    else:
                        good.append(r)
                errs = [float(r["final_rel_l2"]) for r in good
                        if _present(r.get("final_rel_l2")) is not None]
                if not errs:
                    continue
                err = _median(errs)
                fc = _median_or_none([r.get("floor_const_rel_l2") for r in cells])
                fa = _median_or_none([r.get("floor_affine_rel_l2") for r in cells])
                s = standing(err, fc, fa, row_intervals(good, cells)) or "with no floor to compare"
                low = min((f for f in (fc, fa) if f is not None), default=None)
                where[s].append((dim, err, low))
            for s, pts in sorted(where.items(), key=lambda kv: min(d for d, *_ in kv[1])):
                detail = "; ".join(f"d = {_fmt_dims([d])}: {e:.2e}" +
                                   (f" vs {lo:.2e}" if lo is not None else "")
                                   for d, e, lo in pts)
                lines.append(f"{label} is {s} at d = {_fmt_dims(d for d, *_ in pts)} "
                             f"(relative L2 vs the lower trivial fit: {detail}).")
            if untrained:
                lines.append(f"{label} did not train enough to judge (< {MIN_TRAINED_STEPS} "
                             f"steps) at " + ", ".join(untrained) + ".")
            for status, dims in sorted(failed.items()):
                seeds = [f"{dims.count(d)} of {len(by_dim[d])} seeds" for d in sorted(set(dims))]
                several = any(len(by_dim[d]) > 1 for d in set(dims))
                lines.append(f"{label} ended {status} at d = {_fmt_dims(set(dims))}"
                             + (f" ({', '.join(seeds)})" if several else "") + ".")
        out[problem] = lines or ["no cells."]
    return out


def row_intervals(ok_rows: list[dict[str, Any]],
                  all_rows: list[dict[str, Any]] | None = None) -> dict[str, Interval]:
    """The 95 % intervals of :func:`standing` from rows (medians over seeds of each end): the
    error's from ``ok_rows``, the floors' from ``all_rows`` (default: the same rows)."""
    out: dict[str, Interval] = {}
    for key, col, rows in (("rel_l2", "final_rel_l2", ok_rows),
                           ("constant", "floor_const_rel_l2", all_rows or ok_rows),
                           ("affine", "floor_affine_rel_l2", all_rows or ok_rows)):
        lo = _median_or_none([r.get(f"{col}_lo") for r in rows])
        hi = _median_or_none([r.get(f"{col}_hi") for r in rows])
        if lo is not None and hi is not None and lo <= hi:
            out[key] = (lo, hi)
    return out


def _median_or_none(values: list[Any]) -> float | None:
    v = [x for x in (_present(v) for v in values) if x is not None and math.isfinite(x)]
    return _median(v) if v else None
