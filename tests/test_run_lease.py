"""Which planner runs a run: alive on this host by pid and start time, elsewhere by heartbeat."""

import os
import socket
from datetime import datetime, timedelta, timezone

from pinnbench.cells import run_lease


def test_this_process_is_alive_and_a_dead_or_reused_pid_is_not():
    me = run_lease.planner_id()
    assert me.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert run_lease.planner_alive(me, None)
    host = socket.gethostname()
    assert not run_lease.planner_alive(f"{host}:999999999:1", None)
    # same pid, another start time: the pid was reused by another process
    assert not run_lease.planner_alive(f"{host}:{os.getpid()}:1", None)
    assert run_lease.shown_status("running", f"{host}:999999999:1", None) == "interrupted"
    assert run_lease.shown_status("finished", None, None) == "finished"


def test_other_hosts_are_judged_by_their_heartbeat():
    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    fresh = (now - timedelta(seconds=10)).isoformat()
    stale = (now - timedelta(seconds=run_lease.STALE_AFTER_S + 1)).isoformat()
    assert run_lease.planner_alive("elsewhere.example:12:34", fresh, now=now)
    assert not run_lease.planner_alive("elsewhere.example:12:34", stale, now=now)
    assert not run_lease.planner_alive(None, None)
