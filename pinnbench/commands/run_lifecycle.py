"""The life of a run in the store, from the plan to its end: which run ``--resume`` continues and
whether the options change its plan, a new run's id and provenance, the claim on the run (one
planner at a time, :mod:`pinnbench.cells.run_lease`), its cells executed and written one by one, and the
run marked finished or interrupted (Ctrl-C, or SIGTERM handled as Ctrl-C: exit 130 and the
resume command). Bad input is a :class:`pinnbench.commands.usage.UsageError`.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pinnbench.cells.cellspec import DEFAULTS as CELL_DEFAULTS
from pinnbench.commands.usage import UsageError


def command_line(argv: Sequence[str]) -> str:
    """The command as the run records it: ``pinnbench`` and the arguments, shell-quoted."""
    return "pinnbench " + " ".join(shlex.quote(a) for a in argv)


def new_run_id() -> str:
    """A run's id: its UTC start time and 6 random hex digits (``20261202T080000Z-1a2b3c``)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt, so a terminated planner stops like
    Ctrl-C (cells killed, the run marked); in the main thread only (signals go there)."""
    def _terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def resumed_run(store: str, resume: str) -> str:
    """The id of the run ``--resume RESUME`` continues (``latest``: the store's last run)."""
    from pinnbench.cells import store as store_mod

    runs = store_mod.list_runs(store) if Path(store).exists() else []
    ids = [r["run_id"] for r in runs]
    if not ids:
        raise UsageError(f"--resume: the store {store!r} has no run to resume")
    run_id = ids[-1] if resume == "latest" else resume
    if run_id not in ids:
        raise UsageError(f"--resume: no run {run_id!r} in {store!r}; runs: " + ", ".join(ids[-5:]))
    return run_id


def plan_change(old: list[dict], new: list[dict]) -> str | None:
    """How plan ``new`` differs from ``old`` (None when they hold the same cells with the same
    settings; the command line that made them does not count)."""
    from pinnbench.cells.cell import cell_id

    def key(c: dict) -> dict:  # a field a stored plan predates reads as its default
        return {k: v for k, v in {**CELL_DEFAULTS, **c}.items() if k not in ("command", "run_id")}

    old_by, new_by = {cell_id(c): key(c) for c in old}, {cell_id(c): key(c) for c in new}
    added, dropped = set(new_by) - set(old_by), set(old_by) - set(new_by)
    if added or dropped:
        keys = sorted({k for a in added for b in dropped for k in set(new_by[a]) | set(old_by[b])
                       if new_by[a].get(k) != old_by[b].get(k)}) if added and dropped else []
        what = f"; differing: {', '.join(keys[:6])}" if keys else ""
        return f"{len(added)} cells added, {len(dropped)} dropped{what}"
    keys = sorted({k for i in new_by for k in set(new_by[i]) | set(old_by[i])
                   if new_by[i].get(k) != old_by[i].get(k)})
    return f"settings changed: {', '.join(keys)}" if keys else None


def budget_warning(cells: list[dict]) -> str | None:
    """The warning of a run whose cells stop on a time budget (errors that depend on the load)."""
    if not any(c.get("time_budget_s") for c in cells):
        return None
    return ("a time budget (--time-budget) stops each cell after a number of steps that depends "
            "on the machine's speed and load, so the errors do too; give --steps alone for "
            "results that reproduce")


def record_run(store: str, cells: list[dict], *, command: str, resume_id: str | None, executor,
               planned: Any = None, mkdir: bool = False, executor_text: str = "",
               ui_mode: str = "rich", prune: bool = True, report: bool = True,
               report_dir: str | None = None, on_result: Callable[[dict], None] | None = None,
               extra_provenance: dict | None = None, resume_hint: str | None = None,
               summary: bool = True) -> int:
    """Run ``cells`` on ``executor`` as a run of ``store``: a new run (id, provenance, with
    ``extra_provenance``), or the run ``resume_id`` claimed again and only its cells without a
    done row; the cells the plan ``planned`` skips stored as skipped with its reason; every row
    written as it finishes, then handed to ``on_result`` (``pinnbench tune`` records its trials
    there); the run marked finished (then the report page, unless ``report`` is false, and the
    summary, unless ``summary`` is false) or interrupted (``resume_hint``: how to go on; default
    the ``pinnbench run --resume`` command). Returns the exit code: 0, 1 when a cell failed with
    an unexpected error, 130 interrupted."""
    from pinnbench.cells import store as store_mod
    from pinnbench.cells.cell import cell_id, now_iso
    from pinnbench.report.console import RunUI
    from pinnbench.cells.machine_load import load_average, overload_warning, physical_cores
    from pinnbench.commands.plan import skipped_row as plan_skipped_row
    from pinnbench.cells.provenance import collect
    from pinnbench.commands.results import write_report_or_note
    from pinnbench.cells.run_lease import planner_id
    from pinnbench.cells.sweep import execute_sweep

    # -- validated: from here on we write ----------------------------------------------------------
    st = store_mod.Store(store, mkdir=mkdir)
    started = now_iso()
    me = planner_id()
    if resume_id:
        run_id = resume_id
        try:
            st.claim_run(run_id, me, started)  # refused while another planner runs it
        except store_mod.RunBusyError as exc:
            st.close()
            raise UsageError(str(exc)) from None
        done = st.done_cells(run_id)
    else:
        run_id = new_run_id()
        done = set()
        provenance = collect("cpu", command=command)
        provenance["executor"] = executor_text
        provenance["physical_cores"] = physical_cores()
        provenance["load_avg_1m_at_start"] = load_average()
        provenance.update(extra_provenance or {})
        st.begin_run(run_id, command, started, cells, provenance, planner=me)

    todo = [c for c in cells if cell_id(c) not in done]
    skips = {cell_id(p.spec): p.reason for p in planned.skipped} if planned else {}
    estimates = {cell_id(p.spec): p.estimate.time_s for p in planned.cells} if planned else {}
    ui = RunUI(ui_mode, run_id, len(todo), len(cells) - len(todo), store, estimates)
    warnings = [w for w in (budget_warning(cells), overload_warning()) if w]
    t0 = time.monotonic()
    rows: list[dict] = []

    def result(row: dict) -> None:
        if on_result is not None:
            on_result(row)
        ui.result(row)

    try:
        with sigterm_as_interrupt(), ui:
            for w in warnings:
                ui.warn(w)
            for spec in todo:  # what the plan skips is stored as such, with its reason
                if cell_id(spec) in skips:
                    row = plan_skipped_row({**spec, "run_id": run_id}, skips[cell_id(spec)])
                    st.write_row(row)
                    rows.append(row)
                    result(row)
            todo = [c for c in todo if cell_id(c) not in skips]
            rows += execute_sweep(todo, run_id=run_id, write=st.write_row, executor=executor,
                                 prune=prune, on_start=ui.start, on_result=result,
                                 heartbeat=lambda: st.heartbeat(run_id, now_iso()))
    except KeyboardInterrupt:
        st.finish_run(run_id, now_iso(), "interrupted")
        st.close()
        print(f"interrupted: finished cells are in {store} (run {run_id}); " + (
            resume_hint or f"`pinnbench run --resume --store {store}` runs the rest"),
            file=sys.stderr)
        return 130
    st.finish_run(run_id, now_iso(), "finished")
    st.close()
    wall = time.monotonic() - t0
    n_error = sum(r["status"] == "error" for r in rows)
    report_path, report_note = None, ""
    if report and rows:
        report_path, report_note = write_report_or_note(store, report_dir, run_id, False)
    if summary:
        ui.summary(rows, wall, report_path, report_note)
    return 1 if n_error else 0
