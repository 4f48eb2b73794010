"""Who is running a run: the planner's identity and heartbeat, so that a run whose planner died
shows as ``interrupted`` and two ``--resume`` of one run cannot both run its cells.

The store's ``runs`` row holds ``planner`` (``host:pid:start``: the host name, the process id and
the process's start time in clock ticks since boot, so that a reused pid is not mistaken for the
planner) and ``heartbeat`` (ISO 8601 UTC, refreshed by the planner at least every
``HEARTBEAT_S`` seconds while cells run). A ``running`` run is *alive* when

- its planner is on this host: the process with that pid exists and started at that time;
- its planner is on another host: the heartbeat is younger than ``STALE_AFTER_S``.

A run that is not alive while its status says ``running`` was interrupted (SIGKILL, a crash, a
reboot): ``pinnbench show`` says so and ``--resume`` takes it over. Claiming a run happens in one
write transaction of the store (``Store.claim_run``), so of two resumes started together one
wins and the other is refused.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timezone

HEARTBEAT_S = 30.0
STALE_AFTER_S = 180.0


def _start_ticks(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), None when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = text[text.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def planner_id(pid: int | None = None) -> str:
    """``host:pid:start`` of this process (or of ``pid``)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '?'}"


def _parse(planner: str) -> tuple[str, int, str] | None:
    host, sep, rest = (planner or "").rpartition(":")
    host, sep2, pid = host.rpartition(":")
    if not sep or not sep2:
        return None
    try:
        return host, int(pid), rest
    except ValueError:
        return None


def _age_s(heartbeat: str | None, now: datetime | None = None) -> float | None:
    if not heartbeat:
        return None
    try:
        t = datetime.fromisoformat(heartbeat)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return ((now or datetime.now(timezone.utc)) - t).total_seconds()


def planner_alive(planner: str | None, heartbeat: str | None,
                  now: datetime | None = None) -> bool:
    """True while the run's planner may still be running (module docstring)."""
    parsed = _parse(planner or "")
    if parsed is None:
        age = _age_s(heartbeat, now)
        return age is not None and age < STALE_AFTER_S
    host, pid, start = parsed
    if host == socket.gethostname():
        ticks = _start_ticks(pid)
        return ticks is not None and (start == "?" or ticks == start)
    age = _age_s(heartbeat, now)
    return age is not None and age < STALE_AFTER_S


def shown_status(status: str | None, planner: str | None, heartbeat: str | None) -> str:
    """The status to show for a run: ``interrupted`` for a ``running`` run whose planner is
    gone."""
    if status == "running" and not planner_alive(planner, heartbeat):
        return "interrupted"
    return status or ""


def describe(planner: str | None) -> str:
    parsed = _parse(planner or "")
    if parsed is None:
        return "another process"
    host, pid, _ = parsed
    return f"pid {pid}" + ("" if host == socket.gethostname() else f" on {host}")
