"""How busy the machine is, and what that does to a run's timings.

Time per step is the one measurement that depends on the machine's load: on a shared 2-core
machine steps ran 10-40x slower under load. The run therefore

- gives each CPU cell ``physical cores // cells at once`` torch threads by default, fewer when
  other work already keeps cores busy when the run starts (threads beyond the free cores only
  contend: on a 2-core machine at load 7, two threads made steps 5x slower than one), and
  records the count;
- records the load average when the run starts and when each cell finishes (provenance);
- warns when the load average exceeds the cores, and when a cell's step time varied by more than
  ``UNSTEADY_RATIO`` = 2x between stretches of its training (a sign that something else ran).
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

UNSTEADY_RATIO = 2.0
#: a stretch of training between two logged steps counts when it holds at least this many steps
MIN_STRETCH_STEPS = 16


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """Physical cores this process may run on: distinct (physical id, core id) pairs of
    /proc/cpuinfo, at most the CPUs in the affinity mask; the logical count elsewhere."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            phys = core = None
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                elif not key and phys is not None and core is not None:
                    cores.add((phys, core))
                    phys = core = None
            if phys is not None and core is not None:
                cores.add((phys, core))
    except OSError:
        pass
    return max(1, min(len(cores), usable) if cores else usable)


def default_threads(cells_at_once: int, load: float | None = None) -> int:
    """Torch threads per CPU cell when the user gives none: the physical cores that other work
    leaves free (cores - 1-minute load average, at least 1), divided by the cells at once."""
    cells = max(1, cells_at_once)
    cores = physical_cores()
    load = load_average() if load is None else load
    free = cores if load is None else min(cores, max(1, math.floor(cores - load + 0.5)))
    return max(1, free // cells)


def load_average() -> float | None:
    """The 1-minute load average, or None where the system has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def overload_warning(load: float | None = None, cores: int | None = None) -> str | None:
    """A warning when the load average exceeds the physical cores, else None."""
    load = load_average() if load is None else load
    cores = physical_cores() if cores is None else cores
    if load is None or load <= cores:
        return None
    return (f"the machine is busy (load average {load:g} > {cores} cores): times per step will "
            "be slower and noisier than on an idle machine (--threads 1 contends least)")


def step_time_spread(row: dict[str, Any], warmup: int = 2) -> float | None:
    """Ratio of the slowest to the fastest mean step time over the stretches between the logged
    steps of the row's curve (after the warm-up, stretches of >= MIN_STRETCH_STEPS steps); None
    with fewer than two such stretches."""
    pts = [(c.get("step"), c.get("time_s")) for c in (row.get("curve") or [])
           if isinstance(c, dict)]
    pts = [(int(s), float(t)) for s, t in pts if isinstance(s, (int, float))
           and isinstance(t, (int, float)) and t == t]
    rates = []
    for (s0, t0), (s1, t1) in zip(pts, pts[1:]):
        if s0 >= warmup and s1 - s0 >= MIN_STRETCH_STEPS and t1 > t0:
            rates.append((t1 - t0) / (s1 - s0))
    if len(rates) < 2:
        return None
    return max(rates) / min(rates)


def unsteady_timing_warning(row: dict[str, Any], label: str) -> str | None:
    """A warning when the cell's step time varied by more than UNSTEADY_RATIO, else None."""
    spread = step_time_spread(row)
    if spread is None or spread <= UNSTEADY_RATIO:
        return None
    return (f"{label}: the step time varied {spread:.1f}x within the cell (> {UNSTEADY_RATIO:g}x); "
            "its time per step is not reliable (was the machine busy?)")
