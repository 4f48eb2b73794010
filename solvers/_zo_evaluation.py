"""The shifted evaluation: the PINN's loss at theta + c z without writing theta.

A zeroth-order step evaluates L(theta +- eps z_k) for q perturbations z_k
(:mod:`pinnbench.solvers._zo_perturbations`). Here that network is the PINN itself with two
things swapped, never a copy of its layers:

* every parameter but W0 is materialised out of place, theta_i + c z_i (width x width numbers at
  most), and passed to ``PINN(...)`` as its parameters;
* the first layer, the only part whose cost grows with d, is a
  :class:`pinnbench.maths.model.FirstLayer` hook, :class:`ShiftedFirstLayer`:
  ``(W0 + c z0) y = W0 y + c z0 y``, with W0 y from the step's :class:`FirstLayerCache` and
  ``z0 y = U (Xi (V^T y)) / r`` matrix-free for a low-rank z0 (regenerated Gaussian columns for
  a full one).

This is exact (theta is bit-identical afterwards, no fp32 round-trip drift as with MeZO's in-place
+eps, -2eps, +eps) and cheap: W0 y and V^T y do not depend on the perturbation, so the cache
computes them once per step for the points and probes that the common-random-numbers
evaluations share, and each of the 2q evaluations then costs O(m r (n + V)) in the first layer
instead of O(m D (n + V)). :func:`centre_model` is the unperturbed network through the same
cache (zo's in-place evaluation of streamed data, which is read only through the cache's
reductions).

Read next: :mod:`pinnbench.solvers._zo_optimiser` (what the step does with the losses).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from pinnbench.maths.directions import CoordinateDirections, DenseDirections, Directions
from pinnbench.maths.jets import Jet
from pinnbench.maths.model import DENSE, FirstLayer, PINN
from pinnbench.solvers._zo_perturbations import (Perturbation, SubspaceBasis, stacked_parts,
                                                 stacked_small)


class FirstLayerCache:
    """Products of the first layer with inputs that do not depend on the perturbation: W0 y,
    and y V for a low-rank basis, for the pinned points x and the probes of a step.

    Everything is cached **by identity**: the step draws its points and probes once
    (:class:`pinnbench.maths.step_data.StepData`) and every evaluation of the step passes the
    same tensor and the same probe objects (:class:`pinnbench.maths.directions.Directions`), so
    a lookup is an ``is`` test, never a comparison of values (no Python-level work that grows
    with d).
    Pinning (``cache.x = x`` or :meth:`pin`) drops every product and ansatz jet of the previous
    points, and each entry keeps a reference to the object it was computed from, so a new object
    can never be served an old one's products (a key on ``x._version`` could: every freshly
    sampled tensor has version 0), and an equal-valued probe set drawn anew is simply a miss.
    The last few probe sets are kept (two per sample for the unbiased loss). Anything else (the
    shifted points of finite-difference stencils) is computed afresh. W0's version is part of
    every key (W0 is the same tensor, updated in place), so nothing stale can be returned; the
    solver clears the cache at the end of every step, so no x-sized tensor outlives a step.

    ``layer`` is the model's own first layer: when it holds a shard of W0's columns
    (:attr:`pinnbench.maths.model.FirstLayer.plan`, docs/sharding.md), W0, V, the points and the
    probes here are this rank's columns, and each product is summed over the ranks by
    :meth:`FirstLayer.sum_columns`, y W0^T and y V in one all-reduce, once per step with common
    random numbers (the shifted evaluations then need no communication but the problem's)."""

    MAX_PROBE_SETS = 4

    def __init__(self, w0: Tensor, basis: SubspaceBasis | None, x: Tensor | None = None,
                 layer: FirstLayer = DENSE) -> None:
        self.w0 = w0
        self.basis = basis
        self.layer = layer
        self._streamed: tuple | None = None
        #: seconds spent drawing streamed blocks and summing their source (the step's data time)
        self.stream_data_time_s = 0.0
        self._x: Tensor | None = None
        self._points: tuple | None = None
        self._probe_products: list[tuple[int, Directions, Tensor, Tensor | None]] = []
        self._ansatz: list[tuple[Tensor, tuple, Directions, tuple[Jet, Jet]]] = []
        self.pin(x)

    @property
    def x(self) -> Tensor | None:
        return self._x

    @x.setter
    def x(self, x: Tensor | None) -> None:
        self.pin(x)

    def pin(self, x: Tensor | None) -> None:
        """Make ``x`` the points whose products are cached; everything computed for other points
        is dropped (the probes' products do not depend on x and are kept)."""
        if x is self._x:
            return
        self._x = x
        self._points = None
        self._ansatz.clear()

    def clear(self) -> None:
        self.pin(None)
        self._probe_products.clear()
        self._streamed = None

    def reductions(self, data):
        """The reductions of streamed step data (:func:`pinnbench.maths.streaming.reduce`: source,
        ansatz pieces, x W0^T, x V, W0 v, V^T v), one pass over its blocks per sample and W0
        version, found by identity of ``data`` afterwards (common random numbers: once a step)."""
        from pinnbench.maths.streaming import reduce

        key = self.w0._version
        if self._streamed is None or self._streamed[0] is not data or self._streamed[1] != key:
            red = reduce(data, self.w0, self.basis)
            self.stream_data_time_s += red.data_time_s
            self._streamed = (data, key, red)
        return self._streamed[2]

    def ansatz_jet(self, problem, x: Tensor, probes: Directions,
                   order: int) -> tuple[Jet, Jet]:
        """The problem's (A, B) jets along ``probes`` at the pinned points. They do not depend on
        theta, so with common random numbers the 2q evaluations of a step share one computation
        (x . v for every point and probe: O(n V D), as much as the first layer itself)."""
        if x is not self._x:
            return problem.ansatz_jet(x, probes, order)
        key = (x._version, order)
        for ref, k, p, jets in self._ansatz:
            if ref is x and k == key and p is probes:
                return jets
        jets = problem.ansatz_jet(x, probes, order)
        self._ansatz.append((x, key, probes, jets))
        del self._ansatz[:-self.MAX_PROBE_SETS]
        return jets

    def _products(self, y: Tensor) -> tuple[Tensor, Tensor | None]:
        return self._summed(y @ self.w0.T,
                            self.basis.project(y) if self.basis is not None else None)

    def _summed(self, wy: Tensor, vy: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """(y W0^T, y V) over all d columns from this process's: themselves unless sharded,
        else both summed over the ranks in one all-reduce."""
        if self.layer.plan is None:
            return wy, vy
        if vy is None:
            return self.layer.sum_columns(wy), None
        both = self.layer.sum_columns(torch.cat([wy, vy], dim=1))
        return both[:, :wy.shape[1]], both[:, wy.shape[1]:]

    def sum_columns(self, partial: Tensor) -> Tensor:
        """A product over this process's input columns summed over all of them
        (:meth:`FirstLayer.sum_columns` of the model's first layer)."""
        return self.layer.sum_columns(partial)

    def points(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(x W0^T (n, m), x V (n, r) or None)."""
        if x is not self._x:
            return self._products(x)
        key = (x._version, self.w0._version)
        if self._points is None or self._points[0] is not x or self._points[1] != key:
            self._points = (x, key, *self._products(x))
        return self._points[2], self._points[3]

    def probes(self, probes: Directions) -> tuple[Tensor, Tensor | None]:
        """(W0 v_k stacked (V, m), V^T v_k stacked (V, r) or None)."""
        key = self.w0._version
        for k, ref, wv, vv in self._probe_products:
            if k == key and ref is probes:
                return wv, vv
        wv = probes.apply_weight(self.w0)
        vv = None
        if self.basis is not None:
            vv = _coordinate_rows(probes, self.basis.v_rows)
            if vv is None:
                vv = self.basis.project(_dense(probes))
        wv, vv = self._summed(wv, vv)
        self._probe_products.append((key, probes, wv, vv))
        del self._probe_products[:-self.MAX_PROBE_SETS]
        return wv, vv


def _coordinate_rows(probes: Directions, read) -> Tensor | None:
    """``read(index)`` (V, k) at coordinate probes' columns: a CoordinateDirections' index; a
    sharded cell's coordinates (``owned_rows``: read at this rank's local columns where it owns
    the coordinate, zero elsewhere, for the caller to sum over the ranks); None for dense
    probes."""
    if isinstance(probes, CoordinateDirections):
        return read(probes.index)
    owned_rows = getattr(probes, "owned_rows", None)
    return None if owned_rows is None else owned_rows(read)


def _is_coordinates(probes: Directions) -> bool:
    return isinstance(probes, CoordinateDirections) or hasattr(probes, "owned_rows")


def _dense(probes: Directions) -> Tensor:
    if isinstance(probes, DenseDirections):
        return probes.v
    raise TypeError(f"matrix-free first layer: unsupported probes {type(probes).__name__}")


class CachedFirstLayer(FirstLayer):
    """The unperturbed first layer, x W0^T + b0 and W0 v, read from the step's
    :class:`FirstLayerCache` (and the problem's ansatz jets and streamed reductions with it)."""

    def __init__(self, cache: FirstLayerCache) -> None:
        self.cache = cache

    def _check(self, w0: Tensor) -> None:
        if w0 is not self.cache.w0:
            raise ValueError("a cached first layer evaluates the W0 of its cache; pass no other "
                             "params= to the model")

    def _shift(self, y: Tensor | None, wy: Tensor, vy: Tensor | None,
               coords: Directions | None = None) -> Tensor:
        """y W0^T + c y z0^T given y W0^T (and y V), y the points or the probes (``coords``
        when they are coordinates): here c = 0, so y W0^T."""
        return wy

    def points(self, x: Tensor, w0: Tensor, b0: Tensor) -> Tensor:
        self._check(w0)
        wx, vx = self.cache.points(x)
        return self._shift(x, wx, vx) + b0.unsqueeze(-2)  # b0 (h,) or a batch's (B, h)

    def directions(self, dirs: Directions, w0: Tensor) -> Tensor:
        self._check(w0)
        wv, vv = self.cache.probes(dirs)
        coords = dirs if _is_coordinates(dirs) else None
        return self._shift(None if coords is not None else _dense(dirs), wv, vv, coords)

    def ansatz_jet(self, problem, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        return self.cache.ansatz_jet(problem, x, dirs, order)

    def reductions(self, data, w0: Tensor):
        self._check(w0)
        return self.cache.reductions(data)

    def reduced_points(self, red, b0: Tensor) -> Tensor:
        return self._shift(None, red.wx, red.vx) + b0.unsqueeze(-2)

    def reduced_directions(self, red, k: int) -> Tensor:
        return self._shift(None, red.wv[k], red.vv[k])


class ShiftedFirstLayer(CachedFirstLayer):
    """The first layer of a batch of shifted networks, theta + c_j z_k for every factor c_j of
    ``cs`` and every perturbation z_k of ``zs`` (batch index j * len(zs) + k, B in all):
    ``y W0^T + c_j y z0_k^T`` stacked (B, rows, h), with y W0^T from the cache (once for the
    batch) and y z0_k^T matrix-free, once per perturbation for all its factors (low rank:
    ``((y V) Xi_k^T) U^T / r``, one batched product for all k; full Gaussian: regenerated column
    chunks of z0_k, which needs y itself, so streamed data takes low-rank z0 only).
    ``batch=False`` (one z, one c): the network's own shapes, (rows, h), no batch axis."""

    def __init__(self, cache: FirstLayerCache, zs: Sequence[Perturbation],
                 cs: Sequence[float], batch: bool = True) -> None:
        super().__init__(cache)
        self.zs, self.cs, self.batch = list(zs), list(cs), batch
        if not batch and len(self.zs) * len(self.cs) != 1:
            raise ValueError("an unbatched shifted first layer takes one z and one c")
        self._xis: Tensor | None = None  # the Xi_k of W0, stacked (K, r, r), made on first use

    def _products(self, y: Tensor | None, vy: Tensor | None,
                  coords: Directions | None) -> tuple[Tensor, int]:
        """(r y z0_k^T stacked (K, rows, h), r) for low-rank z0; (y z0_k^T, 1) for full
        Gaussian ones."""
        basis = self.zs[0].bases[0]
        if basis is not None:
            if self._xis is None:
                self._xis = stacked_parts(self.zs, 0)
            return (vy @ self._xis.mT) @ basis.u.T, basis.rank
        if y is None and coords is None:
            raise ValueError("a full Gaussian first-layer perturbation needs the points "
                             "themselves (y z0^T); streamed step data gives only the products "
                             "with a low-rank basis: use sdze[subspace=true] with rank < width")
        gs = [z.gaussian(0) for z in self.zs]
        # a sharded W0: this shard's columns of y z0_k^T (a coordinate's: on its owner), summed
        # over the ranks (one process: as is)
        return torch.stack([self.cache.sum_columns(_coordinate_rows(coords, g.columns))
                            if coords is not None else self.cache.sum_columns(g.apply(y))
                            for g in gs]), 1

    def _shift(self, y: Tensor | None, wy: Tensor, vy: Tensor | None,
               coords: Directions | None = None) -> Tensor:
        products, rank = self._products(y, vy, coords)
        shifts = torch.stack([(c / rank) * products for c in self.cs])  # (C, K, rows, h)
        out = (wy + shifts).flatten(0, 1)
        return out if self.batch else out[0]


def centre_model(model: PINN, cache: FirstLayerCache) -> PINN:
    """The PINN at theta itself, its first layer read from ``cache``."""
    return PINN(model.problem, model.params, model.activation, CachedFirstLayer(cache))


def shifted_model(model: PINN, z: Perturbation, c: float, cache: FirstLayerCache) -> PINN:
    """The PINN at theta + c z (c != 0), theta untouched: W0 through :class:`ShiftedFirstLayer`,
    every other parameter theta_i + c z_i out of place (z_i materialised once per perturbation,
    :meth:`Perturbation.small`). For an estimate that cannot take a batch of parameter sets
    (:func:`pinnbench.maths.estimators.batch_unsupported`); else :func:`shifted_batch`."""
    params = model.params
    # theta_i + c z_i for every i > 0 as two multi-tensor ops (c z_i, then the sums): the same
    # numbers as one product and one sum per tensor, 2 launches instead of 2 (L - 1)
    smalls = [z.small(i) for i in range(1, len(params))]
    shifted = torch._foreach_add(params[1:], torch._foreach_mul(smalls, c))
    return PINN(model.problem, [params[0], *shifted], model.activation,
                ShiftedFirstLayer(cache, [z], [c], batch=False))


def shifted_batch(model: PINN, zs: Sequence[Perturbation], cs: Sequence[float],
                  cache: FirstLayerCache) -> PINN:
    """The PINN at theta + c_j z_k for every c_j != 0 of ``cs`` and every perturbation z_k of
    ``zs``, as one model whose parameters carry a leading batch of B = len(cs) len(zs) sets
    (index j len(zs) + k; :mod:`pinnbench.maths.model`), theta untouched: W0 through
    :class:`ShiftedFirstLayer`, every other parameter theta_i + c_j z_{k,i} out of place, as in
    :func:`shifted_model` (the same numbers, set by set; the low-rank z_{k,i} made for all k in
    one batched product, :func:`~pinnbench.solvers._zo_perturbations.stacked_small`). Its losses
    (:meth:`pinnbench.solver.Solver.residual_loss`) are the B losses, (B,)."""
    params = model.params
    # z_{k,i} stacked per parameter (K, ...), then per factor c two multi-tensor ops (c z, then
    # theta + c z, broadcast over k: the numbers of shifted_model), then one concatenation per
    # parameter into its (B, ...) batch
    zs_i = [stacked_small(zs, i) for i in range(1, len(params))]
    per_c = [torch._foreach_add(list(params[1:]), torch._foreach_mul(zs_i, c)) for c in cs]
    batched = [torch.cat([shifted[i] for shifted in per_c]) for i in range(len(params) - 1)]
    return PINN(model.problem, [params[0], *batched], model.activation,
                ShiftedFirstLayer(cache, zs, cs))
