"""The wall clock of device work: :func:`clock` synchronises a CUDA device before reading
``time.perf_counter``, so that a difference of two readings includes the kernels queued in
between (CUDA launches return before the work is done); off CUDA it is ``perf_counter`` alone."""

from __future__ import annotations

import time

import torch


def clock(device: torch.device | str) -> float:
    """Seconds (``time.perf_counter``) after every kernel queued on ``device`` has finished."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
