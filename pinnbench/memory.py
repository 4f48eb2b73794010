"""Peak-memory measurement for one process: CPU high-water mark and CUDA allocator peaks.

CPU (Linux): the kernel keeps the resident-set high-water mark ``VmHWM`` in /proc/self/status;
writing ``5`` to /proc/self/clear_refs resets it to the current RSS (Linux >= 4.0,
Documentation/filesystems/proc.rst). So ``reset_peak_cpu()`` after set-up followed by
``peak_cpu_bytes()`` measures the peak of the timed phase alone, on top of the baseline that
``current_cpu_bytes()`` reported at the reset. Elsewhere we fall back to ``ru_maxrss``, which
cannot be reset (``cpu_peak_resettable()`` says which).

GPU: ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` after
``torch.cuda.reset_peak_memory_stats``.
"""

from __future__ import annotations

import ctypes
import resource
import sys
from typing import Callable

import torch

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _proc_kib(path: str, field: str) -> int | None:
    """A ``Field:   N kB`` line of a /proc file, in KiB; None where there is none."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _status_kib(field: str) -> int | None:
    return _proc_kib(_STATUS, field)


def virtual_size_bytes() -> int:
    """This process's mapped address space now (VmSize); 0 where unknown."""
    kib = _status_kib("VmSize")
    return kib * 1024 if kib is not None else 0


def available_host_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux); 0 where unknown."""
    kib = _proc_kib("/proc/meminfo", "MemAvailable")
    return kib * 1024 if kib is not None else 0


def current_cpu_bytes() -> int:
    """Resident set size now."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else peak_cpu_bytes()


def peak_cpu_bytes() -> int:
    """Resident-set high-water mark since start or since the last ``reset_peak_cpu()``."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def release_free_heap() -> None:
    """Give the heap's free pages back to the OS (glibc ``malloc_trim(0)``; no-op elsewhere).

    glibc raises its mmap threshold after a large block is freed (up to 32 MiB), so the
    temporaries of an evaluation stay resident in the heap once freed, and later steps reuse them
    without the RSS growing: a peak reset at that point would miss the steps' own memory. After a
    trim those pages are no longer resident and count again when reused. (Fixing the threshold
    with MALLOC_MMAP_THRESHOLD_ instead made every step 3x slower through page faults.)"""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_cpu() -> bool:
    """Release free heap pages, then reset the high-water mark to the current RSS; False where
    the OS cannot reset it."""
    release_free_heap()
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def cpu_peak_resettable() -> bool:
    return _status_kib("VmHWM") is not None and reset_peak_cpu()


def reset_peak_gpu(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def current_gpu_bytes(device: torch.device) -> int | None:
    """Bytes held by live tensors on ``device`` now (``torch.cuda.memory_allocated``); None off
    CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.memory_allocated(device)


def release_gpu_cache(device: torch.device) -> None:
    """Return the caching allocator's free blocks to the driver (``torch.cuda.empty_cache``), so
    that a following reset of ``max_memory_reserved`` does not start from blocks an evaluation
    left cached. No-op off CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def peak_gpu_bytes(device: torch.device) -> tuple[int | None, int | None]:
    """(max allocated, max reserved) since the last reset; (None, None) off CUDA."""
    if device.type != "cuda":
        return None, None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)


def cpu_tensor_peak_bytes(fn: Callable[[], object]) -> int:
    """The most bytes that the CPU tensors allocated while ``fn()`` runs hold at once (tensors
    allocated before it, and their frees, are not counted: what ``fn`` itself needs on top of the
    state it finds).

    Exact and deterministic, where :func:`peak_cpu_bytes` (the resident set's high-water mark)
    also holds what the C heap keeps after a free, which depends on the order of earlier
    allocations: the same sdze steps at d = 100 measured 170 to 398 MiB above their baseline over
    runs (docs/protocol.md, "Peak memory"). The CPU analogue of CUDA's ``max_memory_allocated``
    after a reset, read from the profiler's memory events (``profile_memory=True``: each CPU
    allocation and free with its size, in order), so ``fn`` runs slower: never around a timed
    step."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == DeviceType.CPU]
    level = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        level += e.nbytes()
        peak = max(peak, level)
    return peak


def cpu_tensor_bytes() -> int:
    """Bytes of the distinct CPU storages that live tensors hold now, found by a scan of the
    objects Python's collector tracks (every tensor a solver, model or problem keeps in Python:
    parameters, gradients, optimiser and momentum state, caches), each storage counted once
    however many views share it. With :func:`cpu_tensor_peak_bytes`, the exact CPU analogue of
    CUDA's allocated bytes: the growth of this figure over training is the state a solver
    builds (Adam's moments, sdze's momentum terms)."""
    import gc
    import warnings

    storages: dict[int, int] = {}
    with warnings.catch_warnings():  # a fake tensor's data pointer warns (deprecated)
        warnings.simplefilter("ignore")
        for o in gc.get_objects():
            # type(), not isinstance: isinstance on a dead weak proxy (torch.compile leaves
            # some) raises ReferenceError
            if not issubclass(type(o), torch.Tensor):
                continue
            try:  # a tensor without real storage (compile's fake and functional tensors) raises
                if o.device.type != "cpu" or o.layout != torch.strided:
                    continue
                s = o.untyped_storage()
                ptr, nbytes = s.data_ptr(), s.nbytes()
            except Exception:  # noqa: BLE001 - it holds no memory of its own
                continue
            if ptr:
                storages[ptr] = nbytes
    return sum(storages.values())
