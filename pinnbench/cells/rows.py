"""Result rows: the one builder of a cell's row (the columns of :mod:`pinnbench.cells.schema`), for a
cell that ran, and for one that never finished (timeout, killed, pruned, crashed)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pinnbench.cells.cellspec import cell_id
from pinnbench.cells.schema import COLUMNS


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_row(spec: dict[str, Any]) -> dict[str, Any]:
    """A row with the spec's fields filled and every measurement empty (None)."""
    row: dict[str, Any] = {k: None for k in COLUMNS}
    for k in ("problem", "dim", "solver", "solver_name", "seed", "steps", "width", "depth",
              "device", "dtype"):
        row[k] = spec.get(k)
    row["solver_params"] = spec.get("solver_params") or {}
    row["time_budget_s"] = spec.get("time_budget_s")
    row["ranks"] = spec.get("ranks", 1)
    row["run_id"] = spec.get("run_id") or ""
    row["cell_id"] = cell_id(spec)
    row["message"] = ""
    row["curve"] = []
    row["provenance"] = {}
    return row


def unfinished_row(spec: dict[str, Any], status: str, message: str, *,
                   partial: dict[str, Any] | None = None, started_at: str | None = None,
                   total_time_s: float | None = None) -> dict[str, Any]:
    """The row of a cell that did not return one: its last partial row when it reported one
    (the error curve so far), else an empty row; with ``status`` and ``message``."""
    row = dict(partial) if partial else base_row(spec)
    if not partial:
        row["started_at"] = started_at
    row["status"], row["message"] = status, message
    row["total_time_s"] = total_time_s
    row["finished_at"] = now_iso()
    return row
