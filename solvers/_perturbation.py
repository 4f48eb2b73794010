"""Zeroth-order perturbation machinery: regenerable random directions z over the PINN's weights.

Two-point SPSA (Spall 1992) estimates the gradient of L(theta) from two losses,

    q = [L(theta + eps z) - L(theta - eps z)] / (2 eps),      g_hat = q z,

and E[g_hat] = E[z z^T] grad L + O(eps^2). Nothing here ever stores a z of parameter size: every
direction is a *seed*, and z is regenerated from it piece by piece when needed (MeZO's seed
trick, Malladi et al., NeurIPS 2023).

Per weight matrix W (m x n, W[out, in]) a direction is one of

* **full Gaussian** (:class:`GaussianMatrix`): z ~ N(0, I_{mn}), regenerated in column chunks of
  at most ``CHUNK_ELEMENTS`` numbers from one generator (the chunking is part of the definition:
  the same seed and the same chunking give the same numbers);
* **low rank** (:class:`SubspaceBasis` + an r x r matrix Xi): ``z = U Xi V^T / r`` with U (m x r),
  V (n x r) and Xi all standard Gaussian (SubZero, Yu et al. 2024; LOZO, Chen et al. 2024).
  U and V come from a basis seed (refreshed every T0 steps by the solver), Xi is fresh per
  direction. Scaling: E[z_ij^2] = sum_ab E[U_ia^2] E[Xi_ab^2] E[V_jb^2] / r^2 = 1, and
  E[zz^T] = E[VV^T] (x) E[UU^T] / r^2 = (r I_n) (x) (r I_m) / r^2 = I, so over the refreshes
  g_hat is unbiased for the full gradient exactly as with a full Gaussian z (same per-entry
  variance, same meaning of eps and of the step size), while for a fixed basis
  E_Xi[g_hat_W] = U U^T G V V^T / r^2 (G = dL/dW): a sketch of the gradient in an r^2-dimensional
  subspace, whose exploration variance is O(r^2) instead of O(mn). V is never orthonormalised
  (that would need all of V at once); for n >> r, V^T V / n = I + O(1/sqrt(n)) anyway.
* biases and the 1 x width output layer (too thin for a subspace): a full Gaussian vector.

U is m x r (small) and is materialised; V (n x r, 320 MB at n = 10^7, r = 8) is only ever
regenerated in row chunks, so a low-rank direction costs O(m r) memory.

Evaluation at theta + c z never writes theta (:class:`ShiftedPINN`): every tensor except the first
weight matrix is materialised out of place (they are width x width at most), and the first layer
is evaluated matrix-free, ``(W0 + c z0) y = W0 y + c z0 y`` with ``z0 y = U (Xi (V^T y)) / r``.
This is exact (theta is bit-identical afterwards, no fp32 round-trip drift as with MeZO's
in-place +eps, -2eps, +eps) and cheap: W0 y and V^T y do not depend on the direction, so
:class:`FirstLayerCache` computes them once per step for the points and probes that the
common-random-numbers evaluations share, and each of the 2q evaluations then costs
O(m r (n + V)) in the first layer instead of O(m D (n + V)).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor

from pinnbench.directions import CoordinateDirections, DenseDirections, Directions
from pinnbench.jets import Jet
from pinnbench.model import PINN
from pinnbench.seeds import derive_seed, generator

#: largest number of random numbers generated at once when regenerating a big direction
CHUNK_ELEMENTS = 2**22


def _chunk_cols(rows: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, rows))


class GaussianMatrix:
    """z ~ N(0, I) of shape (m, n) (or (m,) for a vector), regenerated from ``seed`` in column
    chunks; never held whole unless :meth:`dense` is asked for."""

    def __init__(self, shape: Sequence[int], seed: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.shape = tuple(shape)
        self.seed = int(seed)
        self.dtype = dtype
        self.device = torch.device(device)

    def chunks(self) -> Iterator[tuple[int, int, Tensor]]:
        """(j0, j1, z[:, j0:j1]) for consecutive column blocks (vectors: element blocks)."""
        g = generator(self.seed, self.device)
        if len(self.shape) == 1:
            (n,) = self.shape
            step = CHUNK_ELEMENTS
            for j0 in range(0, n, step):
                j1 = min(n, j0 + step)
                yield j0, j1, torch.randn(j1 - j0, generator=g, dtype=self.dtype,
                                          device=self.device)
            return
        m, n = self.shape
        step = _chunk_cols(m)
        for j0 in range(0, n, step):
            j1 = min(n, j0 + step)
            yield j0, j1, torch.randn(m, j1 - j0, generator=g, dtype=self.dtype,
                                      device=self.device)

    def dense(self) -> Tensor:
        if len(self.shape) == 1:
            return torch.cat([c for _, _, c in self.chunks()])
        return torch.cat([c for _, _, c in self.chunks()], dim=1)

    def add_to_(self, w: Tensor, alpha: float | Tensor) -> None:
        """w += alpha * z, in place, chunk by chunk; ``alpha`` a number or a 0-d tensor on w's
        device (``addcmul_`` by it rounds as ``add_(alpha=)`` does, bit for bit)."""
        for j0, j1, c in self.chunks():
            part = w[j0:j1] if w.ndim == 1 else w[:, j0:j1]
            if isinstance(alpha, Tensor):
                part.addcmul_(c, alpha)
            else:
                part.add_(c, alpha=alpha)

    def apply(self, y: Tensor) -> Tensor:
        """y @ z^T for y (k, n) -> (k, m), chunk by chunk."""
        out = None
        for j0, j1, c in self.chunks():
            part = y[:, j0:j1] @ c.T
            out = part if out is None else out + part
        return out

    def columns(self, index: Tensor) -> Tensor:
        """z[:, index]^T, (len(index), m)."""
        out = torch.empty(index.shape[0], self.shape[0], dtype=self.dtype, device=self.device)
        for j0, j1, c in self.chunks():
            sel = (index >= j0) & (index < j1)
            if bool(sel.any()):
                out[sel] = c[:, index[sel] - j0].T
        return out


class SubspaceBasis:
    """The bases (U, V) of the low-rank directions ``z = U Xi V^T / r`` of one (m, n) matrix.

    U (m, r) ~ N(0, 1) is materialised; V (n, r) ~ N(0, 1) is regenerated in row chunks from its
    own seed at every use, except between :meth:`hold` and :meth:`release`, when it is kept
    (n r numbers: 6 % of the matrix at r = 8, width 128), so that a step regenerates it once for
    its products and its update. The chunks are the same either way."""

    def __init__(self, m: int, n: int, rank: int, seed: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        if not 1 <= rank <= min(m, n):
            raise ValueError(f"rank must be in [1, min(m, n) = {min(m, n)}], got {rank}")
        self.m, self.n, self.rank = m, n, rank
        self.seed = int(seed)
        self.dtype = dtype
        self.device = torch.device(device)
        self.u = torch.randn(m, rank, generator=generator(derive_seed(seed, 0), self.device),
                             dtype=dtype, device=self.device)
        self._held: list[tuple[int, int, Tensor]] | None = None

    def hold(self) -> None:
        """Keep V (its chunks) until :meth:`release`."""
        if self._held is None:
            self._held = list(self._regenerate())

    def release(self) -> None:
        self._held = None

    def v_chunks(self) -> Iterator[tuple[int, int, Tensor]]:
        """(j0, j1, V[j0:j1]) for consecutive row blocks of V."""
        return iter(self._held) if self._held is not None else self._regenerate()

    def _regenerate(self) -> Iterator[tuple[int, int, Tensor]]:
        g = generator(derive_seed(self.seed, 1), self.device)
        step = _chunk_cols(self.rank)
        for j0 in range(0, self.n, step):
            j1 = min(self.n, j0 + step)
            yield j0, j1, torch.randn(j1 - j0, self.rank, generator=g, dtype=self.dtype,
                                      device=self.device)

    def v_dense(self) -> Tensor:
        return torch.cat([c for _, _, c in self.v_chunks()])

    def v_cursor(self):
        """``take(a, b)`` -> V[a:b] for ranges that move left to right (streamed step data,
        :func:`pinnbench.streaming.reduce`): the row chunks are regenerated as the ranges reach
        them (or read from the held ones) and at most two are alive, so V is never whole."""
        chunks = self.v_chunks()
        window: list[tuple[int, int, Tensor]] = []

        def take(a: int, b: int) -> Tensor:
            while window and window[0][1] <= a:
                window.pop(0)
            while not window or window[-1][1] < b:
                window.append(next(chunks))
            parts = [c[max(a, j0) - j0:min(b, j1) - j0] for j0, j1, c in window
                     if j0 < b and j1 > a]
            return parts[0] if len(parts) == 1 else torch.cat(parts)

        return take

    def project(self, y: Tensor) -> Tensor:
        """y @ V for y (k, n) -> (k, r)."""
        out = None
        for j0, j1, c in self.v_chunks():
            part = y[:, j0:j1] @ c
            out = part if out is None else out + part
        return out

    def v_rows(self, index: Tensor) -> Tensor:
        """V[index], (len(index), r)."""
        out = torch.empty(index.shape[0], self.rank, dtype=self.dtype, device=self.device)
        for j0, j1, c in self.v_chunks():
            sel = (index >= j0) & (index < j1)
            if bool(sel.any()):
                out[sel] = c[index[sel] - j0]
        return out

    def dense(self, xi: Tensor) -> Tensor:
        """z = U Xi V^T / r, materialised (small matrices only)."""
        return (self.u @ xi) @ self.v_dense().T / self.rank

    def add_to_(self, w: Tensor, a: Tensor) -> None:
        """w += a V^T for a (m, r), chunk by chunk (a = alpha U Xi / r for w += alpha z)."""
        for j0, j1, c in self.v_chunks():
            w[:, j0:j1].addmm_(a, c.T)

    def draw_xi(self, seed: int) -> Tensor:
        return torch.randn(self.rank, self.rank, generator=generator(seed, self.device),
                           dtype=self.dtype, device=self.device)


class Perturbation:
    """One random weight-space direction z over all parameters [W0, b0, ..., WL, bL], described
    by seeds (not to be confused with :class:`pinnbench.directions.Directions`, the input-space
    probes of the spatial estimators).

    ``bases[i]`` is the :class:`SubspaceBasis` of parameter i when it gets a low-rank direction
    (None: full Gaussian). ``xis[i]`` is then its r x r coefficient matrix."""

    def __init__(self, params: Sequence[Tensor], seed: int,
                 bases: Sequence[SubspaceBasis | None]) -> None:
        self.seed = int(seed)
        self.bases = list(bases)
        self.shapes = [tuple(p.shape) for p in params]
        self.dtype = params[0].dtype
        self.device = params[0].device
        self.xis: list[Tensor | None] = []
        for i, basis in enumerate(self.bases):
            self.xis.append(None if basis is None else basis.draw_xi(derive_seed(seed, i)))
        self._shifts: dict[int, Tensor] = {}  # z_i of the tensors evaluated out of place
        self._first: list[tuple[Tensor, Tensor]] = []  # (y V, (y V) Xi^T U^T), by identity

    def shift(self, i: int) -> Tensor:
        """z_i materialised once for this direction, for a tensor that :class:`ShiftedPINN`
        evaluates out of place (every one but W0: width x width numbers at most): the + and -
        evaluations and the update read the same tensor instead of regenerating it (the same
        numbers: :meth:`dense` is deterministic)."""
        z = self._shifts.get(i)
        if z is None:
            z = self._shifts[i] = self.dense(i)
        return z

    def first_layer_shift(self, vy: Tensor) -> Tensor:
        """r z0 y^T = ((y V) Xi^T) U^T for a low-rank z0, given y V: the same for the + and -
        evaluations of this direction (only the factor c / r differs), so it is computed once
        per product ``vy`` (the step's cached tensors, found by identity) and direction."""
        for ref, out in self._first:
            if ref is vy:
                return out
        out = (vy @ self.xis[0].T) @ self.bases[0].u.T
        self._first.append((vy, out))
        return out

    def add_shift_to_(self, i: int, w: Tensor, alpha: float | Tensor) -> None:
        """w += alpha z_i for a full Gaussian z_i: from :meth:`shift`'s tensor when the
        evaluations made it (the numbers of :meth:`GaussianMatrix.add_to_`: one chunk, as every
        tensor but W0 is), else regenerated chunk by chunk."""
        z = self._shifts.get(i)
        if z is None:
            self.gaussian(i).add_to_(w, alpha)
        elif isinstance(alpha, Tensor):
            w.addcmul_(z, alpha)
        else:
            w.add_(z, alpha=alpha)

    def gaussian(self, i: int) -> GaussianMatrix:
        return GaussianMatrix(self.shapes[i], derive_seed(self.seed, i), self.dtype, self.device)

    def dense(self, i: int) -> Tensor:
        """z_i materialised (meant for the small tensors)."""
        basis = self.bases[i]
        return self.gaussian(i).dense() if basis is None else basis.dense(self.xis[i])

    def add_to_(self, params: Sequence[Tensor], alpha: float) -> None:
        """theta += alpha z in place, chunk by chunk (never a full-size z)."""
        for i, p in enumerate(params):
            basis = self.bases[i]
            if basis is None:
                self.gaussian(i).add_to_(p, alpha)
            else:
                basis.add_to_(p, (alpha / basis.rank) * (basis.u @ self.xis[i]))


def add_lowrank_sum_(w: Tensor, terms: Sequence[tuple[SubspaceBasis, Tensor]]) -> None:
    """w += sum_e a_e V_e^T for (basis_e, a_e (m, r)) pairs of bases of w's shape and rank, in
    one pass over w: the V_e are regenerated in lockstep row chunks (same chunking for every
    basis of a shape and rank) and their contributions summed before w is touched."""
    if len(terms) == 1:
        basis, a = terms[0]
        basis.add_to_(w, a)
        return
    a_all = torch.cat([a for _, a in terms], dim=1)  # (m, E r)
    for chunks in zip(*[b.v_chunks() for b, _ in terms]):
        j0, j1 = chunks[0][0], chunks[0][1]
        v_all = torch.cat([c for _, _, c in chunks], dim=1)  # (j1 - j0, E r)
        w[:, j0:j1].addmm_(a_all, v_all.T)


def make_bases(params: Sequence[Tensor], rank: int, seed: int) -> list[SubspaceBasis | None]:
    """A basis for every weight matrix thicker than ``rank`` in both dimensions; None (full
    Gaussian) for biases and thin matrices such as the 1 x width output layer."""
    out: list[SubspaceBasis | None] = []
    for i, p in enumerate(params):
        if p.ndim == 2 and min(p.shape) > rank:
            out.append(SubspaceBasis(p.shape[0], p.shape[1], rank, derive_seed(seed, i),
                                     p.dtype, p.device))
        else:
            out.append(None)
    return out


class FirstLayerCache:
    """Products of the first layer with inputs that do not depend on the direction: W0 y, and
    y V for a low-rank basis, for the pinned points x and the probe directions of a step.

    Everything is cached **by identity**: the step draws its points and probes once
    (:class:`pinnbench.step_data.StepData`) and every evaluation of the step passes the same
    tensor and the same Directions objects, so a lookup is an ``is`` test, never a comparison of
    values (no Python-level work that grows with d). Pinning (``cache.x = x`` or :meth:`pin`)
    drops every product and ansatz jet of the previous points, and each entry keeps a reference
    to the object it was computed from, so a new object can never be served an old one's
    products (a key on ``x._version`` could: every freshly sampled tensor has version 0), and an
    equal-valued probe set drawn anew is simply a miss. The last few probe sets are kept (two per
    sample for the unbiased loss). Anything else (the shifted points of finite-difference
    stencils) is computed afresh. W0's version is part of every key (W0 is the same tensor,
    updated in place), so nothing stale can be returned; the solver clears the cache at the end
    of every step, so no x-sized tensor outlives a step."""

    MAX_DIRECTION_SETS = 4

    def __init__(self, w0: Tensor, basis: SubspaceBasis | None, x: Tensor | None = None) -> None:
        self.w0 = w0
        self.basis = basis
        self._streamed: tuple | None = None
        #: seconds spent drawing streamed blocks and summing their source (the step's data time)
        self.stream_data_time_s = 0.0
        self._x: Tensor | None = None
        self._points: tuple | None = None
        self._dirs: list[tuple[int, Directions, Tensor, Tensor | None]] = []
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
        is dropped (the probe-direction products do not depend on x and are kept)."""
        if x is self._x:
            return
        self._x = x
        self._points = None
        self._ansatz.clear()

    def clear(self) -> None:
        self.pin(None)
        self._dirs.clear()
        self._streamed = None

    def reductions(self, data):
        """The reductions of streamed step data (:func:`pinnbench.streaming.reduce`: source,
        ansatz pieces, x W0^T, x V, W0 v, V^T v), one pass over its blocks per sample and W0
        version, found by identity of ``data`` afterwards (common random numbers: once a step)."""
        from pinnbench.streaming import reduce

        key = self.w0._version
        if self._streamed is None or self._streamed[0] is not data or self._streamed[1] != key:
            red = reduce(data, self.w0, self.basis)
            self.stream_data_time_s += red.data_time_s
            self._streamed = (data, key, red)
        return self._streamed[2]

    def ansatz_jet(self, problem, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        """The problem's (A, B) jets along ``dirs`` at the pinned points. They do not depend on
        theta, so with common random numbers the 2q evaluations of a step share one computation
        (x . v for every point and probe: O(n V D), as much as the first layer itself)."""
        if x is not self._x:
            return problem.ansatz_jet(x, dirs, order)
        key = (x._version, order)
        for ref, k, d, jets in self._ansatz:
            if ref is x and k == key and d is dirs:
                return jets
        jets = problem.ansatz_jet(x, dirs, order)
        self._ansatz.append((x, key, dirs, jets))
        del self._ansatz[:-self.MAX_DIRECTION_SETS]
        return jets

    def _products(self, y: Tensor) -> tuple[Tensor, Tensor | None]:
        return y @ self.w0.T, (self.basis.project(y) if self.basis is not None else None)

    def points(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(x W0^T (n, m), x V (n, r) or None)."""
        if x is not self._x:
            return self._products(x)
        key = (x._version, self.w0._version)
        if self._points is None or self._points[0] is not x or self._points[1] != key:
            self._points = (x, key, *self._products(x))
        return self._points[2], self._points[3]

    def directions(self, dirs: Directions) -> tuple[Tensor, Tensor | None]:
        """(W0 v_k stacked (V, m), V^T v_k stacked (V, r) or None)."""
        key = self.w0._version
        for k, ref, wv, vv in self._dirs:
            if k == key and ref is dirs:
                return wv, vv
        wv = dirs.apply_weight(self.w0)
        vv = None
        if self.basis is not None:
            if isinstance(dirs, CoordinateDirections):
                vv = self.basis.v_rows(dirs.index)
            else:
                vv = self.basis.project(_dense(dirs))
        self._dirs.append((key, dirs, wv, vv))
        del self._dirs[:-self.MAX_DIRECTION_SETS]
        return wv, vv


def _dense(dirs: Directions) -> Tensor:
    if isinstance(dirs, DenseDirections):
        return dirs.v
    raise TypeError(f"matrix-free first layer: unsupported directions {type(dirs).__name__}")


class ShiftedPINN(PINN):
    """The PINN at theta + c z, evaluated without writing theta.

    Every parameter but W0 is materialised out of place (theta_i + c z_i, width^2 numbers at
    most); the first layer is ``x W0^T + c x z0^T`` with x W0^T from the step's
    :class:`FirstLayerCache` and x z0^T matrix-free (low rank: ``((x V) Xi^T) U^T / r``; full
    Gaussian: regenerated column chunks). ``c = 0`` gives the unperturbed model (same code path,
    so the + and - evaluations and the centre share their rounding)."""

    def __init__(self, model: PINN, direction: Perturbation | None, c: float,
                 cache: FirstLayerCache) -> None:
        p = model.params
        shifted = [p[0]]
        for i in range(1, len(p)):
            shifted.append(p[i] if direction is None or c == 0.0
                           else p[i] + c * direction.shift(i))
        super().__init__(model.problem, shifted, model.activation)
        self.direction = None if c == 0.0 else direction
        self.c = c
        self.cache = cache

    def _first(self, y: Tensor, wy: Tensor, vy: Tensor | None, dirs_index: Tensor | None = None
               ) -> Tensor:
        """y W0^T + c y z0^T given y W0^T (and y V for a low-rank z0)."""
        d = self.direction
        if d is None:
            return wy
        basis = d.bases[0]
        if basis is not None:
            return wy + (self.c / basis.rank) * d.first_layer_shift(vy)
        if y is None and dirs_index is None:
            raise ValueError("a full Gaussian first-layer direction needs the points themselves "
                             "(y z0^T); streamed step data gives only the products with a "
                             "low-rank basis: use sdze[subspace=true] with rank < width")
        g = d.gaussian(0)
        corr = g.columns(dirs_index) if dirs_index is not None else g.apply(y)
        return wy + self.c * corr

    def net(self, x: Tensor, params: Sequence[Tensor] | None = None) -> Tensor:
        if params is not None:
            raise ValueError("ShiftedPINN evaluates its own shifted parameters; params= is not "
                             "supported")
        wx, vx = self.cache.points(x)
        h = self._first(x, wx, vx) + self.params[1]
        return _rest(h, self.params)

    def jet(self, x: Tensor, dirs: Directions, order: int,
            params: Sequence[Tensor] | None = None) -> Jet:
        """As :meth:`PINN.jet`, with the ansatz jets shared through the step's cache."""
        self._check_input(x)
        a, b = self.cache.ansatz_jet(self.problem, x, dirs, order)
        return a * self.net_jet(x, dirs, order, params) + b

    def net_jet(self, x: Tensor, dirs: Directions, order: int,
                params: Sequence[Tensor] | None = None) -> Jet:
        if params is not None:
            raise ValueError("ShiftedPINN evaluates its own shifted parameters; params= is not "
                             "supported")
        wx, vx = self.cache.points(x)
        wv, vv = self.cache.directions(dirs)
        index = dirs.index if isinstance(dirs, CoordinateDirections) else None
        v_dense = None if index is not None else _dense(dirs)
        return self._net_jet_from(self._first(x, wx, vx) + self.params[1],
                                  self._first(v_dense, wv, vv, index), order)

    def streamed_jet(self, red, k: int, order: int) -> Jet:
        """The jet of u = A N along probe set k of streamed step data, from its reductions
        ``red`` (:class:`pinnbench.streaming.Reductions`): the first layer's coefficients are
        x W0^T + b0 and W0 v (plus the low-rank shift), A's jet is [s, 2 x.v, ||v||^2] mapped by
        the problem (``ansatz_jet_from``); no point or probe is needed."""
        a, b = self.problem.ansatz_jet_from(red.sqnorm, red.xv[k], red.vsq[k], order)
        net = self._net_jet_from(self._first(None, red.wx, red.vx) + self.params[1],
                                 self._first(None, red.wv[k], red.vv[k]), order)
        return a * net + b

    def _net_jet_from(self, first: Tensor, first_dirs: Tensor, order: int) -> Jet:
        """The jet of N from its first layer's coefficients: ``first`` = x W^T + b (n, h) and
        ``first_dirs`` = W v (V, h) at the shifted W."""
        z = Jet([first.unsqueeze(1), first_dirs.unsqueeze(0)], order)
        p = self.params
        last = len(p) // 2 - 1
        for layer in range(1, len(p) // 2):
            a = z.tanh()
            w, b = p[2 * layer], p[2 * layer + 1]
            z = _linear_jet(a, w)
            z.coeffs[0] = z.coeffs[0] + b
            if layer == last:
                z = z.map(lambda c: c.squeeze(-1))
        return z


def _linear_jet(a: Jet, w: Tensor) -> Jet:
    """The jet of a W^T (a linear map acts on every Taylor coefficient alike): the coefficients
    (n, 1, h), (n, V, h), ... stacked along their second axis into one product with W^T, then
    split again (views), one matrix product a layer instead of one per coefficient. Each output
    is the same dot product as apart (bit for bit on MKL at the step's shapes: 100 steps of the
    sdze specs of scripts/trajectory_check.py unchanged)."""
    cs = a.coeffs
    if not all(isinstance(c, Tensor) and c.ndim == 3 for c in cs) or len(
            {(c.shape[0], c.shape[2]) for c in cs}) != 1:
        return a.map(lambda c: c @ w.T)
    out = torch.cat(cs, dim=1) @ w.T
    return Jet(list(out.split([c.shape[1] for c in cs], dim=1)), a.order)


def _rest(h: Tensor, p: Sequence[Tensor]) -> Tensor:
    """Layers 1..L of the MLP after the first affine map (same arithmetic as PINN.net)."""
    for layer in range(1, len(p) // 2):
        h = torch.tanh(h)
        w, b = p[2 * layer], p[2 * layer + 1]
        h = torch.addmm(b, h, w.T)
    return h.squeeze(-1)

