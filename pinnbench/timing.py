"""The wall clock of device work: :func:`clock` synchronises a CUDA device before reading
``time.perf_counter``, so that a difference of two readings includes the kernels queued in
between (CUDA launches return before the work is done); off CUDA it is ``perf_counter`` alone.
:class:`Stopwatch` times a part of a step (the data a solver draws) without synchronising: CUDA
events, read after the step."""

from __future__ import annotations

import time

import torch


def clock(device: torch.device | str) -> float:
    """Seconds (``time.perf_counter``) after every kernel queued on ``device`` has finished."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Stopwatch:
    """Intervals of device work inside a step, timed without a host sync: on CUDA a pair of
    events recorded on the current stream (``torch.cuda.Event(enable_timing=True)``: the device
    time from the first to the second, read by :meth:`settle` once the device has passed them,
    e.g. after the step's own synchronisation), elsewhere ``time.perf_counter`` at once.

    ``start()`` returns a mark, ``stop(mark)`` closes the interval; ``settle()`` returns the
    seconds of the intervals closed since the last call (on CUDA it waits for their end events,
    which costs nothing once the device is idle)."""

    def __init__(self, device: torch.device | str) -> None:
        self.cuda = torch.device(device).type == "cuda"
        self._done = 0.0
        self._pending: list[tuple] = []

    def start(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def stop(self, mark) -> None:
        if not self.cuda:
            self._done += time.perf_counter() - mark
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self._pending.append((mark, end))

    def settle(self) -> float:
        seconds, self._done = self._done, 0.0
        for begin, end in self._pending:
            end.synchronize()
            seconds += begin.elapsed_time(end) / 1e3  # milliseconds
        self._pending.clear()
        return seconds
