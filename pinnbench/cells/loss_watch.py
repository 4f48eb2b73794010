"""The training loss as the cell runner watches it, without reading it back every step.

``Solver.step()`` returns the step's loss estimate as a Python float or as a 0-d tensor on the
model's device (docs/design.md, "Solver"). Reading a device tensor into Python (``float(t)``,
``.item()``) is a host sync: on CUDA it waits for every kernel queued so far, and a captured
CUDA graph cannot contain one at all. So the runner reads a tensor loss only where it needs the
number, at the evaluation points (steps 1, 2, 4, 8, ... and the last), and keeps the divergence
check on the device in between:

    leading <- leading + [loss_k is finite and leading = k - 1]

``leading`` (a 0-d int64 tensor) is the number of steps from the first whose losses were all
finite, so at any later read the first non-finite step is ``leading + 1`` (if ``leading < k``):
the same step the per-step check found, four element-wise launches per step and no sync. What
changes is *when* a divergence stops training: at the next evaluation point instead of at once,
i.e. after at most as many extra steps as were taken before it (the points are log-spaced).
A float loss is checked at once, as before (reading it costs nothing), so a solver that returns
floats sees no change.
"""

from __future__ import annotations

import math

import torch


class LossWatch:
    """The losses of the steps so far: :meth:`see` each step's, :meth:`first_nonfinite` and
    :meth:`last` (host reads) at the points where the runner needs them."""

    def __init__(self) -> None:
        self.steps = 0
        self._last: float | torch.Tensor | None = None
        self._last_read: float | None = None  # the last loss as read, until the next step
        self._first_bad_float: int | None = None  # from float losses, known at once
        self._leading: torch.Tensor | None = None  # from tensor losses, on their device

    def see(self, loss: float | torch.Tensor) -> None:
        """Record step ``steps + 1``'s loss (no host read of a tensor)."""
        self.steps += 1
        k = self.steps
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
            if self._leading is None:
                # the float steps before it (if any) all had finite losses, or training stopped
                self._leading = torch.full((), k - 1, dtype=torch.int64, device=loss.device)
            ok = torch.isfinite(loss) & (self._leading == k - 1)
            self._leading.add_(ok)
        else:
            loss = float(loss)
            if self._first_bad_float is None and not math.isfinite(loss):
                self._first_bad_float = k
            if self._leading is not None and math.isfinite(loss):
                self._leading.add_(self._leading == k - 1)
        self._last, self._last_read = loss, None

    @property
    def returns_tensors(self) -> bool:
        return self._leading is not None

    def first_nonfinite(self) -> int | None:
        """The first step whose loss was NaN or infinite, or None (reads the device counter)."""
        bad = [self._first_bad_float] if self._first_bad_float is not None else []
        if self._leading is not None:
            leading = int(self._leading)
            if leading < self.steps:
                bad.append(leading + 1)
        return min(bad) if bad else None

    def last(self) -> float | None:
        """The last step's loss as a float (reads it from the device, once per step)."""
        if self._last_read is None and self._last is not None:
            self._last_read = float(self._last)
        return self._last_read
