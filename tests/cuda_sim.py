"""A CPU simulation of the CUDA device path: ``with simulated_cuda() as sim: ...``.

Code inside the block believes it runs on a CUDA machine with one GPU, while every number is
computed on the CPU (so the results are those of the CPU path, bit for bit). Each tensor carries
the device it *would* have (a tag: ``cuda`` or, by default, ``cpu``), each generator the device it
was made for, and every operation is checked the way CUDA checks it. A device regression in the
harness (a tensor left on the CPU, a CPU generator passed to a CUDA sampler, ...) therefore
raises here, in CI, without a GPU: :class:`SimulatedDeviceError`, a ``RuntimeError`` whose
message names the operation; every such error is also recorded in ``sim.errors`` (code that
swallows exceptions cannot hide it).

How (torch 2.x, two Python modes):

- a ``TorchFunctionMode`` (the Python API): ``device=`` arguments naming CUDA run on the CPU and
  tag the result ``cuda``; ``.to(...)`` / ``.cuda()`` / ``.cpu()`` move the tag (with a copy when
  the tag changes, as a real transfer does); ``Tensor.device`` reports ``cuda:0`` and
  ``is_cuda`` / ``get_device()`` agree for a tagged tensor, so the code takes its CUDA branches;
  ``pin_memory()`` / ``is_pinned()`` work as on a CUDA machine (property reads such as
  ``x.device`` reach a function mode as ``__get__`` calls since torch 2.0, which is what makes
  this possible with real CPU tensors: a tensor subclass reporting ``cuda`` cannot be used, as
  autograd on a CPU-only build aborts on any CUDA-typed tensor); a gradient must be on its
  tensor's device (``backward(gradient)``, ``autograd.grad``'s ``grad_outputs`` and results,
  ``.grad``), as the autograd engine checks; every call that receives a generator checks it
  against the device of the operation's output (the ``device=`` argument, else the first tensor
  argument or ``out=``, else the CPU): a mismatch raises, as CUDA does.
- a ``TorchDispatchMode`` (every ATen operation, the backward pass and composite internals
  included): the tensor arguments of each operation must share one tag, except 0-dim CPU tensors
  (Python scalars; CUDA accepts them), the source of a copy (``copy_``, ``_to_copy``) and the
  indices of an indexing operation (CUDA accepts CPU indices); the outputs take the common tag.
- ``torch.Generator`` is replaced by a subclass: ``torch.Generator(device="cuda")`` is a CPU
  generator whose ``.device`` reports ``cuda:0`` (``isinstance(g, torch.Generator)`` still holds
  for every generator); ``set_state`` refuses the state of a generator of the other device
  (CUDA's Philox state is not CPU's MT19937 one), for generators made inside the block.
- the ``torch.cuda`` functions the harness calls are patched: ``is_available`` -> True,
  ``device_count`` -> 1, ``init``, ``synchronize``, ``empty_cache``, seeding: no-ops;
  ``Event`` records the host clock (``elapsed_time`` between two records, in ms);
  ``get_device_name`` / ``get_device_properties`` describe a simulated 80 GiB card;
  ``memory_allocated`` / ``max_memory_allocated`` (and ``_reserved``) /
  ``reset_peak_memory_stats`` / ``mem_get_info`` / ``memory_stats`` count the bytes of the live
  storages tagged ``cuda`` (an approximation of the caching allocator: no block rounding, no
  cache, a storage is freed when its last Python tensor object is).

What it cannot catch:

- anything that only a real GPU shows: kernels, numerics and random streams of CUDA (the numbers
  are the CPU's), out-of-memory, asynchronous errors, streams and synchronisation bugs, timing,
  cuBLAS/cuSOLVER behaviour, the real allocator's peaks;
- operations that never reach a Python mode: code run by torch's own Python functions sees the
  real (CPU) device of a tensor while the function mode is suspended (e.g. inside
  ``Tensor.backward``), compiled code (``torch.compile``), C++ extensions, and tensors made from
  raw memory (``from_numpy`` of a CUDA-tagged array: numpy has no device); the backward of a
  transfer (``.to("cuda")`` of a tensor that requires grad) gives its gradient the tag of the
  gradient, not of the source;
- CUDA's exceptions to the rule that are not listed above (an op that CUDA accepts with a
  non-scalar CPU tensor is reported: extend ``_INDEX_OPS`` / ``_COPY_OPS`` then), and the
  reverse: a 0-dim CPU tensor where CUDA wants a CUDA one (e.g. as ``out=``) is accepted;
- factories that torch's C++ code calls with a tensor's options but no tensor argument: inside
  ``torch.autograd.grad`` they take the device of the outputs being differentiated (the batched
  backward of ``is_grads_batched=True`` makes such zeros for sliced inputs, which a real GPU puts
  on the GPU); elsewhere they are tagged CPU, which can only raise a false alarm (check such an
  error against the op), never hide a bug;
- ``torch.device("cuda")`` (no index) compares unequal to ``cuda:0`` exactly as with CUDA: that
  is kept, not hidden.
Only one simulation can be active at a time, in the thread that entered it.
"""

from __future__ import annotations

import contextlib
import time
import types
import weakref
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["SimulatedDeviceError", "CudaSim", "simulated_cuda", "sim_device", "RealGenerator"]

#: the device a CUDA-tagged tensor or generator reports (what real CUDA reports: an index)
CUDA0 = torch.device("cuda", 0)
CPU = torch.device("cpu")
#: attribute names kept on tensors and generators
_TAG = "_cuda_sim_device"
_PINNED = "_cuda_sim_pinned"
_COUNTED = "_cuda_sim_counted"
_STATE_OF = "_cuda_sim_state_of"
#: simulated card: total memory reported by get_device_properties and mem_get_info
TOTAL_MEMORY = 80 * 2**30
DEVICE_NAME = "Simulated CUDA device (tests/cuda_sim.py, computed on the CPU)"

RealGenerator = torch._C.Generator

aten = torch.ops.aten
#: the source may be on any device (a transfer): the output takes the tag of the destination
#: (copy_), else of the source (_to_copy: the function mode then gives it the requested device)
_COPY_OPS = {aten.copy_, aten._copy_from, aten._copy_from_and_resize, aten.lift_fresh,
             aten.lift_fresh_copy, aten._to_copy, aten.copy}
#: CUDA accepts indices on the CPU (argument 1, a list of optional tensors)
_INDEX_OPS = {aten.index, aten._unsafe_index, aten.index_put, aten.index_put_,
              aten._index_put_impl_, aten._unsafe_index_put}

_DEVICE_DESC = torch._C.TensorBase.device
_IS_CUDA_DESC = torch._C.TensorBase.is_cuda
_GRAD_DESC = torch._C.TensorBase.grad
_IS_CPU_DESC = getattr(torch._C.TensorBase, "is_cpu", None)

#: the Tensor methods the function mode answers itself
_METHODS = {getattr(torch._C.TensorBase, n): n for n in ("to", "cuda", "cpu", "get_device",
                                                          "pin_memory", "is_pinned")}

_ACTIVE: "CudaSim | None" = None


class SimulatedDeviceError(RuntimeError):
    """A device error that CUDA would raise (cross-device operation, generator on the wrong
    device), found by the simulation."""


def sim_device(obj: Any) -> str:
    """The simulated device type of a tensor or generator: ``"cuda"`` or ``"cpu"``."""
    if isinstance(obj, torch.Tensor):
        return getattr(obj, _TAG, "cpu")
    if isinstance(obj, RealGenerator):
        return getattr(obj, _TAG, None) or RealGenerator.device.__get__(obj).type
    raise TypeError(f"not a tensor or generator: {type(obj).__name__}")


def _target(device: Any) -> str:
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type not in ("cpu", "cuda"):
        raise SimulatedDeviceError(f"the CUDA simulation knows cpu and cuda, not {dev}")
    if dev.type == "cuda" and dev.index not in (None, 0):
        raise SimulatedDeviceError(f"{dev}: the simulated machine has one GPU (cuda:0)")
    return dev.type


def _name(func: Any) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or str(func)
    return str(name)


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


class _GeneratorMeta(type(RealGenerator)):
    """``isinstance(g, torch.Generator)`` holds for every generator while the class is patched."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, RealGenerator)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, RealGenerator)


class SimGenerator(RealGenerator, metaclass=_GeneratorMeta):
    """``torch.Generator`` inside the simulation: a CPU generator that remembers the device it was
    asked for; ``.device`` reports it (``cuda:0`` for CUDA)."""

    def __new__(cls, device: Any = "cpu") -> "SimGenerator":
        kind = _target(device)
        g = RealGenerator.__new__(cls, "cpu")
        setattr(g, _TAG, kind)
        return g

    def __init__(self, device: Any = "cpu") -> None:  # noqa: D107 - all done in __new__
        pass

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return CUDA0 if getattr(self, _TAG, "cpu") == "cuda" else CPU

    def get_state(self) -> torch.Tensor:
        state = super().get_state()
        setattr(state, _STATE_OF, sim_device(self))
        return state

    def set_state(self, state: torch.Tensor) -> "SimGenerator":
        """CPU (MT19937) and CUDA (Philox) states differ: CUDA rejects the other's state."""
        of = getattr(state, _STATE_OF, "cpu")
        if of != sim_device(self):
            msg = (f"Generator.set_state: a {of} generator's state given to a "
                   f"{sim_device(self)} generator (the state formats differ)")
            if _ACTIVE is not None:
                raise _ACTIVE.fail(msg)
            raise SimulatedDeviceError(msg)
        super().set_state(state)
        return self


class CudaSim:
    """State of one simulation: the errors raised, the simulated GPU memory, op counts."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allocated = 0
        self.peak = 0
        self.ops = 0
        self.cuda_ops = 0
        #: the device of the graph whose backward the autograd engine is running (a stack)
        self.engine_device: list[str] = []
        self._storages: dict[int, list[int]] = {}  # data_ptr -> [nbytes, live tensor objects]

    # -- errors ---------------------------------------------------------------------------------
    def fail(self, message: str) -> SimulatedDeviceError:
        text = f"{message} [simulated CUDA, tests/cuda_sim.py]"
        self.errors.append(text)
        return SimulatedDeviceError(text)

    # -- tags and memory ------------------------------------------------------------------------
    def tag(self, t: torch.Tensor, kind: str) -> None:
        if kind == "cuda":
            setattr(t, _TAG, "cuda")
            if not getattr(t, _COUNTED, False):
                self._count(t)
        elif getattr(t, _TAG, "cpu") != "cpu":
            setattr(t, _TAG, "cpu")

    def _count(self, t: torch.Tensor) -> None:
        try:
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
        except (RuntimeError, NotImplementedError):
            return
        setattr(t, _COUNTED, True)
        entry = self._storages.get(ptr)
        if entry is None:
            entry = self._storages[ptr] = [nbytes, 0]
            self.allocated += nbytes
            self.peak = max(self.peak, self.allocated)
        entry[1] += 1
        weakref.finalize(t, self._release, ptr).atexit = False

    def _release(self, ptr: int) -> None:
        entry = self._storages.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            self.allocated -= entry[0]
            del self._storages[ptr]

    def reset_peak(self, *args: Any, **kwargs: Any) -> None:
        self.peak = self.allocated

    # -- torch.cuda replacements ----------------------------------------------------------------
    def cuda_functions(self) -> dict[str, Any]:
        def noop(*args: Any, **kwargs: Any) -> None:
            return None

        def properties(device: Any = None) -> types.SimpleNamespace:
            return types.SimpleNamespace(name=DEVICE_NAME, total_memory=TOTAL_MEMORY, major=9,
                                         minor=0, multi_processor_count=132,
                                         is_integrated=False, is_multi_gpu_board=False,
                                         uuid="GPU-00000000-0000-0000-0000-simulated000")

        def stats(device: Any = None) -> dict[str, int]:
            return {"allocated_bytes.all.current": self.allocated,
                    "allocated_bytes.all.peak": self.peak,
                    "reserved_bytes.all.current": self.allocated,
                    "reserved_bytes.all.peak": self.peak}

        class Event:
            """``torch.cuda.Event``: records the host clock (the simulated device is the CPU,
            whose work is done when the call returns)."""

            def __init__(self, enable_timing: bool = False, **kwargs: Any) -> None:
                self.t = None

            def record(self, stream: Any = None) -> None:
                self.t = time.perf_counter()

            def synchronize(self) -> None:
                return None

            def query(self) -> bool:
                return True

            def elapsed_time(self, end: "Event") -> float:
                return (end.t - self.t) * 1e3

        return {
            "Event": Event,
            "is_available": lambda: True,
            "is_initialized": lambda: True,
            "device_count": lambda: 1,
            "current_device": lambda: 0,
            "set_device": noop,
            "init": noop,
            "_lazy_init": noop,
            "synchronize": noop,
            "empty_cache": noop,
            "ipc_collect": noop,
            "manual_seed": noop,
            "manual_seed_all": noop,
            "seed": noop,
            "seed_all": noop,
            "get_device_name": lambda device=None: DEVICE_NAME,
            "get_device_capability": lambda device=None: (9, 0),
            "get_device_properties": properties,
            "memory_allocated": lambda device=None: self.allocated,
            "max_memory_allocated": lambda device=None: self.peak,
            "memory_reserved": lambda device=None: self.allocated,
            "max_memory_reserved": lambda device=None: self.peak,
            "reset_peak_memory_stats": self.reset_peak,
            "reset_max_memory_allocated": self.reset_peak,
            "mem_get_info": lambda device=None: (TOTAL_MEMORY - self.allocated, TOTAL_MEMORY),
            "memory_stats": stats,
        }


class _DispatchMode(TorchDispatchMode):
    """Every ATen op: the tensors must agree on a device (CUDA's rule); outputs take the tag."""

    def __init__(self, sim: CudaSim) -> None:
        super().__init__()
        self.sim = sim

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        sim = self.sim
        sim.ops += 1
        packet = func.overloadpacket
        if packet in _COPY_OPS:
            checked: list[torch.Tensor] = []
            dest = args[0] if packet in (aten.copy_, aten._copy_from_and_resize) else None
            if packet is aten._copy_from:
                dest = args[1]
            kind = sim_device(dest) if dest is not None else sim_device(args[0])
        else:
            if packet in _INDEX_OPS:
                rest = list(args)
                indices = _tensors(rest.pop(1)) if len(rest) > 1 else []
                checked = _tensors((rest, kwargs))
            else:
                indices = []
                checked = _tensors((args, kwargs))
            kinds = {sim_device(t) for t in checked if not (t.dim() == 0 and
                                                            sim_device(t) == "cpu")}
            if not kinds and checked:
                kinds = {sim_device(checked[0])}
            if len(kinds) > 1:
                raise sim.fail(f"{func}: expected all tensors to be on the same device, but found "
                               "at least two devices, cuda:0 and cpu! (CPU tensors: "
                               f"{_describe([t for t in checked if sim_device(t) == 'cpu'])})")
            # a factory with no tensor argument: CPU, unless the autograd engine called it (its
            # C++ code takes the options of the graph's tensors, i.e. their device)
            kind = kinds.pop() if kinds else (sim.engine_device[-1] if sim.engine_device else "cpu")
            for t in indices:
                if sim_device(t) not in ("cpu", kind):
                    raise sim.fail(f"{func}: indices should be either on cpu or on the same "
                                   f"device as the indexed tensor ({kind})")
        if kind == "cuda":
            sim.cuda_ops += 1
        out = func(*args, **kwargs)
        inputs = {id(t) for t in _tensors((args, kwargs))}
        for t in _tensors(out):
            if id(t) not in inputs:
                sim.tag(t, kind)
        return out


def _describe(ts: list[torch.Tensor]) -> str:
    return ", ".join(f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}" for t in ts[:4])


class _FunctionMode(TorchFunctionMode):
    """The Python API: devices reported and requested, transfers, generators."""

    def __init__(self, sim: CudaSim) -> None:
        super().__init__()
        self.sim = sim

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = dict(kwargs or {})
        if func is torch.device:
            return func(*args, **kwargs)
        owner = getattr(func, "__self__", None)
        if owner is _DEVICE_DESC:
            return CUDA0 if sim_device(args[0]) == "cuda" else func(*args, **kwargs)
        if owner is _IS_CUDA_DESC:
            return sim_device(args[0]) == "cuda"
        if _IS_CPU_DESC is not None and owner is _IS_CPU_DESC:
            return sim_device(args[0]) == "cpu"
        if owner is _GRAD_DESC:
            grad = func(*args, **kwargs)
            if grad is not None and sim_device(grad) != sim_device(args[0]):
                raise self.sim.fail(f"Tensor.grad: the gradient is on {sim_device(grad)} but the "
                                    f"tensor on {sim_device(args[0])} (the autograd engine "
                                    "rejects such a gradient)")
            return grad
        if func is torch.Tensor.backward:
            gradient = args[1] if len(args) > 1 else kwargs.get("gradient")
            self._check_gradients("Tensor.backward", [args[0]], [gradient])
        elif func is torch.autograd.backward:
            self._check_gradients("autograd.backward", args[0] if args else kwargs["tensors"],
                                  args[1] if len(args) > 1 else kwargs.get("grad_tensors"))
        elif func is torch.autograd.grad:
            inputs = args[1] if len(args) > 1 else kwargs["inputs"]
            outputs = args[0] if args else kwargs["outputs"]
            self._check_gradients("autograd.grad", outputs,
                                  args[2] if len(args) > 2 else kwargs.get("grad_outputs"))
            first = outputs if isinstance(outputs, torch.Tensor) else list(outputs)[0]
            self.sim.engine_device.append(sim_device(first))
            try:
                out = func(*args, **kwargs)
            finally:
                self.sim.engine_device.pop()
            inputs = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
            self._check_gradients("autograd.grad (results)", inputs, list(out))
            return out
        method = _METHODS.get(func) if args and isinstance(args[0], torch.Tensor) else None
        if method == "get_device":
            return 0 if sim_device(args[0]) == "cuda" else -1
        if method in ("to", "cuda", "cpu"):
            return self._to(method, args, kwargs)
        if method == "pin_memory":
            if sim_device(args[0]) == "cuda":
                raise self.sim.fail("pin_memory: cannot pin a CUDA tensor, only dense CPU "
                                    "tensors can be pinned")
            out = args[0].clone()
            setattr(out, _PINNED, True)
            return out
        if method == "is_pinned":
            return bool(getattr(args[0], _PINNED, False))
        target = None
        if kwargs.get("device") is not None:
            target = _target(kwargs["device"])
            kwargs["device"] = CPU
        for a in args:
            if isinstance(a, torch.device) and a.type == "cuda" or \
                    isinstance(a, str) and (a == "cuda" or a.startswith("cuda:")):
                raise self.sim.fail(f"{_name(func)}: a positional CUDA device is not simulated "
                                    "(extend tests/cuda_sim.py)")
        gens = [g for g in pytree.tree_leaves((args, kwargs)) if isinstance(g, RealGenerator)]
        if gens:
            first = next((t for t in pytree.tree_leaves((args, kwargs.get("out")))
                          if isinstance(t, torch.Tensor)), None)
            op_kind = target or (sim_device(first) if first is not None else "cpu")
            for g in gens:
                if sim_device(g) != op_kind:
                    raise self.sim.fail(f"{_name(func)}: expected a '{op_kind}' device type for "
                                        f"generator but found '{sim_device(g)}'")
        out = func(*args, **kwargs)
        if target is not None:
            out = self._retag(out, target, args, kwargs)
        return out

    def _check_gradients(self, where: str, tensors: Any, grads: Any) -> None:
        """The engine's rule: a gradient is on the device of its tensor (CPU scalars too)."""
        tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
        if grads is None:
            return
        grads = [grads] if isinstance(grads, torch.Tensor) else list(grads)
        for i, (t, g) in enumerate(zip(tensors, grads)):
            if isinstance(g, torch.Tensor) and sim_device(g) != sim_device(t):
                raise self.sim.fail(f"{where}: invalid gradient at index {i} - expected device "
                                    f"{'cuda:0' if sim_device(t) == 'cuda' else 'cpu'} but got "
                                    f"{'cuda:0' if sim_device(g) == 'cuda' else 'cpu'}")

    def _retag(self, out: Any, kind: str, args: Any, kwargs: Any) -> Any:
        inputs = {id(t): t for t in _tensors((args, kwargs))}

        def fix(t: Any) -> Any:
            if not isinstance(t, torch.Tensor):
                return t
            if id(t) in inputs and sim_device(t) != kind:
                t = t.clone()  # a real transfer copies; never retag the caller's tensor
            self.sim.tag(t, kind)
            return t

        return pytree.tree_map(fix, out)

    def _to(self, name: str, args: tuple, kwargs: dict) -> torch.Tensor:
        src = args[0]
        copy = bool(kwargs.pop("copy", False))
        dtype = non_blocking = memory_format = None
        if name == "cpu":
            kind = "cpu"
            memory_format = kwargs.get("memory_format")
        elif name == "cuda":
            dev = args[1] if len(args) > 1 else kwargs.get("device")
            kind = _target(torch.device("cuda", dev) if isinstance(dev, int) else dev or "cuda")
            non_blocking = kwargs.get("non_blocking")
            memory_format = kwargs.get("memory_format")
        else:
            rest = args[1:]
            if rest and isinstance(rest[0], torch.Tensor):
                other = rest[0]
                kind, dtype = sim_device(other), other.dtype
                non_blocking = rest[1] if len(rest) > 1 else kwargs.get("non_blocking")
                memory_format = kwargs.get("memory_format")
            else:
                device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*rest,
                                                                                    **kwargs)
                kind = _target(device) if device is not None else sim_device(src)
        kw: dict[str, Any] = {"copy": copy or kind != sim_device(src),
                              "non_blocking": bool(non_blocking)}
        if dtype is not None:
            kw["dtype"] = dtype
        if memory_format is not None:
            kw["memory_format"] = memory_format
        out = torch.Tensor.to(src, CPU, **kw)
        if out is not src:
            self.sim.tag(out, kind)
        return out


@contextlib.contextmanager
def simulated_cuda() -> Iterator[CudaSim]:
    """Run the block as if on a machine with one CUDA GPU (see the module docstring); yields the
    :class:`CudaSim` (``errors``, ``allocated``, ``peak``, ``ops``, ``cuda_ops``)."""
    global _ACTIVE
    if _ACTIVE is not None:
        raise RuntimeError("simulated_cuda() is already active")
    # torch imports dynamo lazily (from a decorated function, maybe inside the block), and
    # dynamo's import indexes the torch.cuda functions: it must see the real ones
    import torch._dynamo  # noqa: F401

    sim = CudaSim()
    saved_cuda = {k: getattr(torch.cuda, k) for k in sim.cuda_functions() if hasattr(torch.cuda, k)}
    saved_generator = torch.Generator
    _ACTIVE = sim
    try:
        for k, v in sim.cuda_functions().items():
            setattr(torch.cuda, k, v)
        torch.Generator = SimGenerator
        with _DispatchMode(sim), _FunctionMode(sim):
            yield sim
    finally:
        torch.Generator = saved_generator
        for k in sim.cuda_functions():
            if k in saved_cuda:
                setattr(torch.cuda, k, saved_cuda[k])
            else:
                delattr(torch.cuda, k)
        _ACTIVE = None
