"""R processes of one sharded cell on one machine, under torch.distributed (issue 25;
docs/sharding.md).

Each rank is an isolated process (:class:`pinnbench.cells.isolation.Isolated`: a fresh interpreter in
its own session, killed with its group) that joins a process group through a file store in a
fresh folder (``init_method="file://..."``; gloo on CPU, NCCL on CUDA with one GPU per rank),
with ``collective_timeout_s`` as the timeout of every collective, then calls
``target(payload, comm, rank, ranks, report)`` (``"package.module:function"``) with
:class:`pinnbench.cells.sharding.Collectives` on that group.

No hang: the launcher polls every rank; as soon as one ends without a result (it raised, was
killed, ran past ``timeout_s``) or with a failed status (``FAILED_STATUSES``), the others are stopped
(they would wait in their next collective until its timeout) and the run has failed, with the
first failing rank's message. A rank that waits on a dead peer fails by itself at the
collective's timeout, which ends the run the same way.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pinnbench.cells.isolation import Ended, Isolated, _resolve, describe, is_oom, wait_for

BACKENDS = ("gloo", "nccl")


@dataclass
class RanksEnded:
    """How each rank ended (``ended[r]``), and the first failure ("" when every rank returned
    ``status: ok``)."""

    ended: list[Ended]
    failure: str
    failed_rank: int | None = None

    @property
    def ok(self) -> bool:
        return not self.failure

    @property
    def results(self) -> list[dict | None]:
        return [e.result for e in self.ended]


#: a rank that returned one of these statuses has failed (a cell's row says ``error``, ``oom``
#: or ``timeout``; any other status, e.g. ``skipped`` or ``diverged``, is every rank's result)
FAILED_STATUSES = ("error", "oom", "timeout")


def _ok(e: Ended) -> bool:
    return e.how == "returned" and (e.result or {}).get("status") not in FAILED_STATUSES


def _why(rank: int, e: Ended) -> str:
    if e.how == "returned":
        r = e.result or {}
        return f"rank {rank} {r.get('status', 'error')}: {r.get('message', '')}"
    return f"rank {rank} {e.message}"


class RankProcesses:
    """``target`` running as ``ranks`` processes of one process group (module docstring);
    ``poll()`` returns a :class:`RanksEnded` once every rank is over, else None. ``timeout_s``
    bounds each rank's wall time; ``collective_timeout_s`` each collective's."""

    def __init__(self, target: str, payload: dict, ranks: int, *, backend: str = "gloo",
                 timeout_s: float | None = None, collective_timeout_s: float = 300.0,
                 memory_limit_bytes: int | None = None, imports: list[str] = ()) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
            raise ValueError(f"ranks must be a positive integer, got {ranks!r}")
        self.folder = Path(tempfile.mkdtemp(prefix="pinnbench-ranks-"))
        self.runs = [Isolated("pinnbench.cells.shard_launch:rank_main", {
            "target": target, "payload": payload, "rank": r, "ranks": ranks,
            "backend": backend, "init_method": f"file://{self.folder / 'store'}",
            "collective_timeout_s": collective_timeout_s,
        }, timeout_s=timeout_s, memory_limit_bytes=memory_limit_bytes, imports=list(imports))
            for r in range(ranks)]
        self.ended: list[Ended | None] = [None] * ranks
        self.failure, self.failed_rank = "", None

    @property
    def elapsed_s(self) -> float:
        return max(run.elapsed_s for run in self.runs)

    def poll(self) -> RanksEnded | None:
        failed = []
        for r, run in enumerate(self.runs):
            if self.ended[r] is None:
                self.ended[r] = run.poll()
                if self.ended[r] is not None and not _ok(self.ended[r]):
                    failed.append(r)
        if failed and not self.failure:
            # several ranks seen ending in one poll: the cause first. A rank that died (killed,
            # timed out) returned nothing; the others' errors (a peer closed the connection)
            # follow from it. Among ranks that raised, the first to raise (rank_main's clock).
            r = min(failed, key=lambda k: (self.ended[k].how == "returned",
                                           (self.ended[k].result or {}).get("failed_at",
                                                                            math.inf)))
            self.failure, self.failed_rank = _why(r, self.ended[r]), r
        if self.failure:  # the others would wait in their next collective: stop them now
            for r, run in enumerate(self.runs):
                if self.ended[r] is None:
                    run.kill()
                    self.ended[r] = Ended("stopped", None, None, "was stopped after another "
                                          f"rank failed ({self.failure})", run.elapsed_s)
                    run.cleanup()
        if any(e is None for e in self.ended):
            return None
        self.cleanup()
        return RanksEnded(list(self.ended), self.failure, self.failed_rank)

    def wait(self, interval_s: float = 0.05) -> RanksEnded:
        return wait_for(self.poll, interval_s)

    def kill(self) -> None:
        for run in self.runs:
            run.kill()

    def cleanup(self) -> None:
        for run in self.runs:
            run.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)


def run_ranks(target: str, payload: dict, ranks: int, **options: Any) -> RanksEnded:
    """Run ``target`` as ``ranks`` processes of one process group and wait for all of them
    (:class:`RankProcesses` for the options)."""
    procs = RankProcesses(target, payload, ranks, **options)
    try:
        return procs.wait()
    finally:
        procs.kill()
        procs.cleanup()


def rank_main(payload: dict, report) -> dict:
    """One rank (the isolated process's target): join the group, run the target, leave."""
    import torch.distributed as dist

    from pinnbench.cells.sharding import Collectives

    rank, ranks = payload["rank"], payload["ranks"]
    if payload["backend"] == "nccl":  # one GPU per rank
        import torch

        torch.cuda.set_device(rank)
    dist.init_process_group(payload["backend"], init_method=payload["init_method"], rank=rank,
                            world_size=ranks,
                            timeout=timedelta(seconds=payload["collective_timeout_s"]))
    try:
        fn = _resolve(payload["target"])
        out = fn(payload["payload"], Collectives(ranks), rank, ranks, report)
    except Exception as exc:  # noqa: BLE001 - a failure is an outcome, timed for the launcher
        out = {"status": "oom" if is_oom(exc) else "error", "message": describe(exc)}
    finally:
        dist.destroy_process_group()
    if isinstance(out, dict) and out.get("status") in FAILED_STATUSES:
        out["failed_at"] = time.time()  # which rank failed first, when several are seen at once
    return out


def describe_ranks(out: RanksEnded) -> dict[str, Any]:
    """A JSON-able account of every rank's ending, for the store."""
    return {"ranks": [{"rank": r, "how": e.how, "elapsed_s": e.elapsed_s,
                       "message": e.message or (e.result or {}).get("message", "")}
                      for r, e in enumerate(out.ended)],
            "failure": out.failure}
