"""What the ``pinnbench`` command prints: the summary table of a run's cells, the verdict in
words, and the progress of a run while it runs (a bar on a terminal, a line per cell in a log,
JSON with ``--json``). Everything the user, a plugin or the store wrote is escaped before rich
sees it.

Every string that comes from the user, a plugin or the store is printed with rich's markup off
or escaped: a solver spec such as sdze[rank=1000] or an error text such as
"[enforce fail at alloc_cpu.cpp:127]" would otherwise be read as console markup and vanish.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from pinnbench.judge import verdict


def console(stderr: bool = False):
    """A rich console on stdout (or stderr); at least 200 columns wide when not a terminal, so
    that tables in logs are not folded."""
    import shutil

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else max(shutil.get_terminal_size((200, 24)).columns, 200)
    return Console(file=stream, highlight=False, width=width)


def escape(text: Any) -> str:
    """``text`` with rich console markup escaped (``sdze[rank=1000]`` stays as written)."""
    from rich.markup import escape as _escape

    return _escape(str(text))


def _fmt_bytes(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v / 2**20:,.0f}"


def _fmt_num(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    try:
        if isinstance(v, float) and math.isnan(v):
            return "-"
        return format(v, fmt)
    except (TypeError, ValueError):
        return str(v)


def fmt_dim(d: Any) -> str:
    """A dimension, one style for every d: exact digits with thousands separators (100, 1,000,
    64,000, 10,000,000)."""
    return "-" if d is None else f"{int(d):,}"


def fmt_sig(v: Any, digits: int = 3) -> str:
    """A number at ``digits`` significant digits, trailing zeros kept (1.00 beside 0.966, 1.20e-05),
    "-" for a missing value."""
    if v is None:
        return "-"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "-"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    text = format(f, f"#.{digits}g")
    mantissa, e, exponent = text.partition("e")
    return mantissa.rstrip(".") + (e + exponent if e else "")


def problem_domain(problem_id: str) -> str:
    """The problem's domain as its instances state it; where it depends on d (the radius sqrt(d)
    of the ``*-scaled-v1`` ids), as at d = 100, said so."""
    from pinnbench.maths.problem_registry import make_problem, problem_class

    low = max(problem_class(problem_id).min_dim, 1)
    at_low = make_problem(problem_id, dim=low).domain
    at_100 = make_problem(problem_id, dim=100).domain
    return at_100 if at_low == at_100 else f"{at_100} at d = 100"


def _short_solver(row: dict) -> str:
    """The solver spec with only the parameters that differ from its defaults."""
    from pinnbench.report.aggregate import nondefault_spec

    return nondefault_spec(str(row.get("solver")))


def _row_verdict(row: dict) -> str:
    """The error against the trivial fits, or why it is not judged (pinnbench/judge/verdict.py)."""
    if row["status"] != "ok":
        return ""
    if not verdict.trained(row):
        return f"untrained (< {verdict.MIN_TRAINED_STEPS} steps)"
    return verdict.standing(row.get("final_rel_l2"), row.get("floor_const_rel_l2"),
                            row.get("floor_affine_rel_l2"), verdict.row_intervals([row])) or ""


def print_verdict(con, rows: list[dict]) -> None:
    """The verdict in words, per problem (pinnbench.judge.verdict.problem_verdicts)."""
    labelled = [{**r, "label": _short_solver(r)} for r in rows]
    for problem, lines in verdict.problem_verdicts(labelled).items():
        con.print(f"Verdict for {problem}:", markup=False, style="bold")
        for line in lines:
            con.print(f"  - {line}", markup=False)


_STATUS_STYLE = {"ok": "green", "oom": "yellow", "timeout": "yellow", "diverged": "magenta",
                 "skipped": "dim", "error": "bold red"}


def summary_table(rows: list[dict], title: str = ""):
    from rich.table import Table

    t = Table(title=escape(title) if title else None, show_lines=False)
    for name, just in (("problem", "left"), ("d", "right"), ("solver", "left"), ("seed", "right"),
                       ("status", "left"), ("steps", "right"), ("s/step", "right"),
                       ("setup s", "right"), ("peak CPU MiB", "right"), ("peak GPU MiB", "right"),
                       ("rel L2", "right"), ("best", "right"), ("floor c", "right"),
                       ("floor a+bx", "right"), ("verdict", "left"), ("message", "left")):
        t.add_column(name, justify=just, overflow="fold",
                     no_wrap=name not in ("message", "verdict"))
    for r in sorted(rows, key=lambda r: (r["problem"], str(r["solver"]), r["dim"], r["seed"])):
        r = {**r}
        r["status"], r["message"] = verdict.final_status(r)
        peak_cpu = r.get("peak_cpu_bytes")
        t.add_row(
            escape(r["problem"]), fmt_dim(r["dim"]),
            escape(_short_solver(r)), str(r["seed"]),
            f"[{_STATUS_STYLE.get(r['status'], '')}]{r['status']}[/]",
            _fmt_num(r.get("steps_done"), "d"), fmt_sig(r.get("time_per_step_s")),
            fmt_sig(r.get("setup_time_s")), _fmt_bytes(peak_cpu),
            _fmt_bytes(r.get("peak_gpu_allocated_bytes")),
            fmt_sig(r.get("final_rel_l2")), fmt_sig(r.get("best_rel_l2")),
            fmt_sig(r.get("floor_const_rel_l2")),
            fmt_sig(r.get("floor_affine_rel_l2")), escape(_row_verdict(r)),
            escape((r.get("message") or "")[:90]))
    return t


class Eta:
    """The time left in a run: the plan's estimates of the cells not yet finished, scaled by how
    the finished cells' times compared with their estimates (so an estimate that was 3x too
    high is corrected as the run goes). Cells without an estimate count as the mean of the
    others."""

    def __init__(self, estimates: dict[str, float | None]) -> None:
        known = [v for v in estimates.values() if v is not None]
        fill = sum(known) / len(known) if known else None
        self.left = {k: (v if v is not None else fill) for k, v in estimates.items()}
        self.estimated_done = 0.0
        self.actual_done = 0.0

    def finished(self, cell: str | None, actual_s: float) -> None:
        est = self.left.pop(cell, None)
        if est is not None and est > 0 and actual_s > 0:
            self.estimated_done += est
            self.actual_done += actual_s

    def remaining_s(self) -> float | None:
        if not self.left or any(v is None for v in self.left.values()):
            return None
        ratio = self.actual_done / self.estimated_done if self.estimated_done > 0 else 1.0
        return ratio * sum(self.left.values())

    def text(self) -> str:
        left = self.remaining_s()
        return "" if left is None else f"ETA {_fmt_duration(left)}"


def _fmt_duration(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


class RunUI:
    """What a run prints while it runs: a progress bar on a terminal, else one line per finished
    cell (on stderr); ``--json``: one JSON object per cell; ``--quiet``: only errors."""

    def __init__(self, mode: str, run_id: str, total: int, already: int, store: str,
                 estimates: dict[str, float | None] | None = None) -> None:
        self.mode, self.run_id, self.total, self.already, self.store = mode, run_id, total, already, store
        self.progress = None
        self.console = None
        self.counts: dict[str, int] = {}
        self.done = 0
        self.eta = Eta(estimates or {})

    def __enter__(self):
        if self.mode == "rich":
            self.console = console(stderr=True)
            note = f" ({self.already} done before)" if self.already else ""
            if self.console.is_terminal:
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                           TimeElapsedColumn)

                self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                         MofNCompleteColumn(), TimeElapsedColumn(),
                                         TextColumn("{task.fields[eta]}"),
                                         TextColumn("{task.fields[last]}"),
                                         console=self.console, transient=False)
                self.progress.start()
                self.task = self.progress.add_task("starting", total=self.total, last="",
                                                   eta=self.eta.text())
            self.console.print(f"run {self.run_id}: {self.total} cells{note} -> {self.store}",
                               markup=False)
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False

    @staticmethod
    def _label(spec: dict) -> str:
        return f"{spec['problem']} d={fmt_dim(spec['dim'])} {_short_solver(spec)} seed={spec['seed']}"

    def warn(self, message: str) -> None:
        if self.mode == "json":
            print(json.dumps({"event": "warning", "message": message}), flush=True)
        elif self.console is not None:
            self.console.print(f"warning: {message}", style="yellow", markup=False)

    def start(self, spec: dict) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=escape(self._label(spec)))

    def result(self, row: dict) -> None:
        from pinnbench.cells.machine_load import unsteady_timing_warning

        self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1
        self.done += 1
        self.eta.finished(row.get("cell_id"), row.get("total_time_s") or 0.0)
        if self.mode == "json":
            print(json.dumps({"event": "cell", **row}, default=str), flush=True)
        elif self.progress is not None:
            style = _STATUS_STYLE.get(row["status"], "")
            self.progress.update(self.task, advance=1, eta=self.eta.text(),
                                 last=f"last: {escape(self._label(row))} [{style}]{row['status']}[/]")
        elif self.console is not None:  # not a terminal: a log line per finished cell
            err = row.get("final_rel_l2")
            err_text = "" if err is None or err != err else f", rel L2 {fmt_sig(err)}"
            eta = self.eta.text()
            self.console.print(f"[{self.done}/{self.total}] {self._label(row)}: {row['status']} "
                               f"({row.get('steps_done') or 0} steps{err_text})"
                               f"{'; ' + eta if eta else ''}", markup=False)
        unsteady = unsteady_timing_warning(row, self._label(row))
        if unsteady:
            self.warn(unsteady)

    def summary(self, rows: list[dict], wall_s: float, report: Path | None, note: str) -> None:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(self.counts.items())) or "no cells to run"
        if self.mode == "json":
            labelled = [{**r, "label": _short_solver(r)} for r in rows]
            print(json.dumps({"event": "summary", "run_id": self.run_id, "store": self.store,
                              "cells": len(rows), "counts": self.counts, "wall_s": wall_s,
                              "verdict": verdict.problem_verdicts(labelled),
                              "report": str(report) if report else None, "report_note": note}),
                  flush=True)
            return
        if self.mode == "quiet":
            for r in rows:
                if r["status"] == "error":
                    print(f"error: {self._label(r)}: {r['message']}", file=sys.stderr)
            return
        con = console()
        if rows:
            con.print(summary_table(rows, title=f"run {self.run_id}"))
            print_verdict(con, rows)
        con.print(f"{counts} in {wall_s:.1f} s. Results: {self.store} (run {self.run_id}; "
                  f"`pinnbench show --store {self.store}`)", markup=False)
        if report:
            con.print(f"Report: {report}", markup=False)
        elif note:
            con.print(note, markup=False)


