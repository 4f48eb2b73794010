"""Where the cells of a sweep run: a local process pool (default) or a Dask cluster.

An :class:`Executor` takes normalised cell specs and gives back ``(spec, row)`` pairs as cells
finish; :func:`pinnbench.cells.sweep.execute_sweep` decides what to submit (in increasing d, pruning
after an OOM) and is the only writer of the store. Both executors run every cell the same way: in
its own fresh Python process (:class:`pinnbench.cells.cell.CellProcess`, with the spec's timeout and
memory cap), so the measurements do not depend on the executor.

- :class:`LocalExecutor`: at most ``jobs`` cell processes on this machine, polled from the calling
  thread.
- :class:`DaskExecutor`: each cell is one Dask task (:func:`run_isolated_cell`) that starts the
  same cell process on a worker and returns its row; results come back through ``as_completed``.
  A cell whose device is CUDA asks for one ``GPU`` resource (start GPU workers with
  ``--resources GPU=1``). At most as many cells are in flight as the cluster has slots (worker
  threads, or GPU resources for CUDA cells), so that pruning after an OOM still saves work. A
  worker that dies mid-cell makes the scheduler retry the cell elsewhere (up to its
  ``distributed.scheduler.allowed-failures``), then the cell is an ``error`` row; a cluster left
  without any worker for ``no_worker_timeout_s`` turns the cells in flight into ``error`` rows.

Dask is optional (``pip install pinnbench[dask]``); it is imported only by :class:`DaskExecutor`
and :func:`connect`.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from pinnbench.cells.cell import CellProcess, base_row, now_iso

Spec = dict[str, Any]
Row = dict[str, Any]


class ExecutorError(RuntimeError):
    """The executor cannot be used as asked (Dask missing, scheduler unreachable, ...)."""


class Executor(ABC):
    """Runs isolated cells; the caller submits, polls and, on an interrupt, cancels."""

    #: seconds the sweep loop sleeps between polls while cells are in flight
    poll_s: float = 0.05

    @abstractmethod
    def capacity(self, spec: Spec) -> int:
        """How many cells like ``spec`` may be in flight at once (>= 1)."""

    @abstractmethod
    def submit(self, spec: Spec) -> None:
        """Start the cell ``spec`` (a normalised spec with its ``run_id``)."""

    @abstractmethod
    def in_flight(self) -> int:
        """Cells submitted and not yet returned by :meth:`poll`."""

    @abstractmethod
    def poll(self) -> list[tuple[Spec, Row]]:
        """The cells that finished since the last call, as ``(spec, row)``; does not block."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop every cell in flight (their results are dropped)."""

    def close(self) -> None:
        """Release what the executor holds (clusters it started, connections)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False


# -- local ------------------------------------------------------------------------------------------
class LocalExecutor(Executor):
    """At most ``jobs`` cell processes on this machine (the default executor)."""

    def __init__(self, jobs: int = 1, poll_s: float = 0.05) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
        self.jobs, self.poll_s = jobs, poll_s
        self.running: list[CellProcess] = []

    def capacity(self, spec: Spec) -> int:
        return self.jobs

    def submit(self, spec: Spec) -> None:
        self.running.append(CellProcess(spec))

    def in_flight(self) -> int:
        return len(self.running)

    def poll(self) -> list[tuple[Spec, Row]]:
        done = []
        for proc in list(self.running):
            row = proc.poll()
            if row is not None:
                self.running.remove(proc)
                done.append((proc.spec, row))
        return done

    def cancel(self) -> None:
        for proc in self.running:
            proc.kill()
            try:
                proc.cleanup()
            except OSError:
                pass
        self.running = []


# -- dask: the task that runs on a worker -----------------------------------------------------------
#: cell processes running in this (worker) process, by token, so that a cancelled sweep can kill them
_RUNNING: dict[str, CellProcess] = {}
_RUNNING_LOCK = threading.Lock()


#: thread limits that Dask's nanny puts into its worker's environment (``pre-spawn-environ``)
_NANNY_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_ENV_LOCK = threading.Lock()


def _undo_nanny_thread_limits() -> None:
    """Drop the nanny's ``OMP_NUM_THREADS=1`` (and MKL, OpenBLAS) from this worker's environment,
    which the cell process inherits: a cell then gets torch's default threads, as it does on the
    local executor, unless its spec sets ``threads`` (``--threads``). A variable whose value is
    not the nanny's is kept. The worker's own libraries are already initialised: unaffected."""
    try:
        import dask

        pre = dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {}
    except ImportError:
        return
    with _ENV_LOCK:
        for name in _NANNY_THREAD_VARS:
            if name in pre and os.environ.get(name) == str(pre[name]):
                del os.environ[name]


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def run_isolated_cell(spec: Spec, token: str) -> Row:
    """The Dask task: run the normalised ``spec`` in its own process on this worker (exactly as the
    local executor does) and return its row. ``token`` names the cell for :func:`kill_cells`."""
    in_worker = _in_dask_worker()
    if in_worker:
        _undo_nanny_thread_limits()
    proc = CellProcess(spec)
    with _RUNNING_LOCK:
        _RUNNING[token] = proc
    try:
        row = proc.wait()
    finally:
        with _RUNNING_LOCK:
            _RUNNING.pop(token, None)
        proc.kill()
    if in_worker:
        from distributed import get_worker

        row.setdefault("provenance", {})["dask_worker"] = get_worker().address
    return row


def kill_cells(tokens: list[str] | None = None) -> int:
    """Kill the cell processes of this worker named by ``tokens`` (all when None); run on every
    worker through ``Client.run`` when a sweep is interrupted. Returns how many were killed."""
    with _RUNNING_LOCK:
        procs = [p for t, p in _RUNNING.items() if tokens is None or t in tokens]
    for proc in procs:
        proc.kill()
    return len(procs)


# -- dask: the client side ----------------------------------------------------------------------------
DASK_MISSING = ("--executor dask needs Dask's distributed scheduler, which is not installed; "
                "install it with `pip install 'pinnbench[dask]'` (or `pip install 'dask[distributed]'`)")

#: seconds to wait for a scheduler to answer before giving up on its address
CONNECT_TIMEOUT_S = 10.0


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ExecutorError(DASK_MISSING) from None
    return distributed


def dask_available() -> bool:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return False
    return True


def check_scheduler_address(address: str) -> str:
    """``tcp://host:port`` (or another Dask protocol such as ``tls://``, ``inproc://``,
    ``ucx://``), or a bare ``host:port`` read as tcp. Raises ValueError for anything else."""
    text = address.strip()
    protocol, sep, rest = text.partition("://")
    if not sep:
        protocol, rest = "tcp", text
    if protocol not in ("tcp", "tls", "inproc", "ucx", "ws", "wss"):
        raise ValueError(f"bad scheduler address {address!r}: unknown protocol {protocol!r}; "
                         "expected tcp://HOST:PORT (for example tcp://10.0.0.5:8786)")
    if protocol != "inproc":
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad scheduler address {address!r}: expected "
                             f"{protocol}://HOST:PORT (for example tcp://10.0.0.5:8786)")
    return f"{protocol}://{rest}"


def connect(scheduler: str, timeout_s: float | None = None):
    """A ``distributed.Client`` connected to an existing scheduler. Raises ExecutorError when Dask
    is missing or nothing answers at ``scheduler`` within ``timeout_s`` (default
    :data:`CONNECT_TIMEOUT_S`)."""
    distributed = _import_distributed()
    try:
        address = check_scheduler_address(scheduler)
    except ValueError as exc:
        raise ExecutorError(str(exc)) from None
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        return distributed.Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ExecutorError(f"cannot reach the Dask scheduler at {address!r} within "
                            f"{timeout_s:g} s ({type(exc).__name__}: {str(exc).strip()[:200]}); "
                            "is it running and is the address right?") from None


def local_cluster(n_workers: int, gpu: bool = False, retries: int = 1):
    """A ``distributed.LocalCluster`` of ``n_workers`` worker processes with one thread each (one
    cell at a time per worker), no memory limit on the worker (cells have their own), no
    dashboard. ``gpu``: each worker advertises one ``GPU`` resource (they all see the same
    devices: for several GPUs start one worker per GPU with CUDA_VISIBLE_DEVICES, see
    docs/dask.md); the workers keep this process's thread variables (OMP_NUM_THREADS, ...), which
    Dask would otherwise set to 1. ``retries``: how often a cell whose worker died is run again before it is an
    ``error`` row (the scheduler's ``allowed-failures``)."""
    import logging

    distributed = _import_distributed()
    import dask

    # the nanny would put OMP_NUM_THREADS=1 (and MKL, OpenBLAS) into this process's environment and
    # its workers': None keeps both as they are, so cells get the threads they get locally
    no_thread_caps = {f"distributed.nanny.pre-spawn-environ.{v}": None for v in _NANNY_THREAD_VARS}
    with dask.config.set({"distributed.scheduler.allowed-failures": int(retries),
                          **no_thread_caps}):
        return distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, memory_limit=0,
            dashboard_address=":0", silence_logs=logging.ERROR,
            resources={"GPU": 1} if gpu else None)


def _portable(spec: Spec) -> Spec:
    """The spec with plugin files as absolute paths (a worker's working directory may differ)."""
    imports = [str(Path(i).resolve()) if i.endswith(".py") else i for i in spec.get("imports") or []]
    return {**spec, "imports": imports}


def _is_cuda(spec: Spec) -> bool:
    return str(spec.get("device", "cpu")).startswith("cuda")


class DaskExecutor(Executor):
    """Cells as Dask tasks on the cluster behind ``client``.

    ``cluster``: a cluster this executor owns and closes with the client (``--local-workers``);
    ``no_worker_timeout_s``: after the cluster has had no worker this long while cells are in
    flight, they become ``error`` rows (None: wait for workers forever)."""

    def __init__(self, client: Any, cluster: Any = None, *,
                 no_worker_timeout_s: float | None = 600.0, poll_s: float = 0.1,
                 info_every_s: float = 1.0) -> None:
        distributed = _import_distributed()
        self.client, self.cluster = client, cluster
        self.no_worker_timeout_s, self.poll_s, self.info_every_s = (no_worker_timeout_s, poll_s,
                                                                    info_every_s)
        self._completed = distributed.as_completed(loop=client.loop)
        self._futures: dict[Any, tuple[Spec, str]] = {}  # future -> (spec, token)
        self._info_at = -float("inf")
        self._slots = {"cpu": 1, "gpu": 0}
        self._last_worker_seen = time.monotonic()

    @classmethod
    def from_options(cls, scheduler: str | None = None, local_workers: int | None = None,
                     gpu: bool = False, **kwargs: Any) -> "DaskExecutor":
        """Connect to ``scheduler``, or start a LocalCluster of ``local_workers`` processes."""
        distributed = _import_distributed()
        if (scheduler is None) == (local_workers is None):
            raise ExecutorError("--executor dask needs --scheduler ADDRESS or --local-workers N "
                                "(one of them)")
        if scheduler is not None:
            client = connect(scheduler)
            try:
                return cls(client, **kwargs)
            except BaseException:
                client.close()
                raise
        cluster = local_cluster(local_workers, gpu=gpu)
        client = None
        try:
            client = distributed.Client(cluster, set_as_default=False)
            return cls(client, cluster, **kwargs)
        except BaseException:
            if client is not None:
                client.close()
            cluster.close()
            raise

    # -- cluster state --------------------------------------------------------------------------------
    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._info_at < self.info_every_s:
            return
        self._info_at = now
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        if workers:
            self._last_worker_seen = now
        self._slots = {
            "cpu": sum(int(w.get("nthreads") or 1) for w in workers.values()),
            "gpu": int(sum(float((w.get("resources") or {}).get("GPU", 0)) for w in workers.values())),
        }

    def workers(self) -> dict[str, Any]:
        return self.client.scheduler_info(n_workers=-1).get("workers", {})

    def capacity(self, spec: Spec) -> int:
        self._refresh()
        return max(1, self._slots["gpu" if _is_cuda(spec) else "cpu"])

    # -- cells ---------------------------------------------------------------------------------------
    def submit(self, spec: Spec) -> None:
        token = uuid.uuid4().hex[:12]
        key = (f"pinnbench-cell-{spec.get('problem')}-d{spec.get('dim')}-"
               f"{spec.get('solver_name', 'solver')}-s{spec.get('seed')}-{token}")
        future = self.client.submit(run_isolated_cell, _portable(spec), token, key=key, pure=False,
                                    resources={"GPU": 1} if _is_cuda(spec) else None)
        self._futures[future] = (spec, token)
        self._completed.add(future)

    def in_flight(self) -> int:
        return len(self._futures)

    def poll(self) -> list[tuple[Spec, Row]]:
        done = []
        for future in self._completed.next_batch(block=False) if self._completed.has_ready() else []:
            spec, _ = self._futures.pop(future)
            done.append((spec, self._row(future, spec)))
        if self._futures and self.no_worker_timeout_s is not None:
            self._refresh()
            idle = time.monotonic() - self._last_worker_seen
            if idle >= self.no_worker_timeout_s:
                for future, (spec, _) in list(self._futures.items()):
                    future.cancel()
                    self._futures.pop(future)
                    done.append((spec, _error_row(
                        spec, f"no Dask worker was connected to the scheduler for {idle:.0f} s "
                        "(--no-worker-timeout); the cell was not run")))
                self._completed.clear()
        return done

    def _row(self, future: Any, spec: Spec) -> Row:
        if future.status == "finished":
            try:
                return future.result()
            except Exception as exc:  # noqa: BLE001 - a lost result is an error row
                return _error_row(spec, f"the cell's result could not be fetched from its Dask "
                                  f"worker ({type(exc).__name__}: {exc})")
        exc = None
        if future.status == "error":
            try:
                exc = future.exception(timeout=5)
            except Exception as e:  # noqa: BLE001
                exc = e
        name = type(exc).__name__ if exc is not None else future.status
        if name == "KilledWorker":
            message = ("the Dask worker running this cell died (and every retry's worker too): "
                       f"{str(exc).strip()[:300]}")
        elif exc is None:
            message = f"the Dask task of this cell ended as {future.status!r} without a result"
        else:
            message = f"the Dask task of this cell failed ({name}: {str(exc).strip()[:300]})"
        return _error_row(spec, message)

    def cancel(self) -> None:
        tokens = [token for _, token in self._futures.values()]
        futures = list(self._futures)
        self._futures.clear()
        self._completed.clear()
        try:
            self.client.cancel(futures, force=True)
            if tokens:
                self.client.run(kill_cells, tokens, on_error="ignore")
        except Exception:  # noqa: BLE001 - best effort: the cells die with their workers anyway
            pass

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def _error_row(spec: Spec, message: str) -> Row:
    row = base_row(spec)
    row["status"] = "error"
    row["message"] = message
    row["started_at"] = row["finished_at"] = now_iso()
    row["steps_done"] = 0
    return row
