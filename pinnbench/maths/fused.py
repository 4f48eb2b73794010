"""Closed forms compiled into fused kernels (``torch.compile``), with an eager fallback.

A two-body source at d = 10^5 is ~15 elementwise passes over the (n, d) batch in eager mode
(0.38 s for 100 points on one core, 2.4x a GEMM of the step's rows through the first layer);
compiled by inductor into one loop it took 0.058 s in the same process, agreeing to 7e-6 of the
largest value in float32 (the reductions are reordered). On a GPU the eager source is the largest
part of a step at d = 10^7 (reports/gpu-h200/README.md).

:class:`Fused` wraps a function of a batch ``x`` (and further tensors). Its callers use it
only for batches of at least ``MIN_COLUMNS`` coordinates (below that eager is fast enough, and
a compile costs 30-60 s once per machine, then ~3 s per process to load from inductor's on-disk
cache). It runs compiled when

- the batch is on the CPU, or ``PINNBENCH_COMPILE=1`` (``0`` forces eager everywhere; the
  default, ``auto``, compiles on the CPU only: on an H200 at d = 10^7 the compiled source made
  bp's step 1.5x slower than eager in the same session, 429 vs 290 ms, since the column blocks
  sized for CPU memory make the GPU's step a long train of small launches, and a compiled call
  adds its guards to each; reports/gpu-h200/README.md),
- no torch function mode is active (e.g. the CUDA simulation of tests/cuda_sim.py),
- and no compile has failed in this process (a missing C compiler, an unsupported backend):
  the first failure is warned about once and everything stays eager from then on.

Compiled and eager results agree to rounding, not bit for bit: a cell's provenance records
which one ran (:func:`status`).
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import torch

#: closed forms are compiled only for batches of at least this many coordinates (d >= 65,536:
#: the d = 1e5 ... 1e7 cells; the CPU default run and the test suite stay eager)
MIN_COLUMNS = 2**16
#: graphs dynamo may compile per function (orders x dtypes); past it, eager (with a warning)
RECOMPILE_LIMIT = 32
#: auto (default: compile on the CPU only), 1 (everywhere) or 0 (nowhere)
ENV = "PINNBENCH_COMPILE"

_failure: list[str] = []  # the first compile failure of this process, if any
_used: list[bool] = []    # whether a compiled call has run in this process


def _setting() -> str:
    value = os.environ.get(ENV, "auto").lower()
    if value in ("0", "false", "no", "off"):
        return "off"
    return "on" if value in ("1", "true", "yes", "on") else "auto"


def compile_allowed(device: torch.device | None = None) -> bool:
    """Whether a batch on ``device`` (None: any) may run compiled in this process."""
    setting = _setting()
    if _failure or setting == "off":
        return False
    return setting == "on" or device is None or device.type == "cpu"


def status() -> str:
    """How this process ran its closed forms: for a cell's provenance."""
    if _failure:
        return f"eager (compile failed: {_failure[0]})"
    if _setting() == "off":
        return f"eager ({ENV}=0)"
    return "compiled (torch.compile, inductor)" if _used else \
        f"eager (no CPU batch of {MIN_COLUMNS} coordinates or more; {ENV}={_setting()})"


class Fused:
    """``Fused(fn)(x, *args)``: ``fn(x, *args)``, compiled where the rules above allow."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self._compiled: Callable | None = None

    def __call__(self, x: torch.Tensor, *args):
        if not compile_allowed(x.device) or torch._C._is_torch_function_mode_enabled():
            return self.fn(x, *args)
        if self._compiled is None:
            # one graph per (order, dtype, ...) a function is called with: more than dynamo's
            # default of 8 across the problem families
            cfg = torch._dynamo.config
            cfg.recompile_limit = max(cfg.recompile_limit, RECOMPILE_LIMIT)
            self._compiled = torch.compile(self.fn, dynamic=True, fullgraph=True)
        try:
            out = self._compiled(x, *args)
        except _compile_errors() as exc:
            _failure.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
            warnings.warn(f"pinnbench: torch.compile failed, the closed forms run eagerly "
                          f"(same numbers to rounding, slower): {_failure[0]}", RuntimeWarning,
                          stacklevel=2)
            return self.fn(x, *args)
        if not _used:
            _used.append(True)
        return out


def _compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "compiling failed" (not "the computation failed")."""
    errors: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import TorchDynamoException

        errors.append(TorchDynamoException)
    except ImportError:
        pass
    try:
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    except ImportError:
        pass
    return tuple(errors) or (RuntimeError,)
