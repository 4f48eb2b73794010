"""What a cell's numbers mean: the status rule, whether a cell trained enough to count, where its
error sits against the trivial fits, and the verdict in words for a whole run.

Everything here is a pure function of result rows (plain dicts with the columns of
:mod:`pinnbench.cells.schema`), so the cell runner, the sweep, ``pinnbench show`` and the report all
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
errors of the trivial fits A(x)·c and A(x)·(a + b·x) (:mod:`pinnbench.judge.floors`). Where the row
has 95 % intervals over the draw of the test points (``final_rel_l2_lo/hi``,
``floor_*_rel_l2_lo/hi``), an error is *at* a floor when the two intervals overlap (within the
noise of the test set), *below* or *above* it otherwise; without intervals it is *at* a floor
within ``FLOOR_TOLERANCE`` = 10 % (relative). Only a trained, non-diverged cell clearly below the lower
floor has learned more than the trivial fit; the report highlights nothing else as best.

**Each seed against its own floors.** A seed draws its own problem instance (coefficients,
test set), hence its own floors: every cell is judged against the floors and intervals of its
own row (:func:`judge_seed`), and the seeds of a (problem, solver, d) are summarised as
"k of n seeds below the constant fit, j of n below the affine fit" (:func:`count_seeds`), never
as a median error against a median floor (docs/protocol.md §2; issue 21).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
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


# -- each seed against its own floors ----------------------------------------------------------
def intervals_of(row: dict[str, Any]) -> dict[str, Interval]:
    """The 95 % intervals of :func:`standing` from one row's own columns: the error's
    (``final_rel_l2_lo/hi``) and its floors' (``floor_*_rel_l2_lo/hi``)."""
    out: dict[str, Interval] = {}
    for key, col in (("rel_l2", "final_rel_l2"), ("constant", "floor_const_rel_l2"),
                     ("affine", "floor_affine_rel_l2")):
        ci = _interval((row.get(f"{col}_lo"), row.get(f"{col}_hi")))
        if ci is not None:
            out[key] = ci
    return out


def row_intervals(ok_rows: list[dict[str, Any]],
                  all_rows: list[dict[str, Any]] | None = None) -> dict[str, Interval]:
    """The intervals of one cell (:func:`intervals_of`). Rows of several seeds are refused: each
    seed draws its own problem instance, so a median of their floors belongs to none of them
    (judge each row, :func:`count_seeds`)."""
    rows = list(ok_rows) + [r for r in (all_rows or []) if not any(r is o for o in ok_rows)]
    if len(rows) != 1:
        raise ValueError("intervals of several seeds mix problem instances; judge each seed "
                         "against its own floors (pinnbench.judge.verdict.count_seeds)")
    return intervals_of(rows[0])


def judged(row: dict[str, Any]) -> bool:
    """A row whose final error is judged: status ok (after :func:`final_status`), trained,
    with a finite final error."""
    err = _present(row.get("final_rel_l2"))
    return (final_status(row)[0] == "ok" and trained(row) and err is not None
            and math.isfinite(err))


@dataclass(frozen=True)
class SeedVerdict:
    """One judged cell against its own seed's floors."""

    seed: Any
    rel_l2: float
    floor_const: float | None
    floor_affine: float | None
    #: 'below', 'at' or 'above' the constant / affine fit (:func:`compare`), None without it
    constant: str | None
    affine: str | None
    #: the standing in words (:func:`standing`)
    standing: str | None


def judge_seed(row: dict[str, Any]) -> SeedVerdict:
    """The final error of ``row`` against the floors of the same row (same seed, same problem
    instance, same test set), with the intervals of that row."""
    err = float(row["final_rel_l2"])
    ci = intervals_of(row)
    fc, fa = _present(row.get("floor_const_rel_l2")), _present(row.get("floor_affine_rel_l2"))
    return SeedVerdict(
        seed=row.get("seed"), rel_l2=err, floor_const=fc, floor_affine=fa,
        constant=None if fc is None else compare(err, fc, ci.get("rel_l2"), ci.get("constant")),
        affine=None if fa is None else compare(err, fa, ci.get("rel_l2"), ci.get("affine")),
        standing=standing(err, fc, fa, ci))


@dataclass(frozen=True)
class SeedCounts:
    """How the seeds of one (problem, solver, d) stand, each against its own floors."""

    #: seeds that ran (every status but skipped)
    n: int
    verdicts: tuple[SeedVerdict, ...]

    @property
    def below_const(self) -> int:
        return sum(v.constant == "below" for v in self.verdicts)

    @property
    def below_affine(self) -> int:
        return sum(v.affine == "below" for v in self.verdicts)

    @property
    def has_affine(self) -> bool:
        return any(v.floor_affine is not None for v in self.verdicts)

    @property
    def uniform(self) -> str | None:
        """The standing every seed shares, when all ``n`` were judged and agree; else None."""
        words = {v.standing for v in self.verdicts}
        if len(self.verdicts) == self.n and len(words) == 1:
            return next(iter(words))
        return None

    @property
    def all_below(self) -> bool:
        """Every seed that ran was judged and is clearly below its own lower fit."""
        return (self.n > 0 and len(self.verdicts) == self.n
                and all((v.standing or "").startswith("below") for v in self.verdicts))

    @property
    def text(self) -> str:
        """'k of n seeds below the constant fit, j of n below the affine fit'."""
        out = f"{self.below_const} of {self.n} seeds below the constant fit"
        if self.has_affine:
            out += f", {self.below_affine} of {self.n} below the affine fit"
        return out


def count_seeds(rows: Iterable[dict[str, Any]]) -> SeedCounts:
    """Judge every seed of one family against its own floors (module docstring); seeds that did
    not finish, did not train or have no finite error count in n and are never below."""
    rows = [r for r in rows if (r.get("status") or "") != "skipped"]
    return SeedCounts(len(rows), tuple(judge_seed(r) for r in rows if judged(r)))


# -- the verdict of a run, in words -----------------------------------------------------------------
def _fmt_dims(dims: Iterable[int]) -> str:
    def one(d: int) -> str:
        e = math.log10(d) if d > 0 else 0
        return f"10^{round(e)}" if d >= 1000 and abs(e - round(e)) < 1e-9 else f"{d:,}"
    return ", ".join(one(d) for d in sorted(dims))


def _seed_detail(v: SeedVerdict) -> str:
    fits = " / ".join(f"{f:.2e}" for f in (v.floor_const, v.floor_affine) if f is not None)
    return f"seed {v.seed}: {v.rel_l2:.2e} vs {fits}" if fits else f"seed {v.seed}: {v.rel_l2:.2e}"


def problem_verdicts(rows: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Per problem, sentences that say what the run found: for each solver (``label`` of a row,
    else its ``solver``) and d, how many seeds are below their own constant and affine fits
    (each seed against the floors of its own problem instance, :func:`count_seeds`; the
    standing in words when every seed shares it), and which cells are untrained, diverged or
    failed."""
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
            untrained: list[str] = []
            failed: dict[str, list[int]] = defaultdict(list)
            for dim, cells in sorted(by_dim.items()):
                for r in cells:
                    status, _ = final_status(r)
                    if status != "ok":
                        failed[status].append(dim)
                    elif not trained(r):
                        steps = _present(r.get("steps_done"))
                        untrained.append(f"d = {_fmt_dims([dim])} ({int(steps or 0)} steps)")
                counts = count_seeds(cells)
                if not counts.verdicts:
                    continue
                head = f"{label} is {counts.uniform} at d = {_fmt_dims([dim])}" \
                    if counts.uniform else f"{label} at d = {_fmt_dims([dim])}"
                has_fits = any(v.floor_const is not None or v.floor_affine is not None
                               for v in counts.verdicts)
                what = counts.text if has_fits else "with no floor to compare"
                detail = "; ".join(_seed_detail(v) for v in counts.verdicts)
                lines.append(f"{head}: {what} (each seed against its own fits; relative L2 vs "
                             f"constant / affine fit: {detail}).")
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
