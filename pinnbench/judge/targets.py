"""Time to target: the first step and the training time at which a cell's error is clearly below
its own trivial fit (docs/protocol.md). Pure functions of result rows (plain dicts with the
columns of :mod:`pinnbench.cells.schema`).

**Targets.** A cell has up to two: ``constant``, its own ``floor_const_rel_l2`` (the best
A(x)·c on its test set), and ``affine``, its own ``floor_affine_rel_l2`` (A(x)·(a + b·x)), where
the row has one. Each cell is judged against the floors of its *own* seed (a seed draws its own
problem instance, so another seed's floor is another problem's); a target the row has no floor
for does not exist (:func:`time_to_target` returns None), it is not "never reached".

**The rule** (the same as :func:`pinnbench.judge.verdict.compare` calls "below", so a target reached
at the curve's last point and a "below" verdict of the final error always agree). A curve point
``{step, time_s, rel_l2, rel_l2_lo, rel_l2_hi}`` reaches a target with floor f when

- both the point and the floor have 95 % intervals over the test points (the point's
  ``rel_l2_lo/hi``, the row's ``floor_*_rel_l2_lo/hi``): the error's **upper** 95 % bound is
  below the floor's **lower** 95 % bound, ``rel_l2_hi < f_lo`` (the two intervals are apart:
  the error is below the fit beyond the noise of the test set);
- otherwise (no interval on either side): the error itself is below the floor by more than
  :data:`pinnbench.judge.verdict.FLOOR_TOLERANCE` (10 %), ``rel_l2 < (1 - 0.10) f``.

Only points of training count (``step >= 1``): the untrained model at step 0 has not earned
anything. A NaN or infinite error never reaches a target.

**Time to target** is the first point that reaches it: its ``step`` and its ``time_s`` (the
summed step times up to that point: evaluation time is not counted, as in AlgoPerf; the curve
holds them, :mod:`pinnbench.cells.measurement`), or the clock named by ``clock`` (e.g. ``cpu_time_s``
where the curve records it). A cell that never reaches it, whatever its status (it ran out of
memory, timed out, diverged, or finished above), has ``inf`` for both, as AlgoPerf scores a
missed target (Dahl et al. 2023, "Benchmarking Neural Network Training Algorithms", §4); a cell
that reached it and diverged later keeps its first time (AlgoPerf's rule too), and the report
shows its status beside it.
The error is only known at the evaluated steps (1, 2, 4, 8, ... and the last), so the time is
that of the first evaluation at or below target: an upper bound on the true first time, equal
for every solver since they are evaluated at the same steps.

**Over seeds** (:func:`summarise`): the median of the seeds' times in log space (as the report
aggregates every other quantity; an even count takes the geometric mean of the two middle
values), with ``inf`` entering as the largest value, so the median is ``inf`` when at least
half the seeds missed; and "k of n seeds reached". Skipped cells (a combination the solver
declines) are not seeds of the comparison and are left out of n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from pinnbench.judge.verdict import FLOOR_TOLERANCE

#: target name -> the row's floor column
FLOOR_COLUMNS = {"constant": "floor_const_rel_l2", "affine": "floor_affine_rel_l2"}
TARGETS = tuple(FLOOR_COLUMNS)
INF = math.inf


def _num(v: Any) -> float | None:
    """A float that is a number (not NaN), else None (NaN is how the store reads back NULL)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def floor_of(row: dict[str, Any], target: str) -> tuple[float, float | None, float | None] | None:
    """(floor, lo, hi) of ``target`` from the row's own columns; None without that floor.
    ``lo``/``hi`` are None unless both ends are known and ordered."""
    col = FLOOR_COLUMNS[target]
    f = _num(row.get(col))
    if f is None or not math.isfinite(f):
        return None
    lo, hi = _num(row.get(f"{col}_lo")), _num(row.get(f"{col}_hi"))
    if lo is None or hi is None or lo > hi:
        lo = hi = None
    return f, lo, hi


def reaches(point: dict[str, Any], floor: tuple[float, float | None, float | None]) -> bool:
    """Whether one curve point is below the floor by the rule of the module docstring."""
    err = _num(point.get("rel_l2"))
    if err is None or not math.isfinite(err):
        return False
    f, f_lo, _ = floor
    lo, hi = _num(point.get("rel_l2_lo")), _num(point.get("rel_l2_hi"))
    if f_lo is not None and lo is not None and hi is not None and lo <= hi:
        return hi < f_lo
    return err < f * (1 - FLOOR_TOLERANCE)


@dataclass(frozen=True)
class Hit:
    """When one cell first reached one target (``inf`` for both when it never did)."""

    target: str
    step: float
    time_s: float

    @property
    def reached(self) -> bool:
        return math.isfinite(self.step)


def curve_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's curve points (dicts with a step), in step order."""
    curve = row.get("curve")
    if not isinstance(curve, list):
        return []
    pts = [p for p in curve if isinstance(p, dict) and _num(p.get("step")) is not None]
    return sorted(pts, key=lambda p: float(p["step"]))


def time_to_target(row: dict[str, Any], target: str = "constant",
                   clock: str = "time_s") -> Hit | None:
    """The first training point of the row's curve that reaches its own ``target`` fit (module
    docstring), or a Hit of ``inf`` when none does; None when the row has no such floor."""
    floor = floor_of(row, target)
    if floor is None:
        return None
    for p in curve_of(row):
        if float(p["step"]) >= 1 and reaches(p, floor):
            t = _num(p.get(clock))
            return Hit(target, float(p["step"]), INF if t is None else t)
    return Hit(target, INF, INF)


def log_median(values: Iterable[float]) -> float | None:
    """The median in log space of positive values (``inf`` allowed, ordered last): the middle
    value, or for an even count the geometric mean of the two middle ones; None when empty."""
    v = sorted(float(x) for x in values)
    if not v:
        return None
    n = len(v)
    if n % 2:
        return v[n // 2]
    a, b = v[n // 2 - 1], v[n // 2]
    if math.isinf(b):
        return INF
    return math.sqrt(a * b) if a > 0 else (a + b) / 2


@dataclass(frozen=True)
class Summary:
    """Time to one target over the seeds of one (problem, d, solver)."""

    target: str
    median_time_s: float
    median_step: float
    reached: int
    n: int

    @property
    def text(self) -> str:
        return f"{self.reached} of {self.n} seeds reached"


def summarise(rows: Iterable[dict[str, Any]], target: str = "constant",
              clock: str = "time_s") -> Summary | None:
    """Median time and step to ``target`` over the rows (seeds), and how many reached it;
    skipped rows and rows without that floor are left out; None when no row is left."""
    hits = [time_to_target(r, target, clock) for r in rows if r.get("status") != "skipped"]
    hits = [h for h in hits if h is not None]
    if not hits:
        return None
    return Summary(target, log_median(h.time_s for h in hits),
                   log_median(h.step for h in hits), sum(h.reached for h in hits), len(hits))
