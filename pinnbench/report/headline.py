"""The page's first block (issue 24): a head-to-head table per problem and d, and one sentence
per d naming the more accurate, the faster and the leaner solver, by what factor.

Per (problem, d) and series, from :func:`pinnbench.report.aggregate.families` and
:func:`pinnbench.report.protocol.time_to_target`:

- error: the median final relative L2 over the seeds that finished (log space), with the
  envelope of their 95 % intervals over the test points, and the seeds below their own fits
  (:func:`pinnbench.judge.verdict.count_seeds`);
- time per step: the median over seeds; peak: the median peak above the cell's baseline after
  set-up (:attr:`Family.mem_above`; the total peak where no baseline was recorded), and on a
  CPU beside it the median of the tensors' peak above the baseline (:attr:`Family.tensors_above`:
  the state built in training plus one step's own tensors, exact, where the resident set also
  holds the heap's slack);
- time to target: the median time to the cell's own constant fit, with "k of n seeds reached".

**The sentence.** Over the series with a value, the best (lowest) and the runner-up; the factor
is runner-up / best of the two medians (ratio of medians over seeds). The accuracy sentence adds
whether the more accurate solver is below its own fits in every seed, with its seed counts (a
lower error above the fits is a smaller failure, not a result). The speed sentence is time to target where at least one series reached
its constant fit in most seeds (a solver that never reaches it is never the faster); else the
time per step, said to be per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pinnbench.report import protocol
from pinnbench.report.aggregate import Family
from pinnbench.report.provenance import format_bytes
from pinnbench.report.tables import fmt_seconds, fmt_sci


@dataclass
class Entry:
    series: str
    label: str
    err: float | None
    err_ci: tuple[float, float] | None
    seeds: str
    all_below: bool
    time_per_step: float | None
    peak: float | None
    peak_kind: str  # "above the baseline" or "total"
    tensors: float | None  # CPU: the tensors' peak above the baseline (exact)
    ttt: float | None
    ttt_text: str
    ttt_most: bool  # the target reached in most seeds
    below_const: int  # seeds below their own constant fit, of n
    n: int


def _median(stats) -> float | None:
    return None if stats is None else stats.median


def entries(fams: list[Family], df: pd.DataFrame) -> dict[tuple[str, int], list[Entry]]:
    """(problem, d) -> one Entry per series, in label order."""
    ttt = {(t.problem, t.dim, t.series): t.constant for t in protocol.time_to_target(df)}
    out: dict[tuple[str, int], list[Entry]] = {}
    for f in sorted(fams, key=lambda f: (f.problem, f.dim, f.label)):
        c = f.seed_counts
        t = ttt.get((f.problem, f.dim, f.series))
        above = _median(f.mem_above)
        out.setdefault((f.problem, f.dim), []).append(Entry(
            series=f.series, label=f.label, err=_median(f.rel_l2), err_ci=f.rel_l2_ci,
            seeds=c.text if c is not None else "–", all_below=bool(c and c.all_below),
            time_per_step=_median(f.time_per_step),
            peak=above if above is not None else _median(f.mem),
            peak_kind="above the baseline" if above is not None else "total",
            tensors=_median(f.tensors_above),
            ttt=None if t is None else t.median_time_s,
            ttt_text="–" if t is None else f"{protocol.fmt_time(t.median_time_s)} ({t.text})",
            ttt_most=t is not None and 2 * t.reached > t.n,
            below_const=c.below_const if c is not None else 0, n=c.n if c is not None else 0))
    return out


def _two(entries: list[Entry], key: str) -> tuple[Entry, Entry] | None:
    have = [e for e in entries if getattr(e, key) is not None
            and math.isfinite(getattr(e, key)) and getattr(e, key) > 0]
    if len(have) < 2:
        return None
    best, second = sorted(have, key=lambda e: getattr(e, key))[:2]
    return best, second


def _factor(best: float, second: float) -> str:
    return f"{second / best:.3g}×"


def sentences(es: list[Entry]) -> list[str]:
    """The accuracy, speed and memory sentences of one (problem, d) (module docstring)."""
    out = []
    acc = _two(es, "err")
    if acc:
        b, s = acc
        tail = (f"; {b.label} is below its own fits ({b.seeds})" if b.all_below
                else f"; {b.label} is not below its own fits in every seed ({b.seeds})")
        out.append(f"More accurate: {b.label}, {_factor(b.err, s.err)} lower error than "
                   f"{s.label} ({fmt_sci(b.err)} vs {fmt_sci(s.err)}){tail}.")
    reached = [e for e in es if e.ttt_most]
    if reached and len(es) >= 2:
        b = min(reached, key=lambda e: e.ttt)
        rest = [e for e in es if e is not b]
        s = min(rest, key=lambda e: e.ttt if e.ttt is not None else math.inf)
        if s.ttt is None or math.isinf(s.ttt):
            out.append(f"Faster to target: {b.label} reaches its constant fit in "
                       f"{protocol.fmt_time(b.ttt)}; {s.label} does not "
                       f"({s.ttt_text.split('(', 1)[-1].rstrip(')') or 'no fit'}).")
        else:
            out.append(f"Faster to target: {b.label}, {_factor(b.ttt, s.ttt)} sooner than "
                       f"{s.label} ({protocol.fmt_time(b.ttt)} vs {protocol.fmt_time(s.ttt)}).")
    else:
        fast = _two(es, "time_per_step")
        if fast:
            b, s = fast
            out.append(f"Faster per step: {b.label}, {_factor(b.time_per_step, s.time_per_step)}"
                       f" ({fmt_seconds(b.time_per_step)} vs {fmt_seconds(s.time_per_step)}); "
                       "no solver reached its constant fit in most seeds, so there is no time "
                       "to target to compare.")
    lean = _two(es, "peak")
    if lean:
        b, s = lean
        learned = "" if 2 * b.below_const > b.n else \
            (f"; but {b.label} is below its own constant fit in only {b.below_const} of "
             f"{b.n} seeds: lean, without having learned")
        tensors = ""
        if b.tensors and s.tensors:  # CPU cells: the exact figure beside the resident set's
            lo, hi = sorted((b, s), key=lambda e: e.tensors)
            tensors = (f"; by the tensors' peak above the baseline (exact: the state built in "
                       f"training plus one step's own tensors, where the resident set also "
                       f"holds the heap's slack, which varies from run to run: docs/protocol.md), "
                       f"{lo.label}, {_factor(lo.tensors, hi.tensors)} ("
                       f"{format_bytes(lo.tensors)} vs {format_bytes(hi.tensors)})"
                       + ("" if lo is b else ": the other way round"))
        out.append(f"Leaner: {b.label}, {_factor(b.peak, s.peak)} less peak memory "
                   f"{b.peak_kind} than {s.label} ({format_bytes(b.peak)} vs "
                   f"{format_bytes(s.peak)}){tensors}{learned}.")
    return out


def section(fams: list[Family], df: pd.DataFrame) -> list[dict[str, Any]]:
    """Blocks for the template: per (problem, d), its rows and its sentences."""
    blocks = []
    for (problem, dim), es in entries(fams, df).items():
        rows = [{
            "series": e.series, "label": e.label,
            "err": "–" if e.err is None else fmt_sci(e.err),
            "err_value": "" if e.err is None else repr(e.err),
            "err_ci": "" if not e.err_ci else f"{fmt_sci(e.err_ci[0])} – {fmt_sci(e.err_ci[1])}",
            "seeds": e.seeds,
            "time": "–" if e.time_per_step is None else fmt_seconds(e.time_per_step),
            "peak": "–" if e.peak is None else format_bytes(e.peak),
            "peak_value": "" if e.peak is None else repr(e.peak), "peak_kind": e.peak_kind,
            "tensors": "" if e.tensors is None else format_bytes(e.tensors),
            "ttt": e.ttt_text,
        } for e in es]
        blocks.append({"problem": problem, "dim": dim, "rows": rows,
                       "sentences": sentences(es) if len(es) > 1 else [],
                       "not_learned": [e.label for e in es if e.n and 2 * e.below_const <= e.n]})
    return blocks


#: the docs section that says why a solver may not learn, and what would change that
WHY_NOT_LEARNED = ("docs/protocol.md", "6-when-a-solver-did-not-learn")


def why_not_learned_href(out_dir) -> str | None:
    """A link from the page in ``out_dir`` to :data:`WHY_NOT_LEARNED` in this checkout's docs/
    (relative, so the committed pages keep it), or None when the docs are not there (an
    installed wheel has none: the page then names the file)."""
    import os
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / WHY_NOT_LEARNED[0]
    if not docs.is_file():
        return None
    rel = os.path.relpath(docs, Path(out_dir).resolve())
    return f"{Path(rel).as_posix()}#{WHY_NOT_LEARNED[1]}"
