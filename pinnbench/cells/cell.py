"""One measured cell: (problem, d, solver spec, seed, steps, model, device, dtype) -> a result row.

``run_cell(spec)`` runs the cell **isolated** by default: in a fresh Python process
(:mod:`pinnbench.cells.isolation`) with the spec's timeout and memory cap, so that an out-of-memory,
a crash or a hang cannot take the caller down and the peak memory belongs to this cell alone.
``run_cell(spec, isolated=False)`` runs it in the calling process (handy in a debugger; peak
memory then includes whatever the caller holds, and a crash is the caller's).

The pieces: the spec and its validation (:mod:`pinnbench.cells.cellspec`), the measurement in the
cell's process (:mod:`pinnbench.cells.measurement`), the rows (:mod:`pinnbench.cells.rows`), the child
process (:mod:`pinnbench.cells.isolation`). This module joins them.
"""

from __future__ import annotations

from typing import Any

from pinnbench.cells.cellspec import DEFAULTS, IDENTITY_KEYS, cell_id, normalize_spec
from pinnbench.cells.isolation import STATUS_OF_ENDING, Ended, Isolated, is_oom
from pinnbench.cells.measurement import eval_steps, execute
from pinnbench.plugins import import_plugins
from pinnbench.cells.rows import base_row, now_iso, unfinished_row

__all__ = ["DEFAULTS", "IDENTITY_KEYS", "CellProcess", "base_row", "cell_id", "eval_steps",
           "execute", "import_plugins", "is_oom", "normalize_spec", "now_iso", "run_cell"]


def _execute_in_child(spec: dict[str, Any], report) -> dict[str, Any]:
    """The isolated cell's entry point (:func:`pinnbench.cells.isolation._child_main` calls it)."""
    return execute(spec, report=report)


class CellProcess:
    """A cell running in its own process; ``poll()`` returns its row once it is over (after
    killing it at the spec's timeout), else None."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.started_at = now_iso()
        if spec.get("ranks", 1) > 1:  # one process per rank (docs/sharding.md)
            from pinnbench.cells.sharded_measurement import start

            self._run = start(spec)
            return
        self._run = Isolated("pinnbench.cells.cell:_execute_in_child", spec,
                             timeout_s=spec.get("timeout_s"),
                             memory_limit_bytes=spec.get("memory_limit_bytes"),
                             imports=spec.get("imports") or [])

    @property
    def elapsed_s(self) -> float:
        return self._run.elapsed_s

    def kill(self) -> None:
        self._run.kill()

    def cleanup(self) -> None:
        self._run.cleanup()

    def poll(self) -> dict[str, Any] | None:
        ended = self._run.poll()
        return None if ended is None else self._row(ended)

    def wait(self) -> dict[str, Any]:
        return self._row(self._run.wait())

    def _row(self, ended) -> dict[str, Any]:
        if not isinstance(ended, Ended):  # the ranks of a sharded cell
            from pinnbench.cells.sharded_measurement import cell_row

            return cell_row(self.spec, ended, self.started_at)
        if ended.how == "returned" and "cell_id" in ended.result:
            return ended.result
        if ended.how == "returned":  # the cell runner itself raised (a bug): say so as a row
            return unfinished_row(self.spec, ended.result.get("status", "error"),
                                  ended.result.get("message", ""), partial=ended.progress,
                                  started_at=self.started_at, total_time_s=ended.elapsed_s)
        status = STATUS_OF_ENDING[ended.how]
        partial = ended.progress
        steps = (partial or {}).get("steps_done") or 0
        if ended.how == "timeout":
            message = (f"the cell exceeded its timeout of {self.spec['timeout_s']:g} s and was "
                       f"killed after {steps} steps")
        else:
            message = f"the cell process {ended.message}"
        return unfinished_row(self.spec, status, message, partial=partial,
                              started_at=self.started_at, total_time_s=ended.elapsed_s)


def run_cell(spec: dict[str, Any], isolated: bool = True) -> dict[str, Any]:
    """Run one cell and return its result row (a dict with the columns of
    :mod:`pinnbench.cells.schema`, JSON columns as Python objects).

    ``isolated=True`` (default): in a fresh process with ``spec["timeout_s"]`` and
    ``spec["memory_limit_bytes"]`` applied; ``isolated=False``: in this process (no timeout, no
    memory cap). The spec is validated first (ValueError on a bad spec)."""
    spec = normalize_spec(spec)
    if not isolated:
        if spec["ranks"] > 1:
            raise ValueError(f"a sharded cell (ranks={spec['ranks']}) runs as one process per "
                             "rank: run it isolated")
        return execute(spec)
    proc = CellProcess(spec)
    try:
        return proc.wait()
    finally:
        proc.kill()
        proc.cleanup()
