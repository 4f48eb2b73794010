"""Provenance of the reported runs, read from each row's ``provenance`` JSON dict.

Keys looked for (every one optional here: a missing key shows as "-"), as written by
``pinnbench.cells.provenance.collect``: ``pinnbench_version``, ``git_sha``, ``git_dirty``, ``python``,
``torch``, ``cuda``, ``cudnn``, ``device``, ``device_name``, ``cpu``, ``cpu_count``,
``torch_threads`` (or ``threads``), ``host``, ``platform``, ``command`` (or ``argv``, a list), and
for the memory figure the total memory of the measured device: ``gpu_total_memory_bytes``
(``torch.cuda.get_device_properties(dev).total_memory``; ``device_total_memory_bytes`` also read)
and ``host_memory_bytes`` (``os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")``) for cells
measured on the CPU. Any other key is shown after these; per-process keys (``pid``) are not.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import pandas as pd

#: (heading, keys read, first present wins), shown first and in this order
KNOWN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pinnbench", ("pinnbench_version",)),
    ("git sha", ("git_sha",)),
    ("dirty", ("git_dirty",)),
    ("python", ("python",)),
    ("torch", ("torch",)),
    ("CUDA", ("cuda",)),
    ("cuDNN", ("cudnn",)),
    ("device", ("device_name",)),
    ("torch device", ("device",)),
    ("device memory", ("gpu_total_memory_bytes", "device_total_memory_bytes")),
    ("CPU", ("cpu",)),
    ("CPU cores", ("cpu_count",)),
    ("threads", ("torch_threads", "threads")),
    ("host", ("host",)),
    ("host memory", ("host_memory_bytes",)),
    ("platform", ("platform",)),
    ("command line", ("command", "argv")),
)

#: keys that differ in every cell by nature and say nothing about the numbers
SKIPPED_KEYS = frozenset({"pid"})

#: at most this many distinct values of a key are listed for one run
MAX_VALUES = 4

#: where the total memory of the measured device is looked up, per memory kind
TOTAL_MEMORY_KEYS = {
    "gpu": ("gpu_total_memory_bytes", "device_total_memory_bytes"),
    "cpu": ("host_memory_bytes",),
}


def total_memory_bytes(prov: dict, kind: str) -> int | None:
    """Total memory of the device a cell measured (``kind`` is ``gpu`` or ``cpu``), if recorded."""
    for key in TOTAL_MEMORY_KEYS[kind]:
        v = prov.get(key)
        try:
            b = int(v)
        except (TypeError, ValueError):
            continue
        if b > 0:
            return b
    return None


def device_label(prov: dict, kind: str) -> str:
    if kind == "gpu":
        return str(prov.get("device_name") or "GPU")
    return str(prov.get("host") or prov.get("cpu") or "host") + " RAM"


def format_value(key: str, value: Any) -> str:
    if value is None or value == "":
        return "-"
    if key in ("argv", "command"):
        if isinstance(value, (list, tuple)):
            return shlex.join(str(v) for v in value)
        return str(value)
    if key.endswith("_bytes"):
        try:
            return format_bytes(float(value))
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(_rounded(value), sort_keys=True, default=str, ensure_ascii=False)
    return str(_rounded(value))


#: significant digits of the floats the provenance table shows (timings such as
#: ``cuda_init_time_s`` are stored to the last bit; four digits say what they mean)
DIGITS = 4


def _rounded(value: Any) -> Any:
    """Floats (also inside dicts and lists) to :data:`DIGITS` significant digits."""
    if isinstance(value, float):
        return float(f"{value:.{DIGITS}g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def format_bytes(b: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(b) >= size:
            return f"{b / size:.3g} {unit}"
    return f"{b:.0f} B"


def provenance_table(df: pd.DataFrame) -> tuple[list[str], list[dict]]:
    """(headings, rows): one row per run, one value per heading; values that differ between the
    run's cells (a Dask sweep spans hosts) are listed, separated by "; "."""
    known = {k for _, keys in KNOWN for k in keys}
    extra = sorted({k for prov in df["provenance"] for k in prov
                    if k not in known and k not in SKIPPED_KEYS})
    columns = list(KNOWN) + [(k, (k,)) for k in extra]
    rows = []
    for run_id, g in df.groupby("run_id", sort=False):
        values = []
        for _, keys in columns:
            seen: list[str] = []
            for prov in g["provenance"]:
                key = next((k for k in keys if prov.get(k) not in (None, "")), keys[0])
                text = format_value(key, prov.get(key))
                if text not in seen:
                    seen.append(text)
            if len(seen) > 1 and "-" in seen:
                seen.remove("-")
            if len(seen) > MAX_VALUES:
                seen = seen[:MAX_VALUES] + [f"and {len(seen) - MAX_VALUES} more"]
            values.append("; ".join(seen))
        rows.append({"run_id": run_id, "values": values, "n_cells": len(g),
                     "started": _first(g["started_at"], min),
                     "finished": _first(g["finished_at"], max)})
    return [h for h, _ in columns], rows


def _first(values: pd.Series, pick) -> str:
    v = [str(x) for x in values if isinstance(x, str) and x]
    return pick(v) if v else "-"
