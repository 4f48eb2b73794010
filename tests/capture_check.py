"""Capture-safety of a step, checked on the CPU inside the CUDA simulation (tests/cuda_sim.py).

``with simulated_cuda(): with capture_check() as chk: step()`` records, for what runs inside:

- ``syncs``: host reads (``_local_scalar_dense``, the data-dependent ops of
  :data:`pinnbench.bench.ops.SYNC_OPS`, boolean-mask indexing, ``.tolist()`` / ``.numpy()`` /
  ``.cpu()``) and ``torch.cuda.synchronize`` calls: none may be captured;
- ``host_tensors``: ops that read a tensor of more than one element that lives on the host
  (tagged ``cpu`` by the simulation) while the step runs on CUDA, and a ``copy_`` of any host
  tensor into a CUDA one: a draw from a CPU generator
  copied in, a table built on the host and copied in; and an ``index_put_`` of a host value
  (``t[index] = 1.0``: Python makes the number a host tensor that CUDA copies in, which a
  capture refuses); a captured graph would replay the copy
  from host memory read at capture, i.e. the same numbers every step;
- ``trace``: each op with its tensors' shapes and dtypes, its non-tensor arguments, the values
  of 0-d host tensors (Python scalars) and which of the registered ``generators`` it draws from,
  i.e. what a captured graph freezes. Two steps whose traces differ cannot be one graph
  replayed (a shape or a step size that changes, a branch on a value, a draw from another
  generator): compare them with :func:`first_difference`;
- ``unregistered``: draws from a generator not among ``generators`` (a graph replays such a
  draw with the generator state of the capture: the same numbers every step);
- ``external``: (op, operand, storage) for every operand whose storage the step did not create,
  i.e. the state it reads: a graph reads the addresses it was captured with, so two steps whose
  ``external`` lists differ read state that the eager step rebinds (a new tensor assigned to an
  attribute each step) and a replay would read the captured step's tensors forever.

What only a GPU shows (pinnbench/cuda_graph.py): whether capture succeeds, the graph-safe random
streams of registered generators, the memory of the graph's pool, the time a replay takes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cuda_sim import sim_device
from pinnbench.bench.ops import PYTHON_READS, SYNC_OPS


@dataclass
class CaptureReport:
    syncs: list[str] = field(default_factory=list)
    host_tensors: list[str] = field(default_factory=list)
    trace: list[tuple] = field(default_factory=list)
    unregistered: list[str] = field(default_factory=list)
    external: list[tuple] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return not self.syncs and not self.host_tensors and not self.unregistered


def _leaves(tree) -> list:
    return tree_flatten(tree)[0]


#: ops whose 0-d host operands are the simulation's, not the step's: the fused optimizers group
#: their tensors by the real (CPU) device in C++, so the simulation's CUDA step-size tensor is
#: copied to a "cpu" one for them (on a GPU it is used where it is); recorded without value
SIM_HOST_SCALARS = frozenset({"_fused_adam_", "_fused_adamw_"})


def _host_value(args, kwargs) -> torch.Tensor | None:
    """An index_put's value when it is a host tensor written into a (simulated) CUDA one."""
    value = args[2] if len(args) > 2 else kwargs.get("values")
    if (isinstance(value, torch.Tensor) and sim_device(value) == "cpu"
            and sim_device(args[0]) == "cuda"):
        return value
    return None


def _describe(x, value: bool = True, generators=()):
    if isinstance(x, torch.Generator):
        # the dispatcher wraps the generator anew: the C++ object is its identity
        k = next((k for k, g in enumerate(generators) if g._cdata == x._cdata), None)
        return ("generator", "unregistered" if k is None else k)
    if isinstance(x, torch.Tensor):
        if x.dim() == 0 and sim_device(x) == "cpu":
            return ("scalar", x.dtype, x.item() if value else "?")
        return (tuple(x.shape), x.dtype, sim_device(x))
    if isinstance(x, (torch.dtype, torch.device, torch.layout, torch.memory_format)):
        return str(x)
    return x if isinstance(x, (int, float, bool, str, type(None))) else type(x).__name__


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _Check(TorchDispatchMode):
    def __init__(self, report: CaptureReport, generators=()) -> None:
        super().__init__()
        self.report = report
        self.generators = tuple(generators)
        self.made: set[int] = set()  # the storages the step created

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        r = self.report
        if name in SYNC_OPS:
            r.syncs.append(f"aten::{name}")
        elif name in ("index", "index_put", "index_put_") and any(
                isinstance(t, torch.Tensor) and t.dtype == torch.bool
                for t in _leaves(args[1])):
            r.syncs.append(f"aten::{name} (boolean mask)")
        # the operands only: a factory's result is tagged with its device by the simulation's
        # function mode after this returns, so a host tensor shows when it is used (a copy to
        # the device included)
        tensors = [t for t in _leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        host = [t for t in tensors if sim_device(t) == "cpu" and t.numel() > 1]
        value = _host_value(args, kwargs) if name in ("index_put", "index_put_") else None
        if not host and value is not None:
            # `t[index_tensor] = 1.0` on CUDA: Python makes the value a host tensor and the
            # op copies it in (an H200 refused the capture of bp[hte] for it)
            host = [value]
        if (not host and name == "copy_" and len(args) > 1 and sim_device(args[0]) == "cuda"
                and sim_device(args[1]) == "cpu"):
            # a host number copied in: a copy from pageable host memory, which a capture
            # refuses whatever its size (a 0-d host tensor is a Python scalar to other ops)
            host = [args[1]]
        if host:
            r.host_tensors.append(f"aten::{name} on host tensors "
                                  f"{[tuple(t.shape) for t in host]}")
        value = name not in SIM_HOST_SCALARS
        leaves = _leaves((args, kwargs))
        described = tuple(_describe(a, value, self.generators) for a in leaves)
        if ("generator", "unregistered") in described:
            r.unregistered.append(f"aten::{name}")
        r.trace.append((str(func), described))
        inputs = {_storage(t) for t in tensors}
        op = len(r.trace) - 1
        for j, t in enumerate(tensors):
            if not (t.dim() == 0 and sim_device(t) == "cpu") and _storage(t) not in self.made:
                r.external.append((op, j, _storage(t)))
        self.made.update(_storage(t) for t in _leaves(out)
                         if isinstance(t, torch.Tensor) and _storage(t) not in inputs)
        return out


@contextlib.contextmanager
def capture_check(generators=()):
    """Record what a captured graph could not hold (see the module docstring); use inside
    ``simulated_cuda()``. ``generators``: those registered with the graph."""
    report = CaptureReport()
    saved = {name: getattr(torch.Tensor, name) for name in PYTHON_READS}
    saved_sync = torch.cuda.synchronize

    def wrap(name, method):
        def read(self, *args, **kwargs):
            report.syncs.append(f".{name}()")
            return method(self, *args, **kwargs)
        return read

    def synchronize(*args, **kwargs):
        report.syncs.append("torch.cuda.synchronize")
        return saved_sync(*args, **kwargs)

    try:
        for name, method in saved.items():
            setattr(torch.Tensor, name, wrap(name, method))
        torch.cuda.synchronize = synchronize
        with _Check(report, generators):
            yield report
    finally:
        torch.cuda.synchronize = saved_sync
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


def first_difference(a: list[tuple], b: list[tuple]) -> str | None:
    """Where two traces differ (None when a graph captured from one replays the other)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"op {i}: {x} != {y}"
    if len(a) != len(b):
        return f"{len(a)} ops against {len(b)}"
    return None
