"""Bounded-memory row reductions over the coordinates of a batch, and the jet of ||x||^2.

At D = 10^7 one (16, D) float32 temporary is 640 MB, so closed-form exact solutions and sources
never build a full-width temporary: they walk the columns in blocks of at most
``BLOCK_ELEMENTS`` numbers on the CPU (n_rows * block_columns <= 2^22, i.e. 16 MiB in float32)
and in at most ``DEVICE_BLOCKS`` blocks on a GPU, and each block's temporaries are freed before
the next one. A formula that couples neighbouring
coordinates (two-body, three-body terms) reads its block with a halo of ``window - 1`` columns.
"""

from __future__ import annotations

import weakref
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from pinnbench.maths.directions import CoordinateDirections, DenseDirections, Directions
from pinnbench.maths.jets import Jet

#: at most this many numbers per block temporary on the CPU (16 MiB in float32, 32 MiB in
#: float64): sized for its memory and caches
BLOCK_ELEMENTS = 2**22
#: on a GPU a pass over the columns takes at most this many blocks (none narrower than the
#: CPU's). There a block costs its ops' launches whatever its size: with the CPU's blocks alone,
#: a step's closed forms at d = 1e7 walked ~280 blocks per pass, ~10^4 ops, and drawing the data
#: took 148 of bp's 187 ms on an H200 (2026-12-04, reports/gpu-h200/run3). A fixed size does not
#: do: 2^28 numbers drew the data 1.36x faster there but raised sdze's peak at d = 1e7 from
#: 10.6 to 18.8 GiB (in the CUDA simulation at d = 1e6: 4.2 GB over the step's baseline against
#: 0.6). A fixed count keeps a block's temporaries a fixed share of the batch: in the
#: simulation, sdze at d = 3e6 dispatches 3,702 ops instead of 10,590 for 24 % more peak.
DEVICE_BLOCKS = 16


def column_blocks(n_rows: int, n_cols: int,
                  device: torch.device | str | None = None) -> Iterator[tuple[int, int]]:
    """(start, stop) column ranges covering [0, n_cols), each of at most
    ``BLOCK_ELEMENTS // n_rows`` columns (at least one) on the CPU (``device`` None or a CPU);
    on another device as wide as that or ``n_cols / DEVICE_BLOCKS``, whichever is wider."""
    width = max(1, BLOCK_ELEMENTS // max(1, n_rows))
    if device is not None and torch.device(device).type != "cpu":
        width = max(width, -(-n_cols // DEVICE_BLOCKS))
    for start in range(0, n_cols, width):
        yield start, min(start + width, n_cols)


def row_sum(x: Tensor, fn: Callable[[Tensor], Tensor], n_cols: int | None = None) -> Tensor:
    """sum_j fn(x)_{:, j} over the first ``n_cols`` columns (all by default), block by block:
    (n, D) -> (n,). ``fn`` must act elementwise."""
    n_cols = x.shape[1] if n_cols is None else n_cols
    if n_cols == 0:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    out = None
    for a, b in column_blocks(x.shape[0], n_cols, x.device):
        part = fn(x[:, a:b]).sum(dim=1)
        # the first block's sum is the accumulator (0 + s = s: no zeros and no add, two ops
        # fewer a call, the same numbers)
        out = part if out is None else out.add_(part)
    return out


def sqnorm(x: Tensor, n_cols: int | None = None) -> Tensor:
    """s = ||x||^2 over the first ``n_cols`` columns, (n,), without an (n, D) temporary.

    A step asks for the s of its batch twice, once for the source f(x) and once for the
    ansatz's jet (each a read of the n x D batch and a block-sized square: 2.3 W0 of traffic
    at d = 1e5, docs/roofline.md), so the last result is kept (:class:`_LastSqnorm`) and
    returned again for the same tensor, unchanged since (its version counter) and not
    differentiated through: the same number, computed once."""
    return _LAST.get(x, n_cols)


class _LastSqnorm:
    """The last ``sqnorm`` computed, found again by the identity of its input (held weakly, so
    the batch is not kept alive) and of that input's version and of the result's: a tensor
    changed in place since, one that autograd would differentiate through, or one made or read
    under ``torch.inference_mode`` (no version counter) is computed afresh."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._ref = None
        self._s: Tensor | None = None

    def get(self, x: Tensor, n_cols: int | None) -> Tensor:
        n_cols = x.shape[1] if n_cols is None else n_cols
        if ((x.requires_grad and torch.is_grad_enabled()) or x.is_inference()
                or torch.is_inference_mode_enabled()):
            # differentiated through, or inference tensors (they keep no version counter)
            return row_sum(x, torch.square, n_cols)
        key = (x._version, n_cols, x.shape, x.dtype, x.device)
        s = self._s
        if (s is not None and self._ref is not None and self._ref() is x
                and self._key == (key, s._version)):
            return s
        s = row_sum(x, torch.square, n_cols)
        self._ref, self._s, self._key = weakref.ref(x), s, (key, s._version)
        return s


_LAST = _LastSqnorm()


def spatial_sqnorm_jet(x: Tensor, dirs: Directions, order: int, time_last: bool = False,
                       s: Tensor | None = None) -> Jet:
    """Jet of s(x) = ||x_spatial||^2 along every direction (exact: s is quadratic):
    ``[s, 2 x_s . v_s, ||v_s||^2]`` with shapes (n, 1), (n, V), (1, V).

    ``dirs`` spans all D columns of ``x``; with ``time_last`` the last column is time, and its
    part is removed from the full-width products: x_s . v_s = x . v - t v_t and
    ||v_s||^2 = ||v||^2 - v_t^2 (so no spatial slice of the directions is ever built)."""
    n_cols = x.shape[1] - int(time_last)
    s = sqnorm(x, n_cols) if s is None else s
    xv = dirs.dot(x)
    vv = dirs.sqnorm()
    if time_last:
        vt = dirs.component(-1).to(x.dtype)
        xv = xv - x[:, -1:] * vt.unsqueeze(0)
        vv = vv - vt * vt
    return Jet([s.unsqueeze(1), 2.0 * xv, vv.to(x.dtype).unsqueeze(0)], order)


def time_jet(x: Tensor, dirs: Directions, order: int) -> Jet:
    """Jet of t (the last column) along every direction: ``[t, v_t]``, (n, 1) and (1, V)."""
    return Jet([x[:, -1:], dirs.component(-1).to(x.dtype).unsqueeze(0)], order)


def spatial_power_sums(x: Tensor, fns: Sequence[Callable[[Tensor], Tensor]], dirs: Directions,
                       n_cols: int) -> list[Tensor]:
    """``[sum_{i < n_cols} fns[k-1](x)_i v_i^k for k = 1..K]``, each (n, V): with
    fns[k-1] = f^(k), the k-th jet coefficients (times k!) of sum_i f(x_i) over the spatial
    coordinates (``dirs.power_sum``, restricted to the first n_cols columns).

    Coordinate directions gather the V columns they touch; dense directions walk the columns in
    blocks (each distinct fn evaluated once per block, v^k built by repeated products); any other
    Directions falls back to ``dirs.power_sum`` on full-width temporaries."""
    if isinstance(dirs, CoordinateDirections):
        index = dirs.index
        spatial = (index < n_cols).to(x.dtype)
        xi = x[:, index.clamp(max=n_cols - 1)]
        return [fn(xi) * spatial for fn in fns]
    if isinstance(dirs, DenseDirections):
        out = [torch.zeros(x.shape[0], dirs.count, dtype=x.dtype, device=x.device) for _ in fns]
        for a, b in column_blocks(x.shape[0] + dirs.count, n_cols, x.device):
            xb, vb = x[:, a:b], dirs.v[:, a:b]
            values: dict = {}
            vk = vb
            for k, fn in enumerate(fns):
                if fn not in values:
                    values[fn] = fn(xb)
                out[k] += values[fn] @ vk.T
                if k + 1 < len(fns):
                    vk = vk * vb
        return out
    out = []
    for k, fn in enumerate(fns, start=1):
        y = fn(x)
        y[:, n_cols:] = 0.0
        out.append(dirs.power_sum(y, k))
    return out
