"""One function run in a fresh Python process, and how that process ended.

Used by the cell runner (:mod:`pinnbench.cells.cell`) and by every bench script
(:mod:`pinnbench.bench`), so that "timed out", "out of memory" and "crashed" mean the same
everywhere:

- the child is a new interpreter (``python -c``, a spawn: never a fork of the caller) in a new
  session, so the whole group can be killed, with SIGKILL sent to it if the parent dies (Linux);
- ``target`` is ``"package.module:function"``, called as ``function(payload, report)``; it
  returns a JSON-able dict (an exception it raises is returned as ``{"status": "oom" | "error",
  "message"}``); ``report(obj)`` saves a partial result (the last one survives a kill, e.g. the
  error curve of a cell that timed out);
- ``memory_limit_bytes`` caps the child's address space (RLIMIT_AS) at what it has mapped once
  torch and the plugins are imported plus that headroom, so that an allocation past it fails
  with an error (CPU only: CUDA maps huge virtual ranges);
- the outcome (:class:`Ended`) says how it ended: ``returned``, ``timeout``, ``killed`` (SIGKILL:
  most likely the kernel's out-of-memory killer), ``signal`` (any other signal) or ``exit`` (a
  non-zero exit), each with the tail of the child's output.

:func:`is_oom` is the one classifier of allocation failures (CPU, CUDA, cuBLAS, cuSOLVER).
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

#: lower-case fragments of the RuntimeError messages that mean an allocation failed: the CPU
#: allocator, CUDA's own "out of memory", cuBLAS/cuSOLVER workspaces that could not be allocated,
#: and the caching allocator's NVML assert (raised when cudaMalloc fails under memory pressure)
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory",
                "not enough memory", "cublas_status_alloc_failed", "cusolver_status_alloc_failed",
                "nvml_success == r")

_RETURNED = 0  # exit code of a child that wrote its result

#: how a run that returned nothing ended -> the status of its measurement (SIGKILL: most likely
#: the kernel's out-of-memory killer)
STATUS_OF_ENDING = {"timeout": "timeout", "killed": "oom", "signal": "error", "exit": "error"}


def is_oom(exc: BaseException) -> bool:
    """True for an allocation failure: MemoryError, torch.cuda.OutOfMemoryError, or a
    RuntimeError whose message has one of ``OOM_MESSAGES``."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(s in text for s in OOM_MESSAGES)


def describe(exc: BaseException, limit: int = 500) -> str:
    """``Type: message (at file.py:line)``, the message cut at ``limit`` characters."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {str(exc).strip()[:limit]}{where}"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, default=_json_default)
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


@dataclass
class Ended:
    """How an isolated run ended. ``result``: what the function returned (``returned`` only);
    ``progress``: the last partial result it reported (any ending); ``message``: what happened
    to the process, without a subject ("was killed by SIGKILL ...: <log tail>"), so each caller
    names its own ("the cell process ...")."""

    how: str
    result: dict | None
    progress: dict | None
    message: str
    elapsed_s: float



T = TypeVar("T")


def wait_for(poll: Callable[[], T | None], interval_s: float = 0.05) -> T:
    """Call ``poll`` every ``interval_s`` seconds until it returns something, and return that
    (the wait of one isolated process and of a sharded cell's ranks)."""
    while True:
        out = poll()
        if out is not None:
            return out
        time.sleep(interval_s)

class Isolated:
    """``target(payload, report)`` running in its own process; ``poll()`` returns an
    :class:`Ended` once it is over (after killing it at ``timeout_s``), else None."""

    def __init__(self, target: str, payload: dict, *, timeout_s: float | None = None,
                 memory_limit_bytes: int | None = None, imports: list[str] = ()) -> None:
        self.timeout_s = timeout_s
        self.dir = Path(tempfile.mkdtemp(prefix="pinnbench-run-"))
        write_json_atomic(self.dir / "call.json", {
            "target": target, "payload": payload, "imports": list(imports),
            "memory_limit_bytes": memory_limit_bytes})
        self.log_path = self.dir / "log.txt"
        self.t0 = time.monotonic()
        self._timed_out = False
        env = dict(os.environ)
        # the child imports what the parent could: its working directory and sys.path first
        env["PYTHONPATH"] = os.pathsep.join([os.getcwd()] + [p for p in sys.path if p])
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from pinnbench.cells.isolation import _child_main; _child_main()",
                 str(self.dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=env)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def poll(self) -> Ended | None:
        if self.proc.poll() is None:
            if self.timeout_s is None or self.elapsed_s < self.timeout_s:
                return None
            self._timed_out = True
            self.kill()
        try:
            return self._ended()
        finally:
            self.cleanup()

    def wait(self, interval_s: float = 0.05) -> Ended:
        return wait_for(self.poll, interval_s)

    def log_tail(self, n_chars: int = 600) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return " | ".join(text[-n_chars:].splitlines()[-6:])

    def _ended(self) -> Ended:
        rc, elapsed = self.proc.returncode, self.elapsed_s
        progress = _read_json(self.dir / "progress.json")
        if rc == _RETURNED and not self._timed_out:
            result = _read_json(self.dir / "result.json")
            if result is not None:
                return Ended("returned", result, progress, "", elapsed)
        tail = self.log_tail()
        if self._timed_out:
            return Ended("timeout", None, progress, f"was killed after its timeout of "
                         f"{self.timeout_s:g} s", elapsed)
        if rc == -signal.SIGKILL:
            return Ended("killed", None, progress, "was killed by SIGKILL (most "
                         f"likely the operating system's out-of-memory killer): {tail}", elapsed)
        if rc is not None and rc < 0:
            return Ended("signal", None, progress,
                         f"died from signal {_signal_name(-rc)}: {tail}", elapsed)
        return Ended("exit", None, progress, f"exited with code {rc}: {tail}", elapsed)

    def cleanup(self) -> None:
        """Remove the run's folder (idempotent; after ``poll`` has returned or ``kill``)."""
        if not self.dir.exists():
            return
        for p in self.dir.iterdir():
            p.unlink(missing_ok=True)
        self.dir.rmdir()


def run_isolated(target: str, payload: dict, **options: Any) -> Ended:
    """Run ``target(payload, report)`` in a fresh process and wait for it (see
    :class:`Isolated` for the options)."""
    run = Isolated(target, payload, **options)
    try:
        return run.wait()
    finally:
        run.kill()
        run.cleanup()


def measure_isolated(target: str, payload: dict, **options: Any) -> dict:
    """For the bench scripts: what ``target`` returned (a dict with a ``status``), else
    ``{"status": "timeout" | "oom" | "error", "message": ...}`` (an exception raised by the
    target is ``oom`` or ``error`` by :func:`is_oom`; SIGKILL is ``oom``)."""
    ended = run_isolated(target, payload, **options)
    if ended.how == "returned":
        return ended.result
    return {"status": STATUS_OF_ENDING[ended.how], "message": f"the process {ended.message}"}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _set_parent_death_signal() -> None:
    """Linux: SIGKILL this process when the parent dies (a killed sweep leaves no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            os._exit(3)
    except (OSError, AttributeError):
        pass


def _resolve(target: str) -> Callable[[dict, Callable[[dict], None]], dict]:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _child_main() -> None:
    _set_parent_death_signal()
    folder = Path(sys.argv[1])
    call = json.loads((folder / "call.json").read_text())
    import torch  # noqa: F401 - imported before the address-space cap is measured

    from pinnbench.plugins import import_plugins

    import_plugins(call["imports"])
    fn = _resolve(call["target"])
    limit = call["memory_limit_bytes"]
    if limit:
        import resource

        from pinnbench.memory import virtual_size_bytes

        cap = virtual_size_bytes() + int(limit)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        result = fn(call["payload"], lambda obj: write_json_atomic(folder / "progress.json", obj))
    except Exception as exc:  # noqa: BLE001 - a failure is an outcome: said, not a traceback
        result = {"status": "oom" if is_oom(exc) else "error", "message": describe(exc)}
    write_json_atomic(folder / "result.json", result)
    sys.stdout.flush()
    os._exit(_RETURNED)
