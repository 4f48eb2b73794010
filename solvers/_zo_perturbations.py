"""Perturbations: the random weight-space directions z of the zeroth-order solvers.

Two-point SPSA (Spall 1992) estimates the gradient of L(theta) from two losses,

    c = [L(theta + eps z) - L(theta - eps z)] / (2 eps),      g_hat = c z,

and E[g_hat] = E[z z^T] grad L + O(eps^2). Nothing here ever stores a z of parameter size: every
perturbation is a *seed*, and z is regenerated from it piece by piece when needed (MeZO's seed
trick, Malladi et al., NeurIPS 2023).

Per weight matrix W (m x n, W[out, in]) a perturbation is one of

* **full Gaussian** (:class:`GaussianMatrix`): z ~ N(0, I_{mn}), regenerated in column chunks of
  at most ``CHUNK_ELEMENTS`` numbers from one generator (the chunking is part of the definition:
  the same seed and the same chunking give the same numbers);
* **low rank** (:class:`SubspaceBasis` + an r x r matrix Xi): ``z = U Xi V^T / r`` with U (m x r),
  V (n x r) and Xi all standard Gaussian (SubZero, Yu et al. 2024; LOZO, Chen et al. 2024).
  U and V come from a basis seed (refreshed every T0 steps by the solver), Xi is fresh per
  perturbation. Scaling: E[z_ij^2] = sum_ab E[U_ia^2] E[Xi_ab^2] E[V_jb^2] / r^2 = 1, and
  E[zz^T] = E[VV^T] (x) E[UU^T] / r^2 = (r I_n) (x) (r I_m) / r^2 = I, so over the refreshes
  g_hat is unbiased for the full gradient exactly as with a full Gaussian z (same per-entry
  variance, same meaning of eps and of the step size), while for a fixed basis
  E_Xi[g_hat_W] = U U^T G V V^T / r^2 (G = dL/dW): a sketch of the gradient in an r^2-dimensional
  subspace, whose exploration variance is O(r^2) instead of O(mn). By default U and V are not
  orthonormalised (for n >> r, V^T V / n = I + O(1/sqrt(n)) anyway);
* **orthonormal low rank** (:class:`OrthonormalSubspaceBasis`, SubZero's basis): the same
  ``z = U Xi V^T / r`` with U = sqrt(m) Q_U and V = sqrt(n) Q_V, Q_U, Q_V with orthonormal
  columns (Haar-distributed: the Q factors, with a positive-diagonal R, of the Gaussian U and V
  above). Then E[Q Q^T] = (r/m) I_m, so E[zz^T] = (n r/n)(m r/m) I / r^2 = I: the same scaling as
  the Gaussian basis, and for a held basis E_Xi[g_hat_W] = (mn/r^2) P_U G P_V, an exact
  projection. V is orthonormalised *without being held*: one pass over its Gaussian row chunks
  gives the r x r Gram matrix V^T V = L L^T (Cholesky), and every later regeneration maps each
  chunk of V^T through sqrt(n) L^{-1} (so Q_V^T Q_V = L^{-1} V^T V L^{-T} = I); that costs one more
  regeneration of V per refresh and 2 n r^2 flops per regeneration;
* biases and the 1 x width output layer (too thin for a subspace): a full Gaussian vector.

**The small parts of a step's perturbations are one draw** (:class:`SmallBlock`): every z_i
but W0's full Gaussian z0 (the biases, the output layer, a hidden matrix without a basis) and
every Xi of the step's K perturbations are the rows of one (K, S) standard Gaussian block from
one generator (seed ``derive_seed(step_seed, SMALL_PARTS)``, a tag no other draw of the step
uses), row k holding z_k's parts in parameter order.
Each number is still an independent N(0, 1), so every expectation above is unchanged; what
changes is only which numbers a seed gives (ours, issue 22: the step drew them as 8 K tensors
from 8 K generators, 64 of its 444 ATen ops at the defaults, and stacked them again for the
batched evaluation and the update, which now read the block's columns as they are).

U is m x r (small) and is materialised; V (n x r, 320 MB at n = 10^7, r = 8) is only ever
regenerated in row chunks, so a low-rank perturbation costs O(m r) memory. A chunk of V is drawn
as its transpose, V[j0:j1]^T = an (r, j1 - j0) standard Gaussian draw: so that the momentum's
update can draw the V_e^T of all its terms as the rows of one (E r, j1 - j0) block, written in
place, and read that block as the right factor of one product (ours, issue 22: the chunks of V
drawn (j1 - j0, r) had to be concatenated side by side first, a copy of 4.8 W0 of the 34.5 W0
of d-sized traffic of sdze's step at d = 1e5).

**Sharded W0** (one rank of a sharded cell holds the columns [lo, hi) of W0 in whole column
blocks, :class:`pinnbench.cells.sharding.ShardPlan`, docs/sharding.md): the d-sized parts of W0's
perturbation, V's rows (low rank) or z0's columns (full Gaussian), are then drawn block by block,
block k from its own seed (``derive_seed(seed, 1, k)`` for V, ``derive_seed(seed, k)`` for z0),
as the sharded cell's W0 and data are. Each rank draws exactly its own blocks, and every number
of the ranks' V (or z0), put side by side, is the 1-rank sharded run's, bit for bit, for every R.
They are not the numbers of the one-stream definition above (a torch generator cannot skip ahead
to a shard's first row without drawing everything before it): a sharded cell has its own
definition of W0, the data and the perturbations, the same for every R.

Read next: :mod:`pinnbench.solvers._zo_evaluation` (the loss at theta + c z without writing
theta).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from pinnbench.seeds import derive_seed, generator

#: largest number of random numbers generated at once when regenerating a big perturbation
CHUNK_ELEMENTS = 2**22
#: the tag of the small parts' block seed, derive_seed(step seed, SMALL_PARTS): 1 is the
#: perturbations', 2 to 5 the evaluations' samples (solvers/_zo_step.py), 7 the diagnostics'
SMALL_PARTS = 6


def _chunk_cols(rows: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, rows))


def _shard_blocks(plan) -> Iterator[tuple[int, int, int]]:
    """(j0, j1, k): this rank's column block k of ``plan`` as the range [j0, j1) of its own
    columns."""
    return plan.input_blocks()  # the time column of a time-dependent family: block n_blocks


def _joined(chunks: list[Tensor], dim: int) -> Tensor:
    """The chunks concatenated along ``dim``; a single chunk as it is (no copy, no launch)."""
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=dim)


class GaussianMatrix:
    """z ~ N(0, I) of shape (m, n) (or (m,) for a vector), regenerated from ``seed`` in column
    chunks; never held whole unless :meth:`dense` is asked for. With ``plan`` (a sharded W0,
    module docstring) the shape is this rank's (m, plan.input_columns) and column block k comes
    from ``derive_seed(seed, k)``."""

    def __init__(self, shape: Sequence[int], seed: int, dtype: torch.dtype,
                 device: torch.device, plan=None) -> None:
        self.shape = tuple(shape)
        self.seed = int(seed)
        self.dtype = dtype
        self.device = torch.device(device)
        self.plan = plan
        if plan is not None and (len(self.shape) != 2 or self.shape[1] != plan.input_columns):
            raise ValueError(f"a sharded z0 is (m, {plan.input_columns}) on this rank, not "
                             f"{self.shape}")

    def chunks(self) -> Iterator[tuple[int, int, Tensor]]:
        """(j0, j1, z[:, j0:j1]) for consecutive column blocks (vectors: element blocks)."""
        if self.plan is not None:
            for j0, j1, k in _shard_blocks(self.plan):
                yield j0, j1, torch.randn(self.shape[0], j1 - j0,
                                          generator=generator(derive_seed(self.seed, k),
                                                              self.device),
                                          dtype=self.dtype, device=self.device)
            return
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
        return _joined([c for _, _, c in self.chunks()], dim=0 if len(self.shape) == 1 else 1)

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
    """The bases (U, V) of the low-rank perturbations ``z = U Xi V^T / r`` of one (m, n) matrix.

    U (m, r) ~ N(0, 1) is materialised; V (n, r) ~ N(0, 1) is regenerated in row chunks from its
    own seed at every use, except between :meth:`keep_v` and :meth:`drop_v`, when its chunks are
    kept (n r numbers: 6 % of the matrix at r = 8, width 128), so that a step regenerates it once
    for its products and its update. The chunks are the same either way. Chunk [j0, j1) of V is
    drawn as its transpose, an (r, j1 - j0) Gaussian (module docstring): :meth:`vt_chunks` yields
    those, :meth:`v_chunks` their (j1 - j0, r) views.

    With ``plan`` (a sharded W0 of n = plan.input_dim columns, module docstring) this rank holds
    V's rows of its columns only, as ``self.n`` = plan.input_columns rows indexed from 0, row
    block k drawn from ``derive_seed(seed, 1, k)``; U is the same on every rank."""

    def __init__(self, m: int, n: int, rank: int, seed: int, dtype: torch.dtype,
                 device: torch.device, plan=None) -> None:
        if not 1 <= rank <= min(m, n):
            raise ValueError(f"rank must be in [1, min(m, n) = {min(m, n)}], got {rank}")
        if plan is not None and plan.input_dim != n:
            raise ValueError(f"the shard plan is for {plan.input_dim} input columns, the matrix "
                             f"has n = {n}")
        self.plan = plan
        self.m, self.n, self.rank = m, (n if plan is None else plan.input_columns), rank
        self.seed = int(seed)
        self.dtype = dtype
        self.device = torch.device(device)
        self.u = torch.randn(m, rank, generator=generator(u_seed(seed), self.device),
                             dtype=dtype, device=self.device)
        self._kept_v: list[tuple[int, int, Tensor]] | None = None

    def keep_v(self) -> None:
        """Keep V (its chunks) until :meth:`drop_v`."""
        if self._kept_v is None:
            self._kept_v = list(self._regenerate())

    def drop_v(self) -> None:
        self._kept_v = None

    def vt_chunks(self, into: Callable[[int, int], Tensor] | None = None
                  ) -> Iterator[tuple[int, int, Tensor]]:
        """(j0, j1, V[j0:j1]^T), (r, j1 - j0) contiguous, for consecutive row blocks of V.
        ``into(j0, j1)``, if given, returns the contiguous (r, j1 - j0) tensor that the chunk is
        written into (drawn there, or copied from a kept chunk) and yielded as; it is called
        once per chunk, in order, just before the chunk is drawn."""
        if self._kept_v is None:
            yield from self._regenerate(into)
            return
        for j0, j1, c in self._kept_v:
            yield j0, j1, (c if into is None else into(j0, j1).copy_(c))

    def v_chunks(self) -> Iterator[tuple[int, int, Tensor]]:
        """(j0, j1, V[j0:j1]) for consecutive row blocks of V: views of :meth:`vt_chunks`."""
        for j0, j1, c in self.vt_chunks():
            yield j0, j1, c.T

    def _regenerate(self, into: Callable[[int, int], Tensor] | None = None
                    ) -> Iterator[tuple[int, int, Tensor]]:
        """(j0, j1, V[j0:j1]^T) drawn afresh (:meth:`vt_chunks`)."""
        if self.plan is not None:
            for j0, j1, k in _shard_blocks(self.plan):
                g = generator(derive_seed(self.seed, 1, k), self.device)
                yield j0, j1, self._draw(g, j0, j1, into)
            return
        g = generator(v_seed(self.seed), self.device)
        step = _chunk_cols(self.rank)
        for j0 in range(0, self.n, step):
            j1 = min(self.n, j0 + step)
            yield j0, j1, self._draw(g, j0, j1, into)

    def _draw(self, g: torch.Generator, j0: int, j1: int,
              into: Callable[[int, int], Tensor] | None) -> Tensor:
        """V[j0:j1]^T ~ N(0, 1), (r, j1 - j0), from ``g``: into ``into(j0, j1)`` if given (the same
        numbers: one draw into a contiguous tensor either way)."""
        if into is None:
            return torch.randn(self.rank, j1 - j0, generator=g, dtype=self.dtype,
                               device=self.device)
        # what torch.randn does after its allocation (one op, where randn(out=) is two)
        return into(j0, j1).normal_(generator=g)

    def v_dense(self) -> Tensor:
        return _joined([c for _, _, c in self.v_chunks()], dim=0)

    def vt_dense(self) -> Tensor:
        """V^T, (r, n) contiguous."""
        return _joined([c for _, _, c in self.vt_chunks()], dim=1)

    def v_cursor(self):
        """``take(a, b)`` -> V[a:b] for ranges that move left to right (streamed step data,
        :func:`pinnbench.maths.streaming.reduce`): the row chunks are regenerated as the ranges reach
        them (or read from the kept ones) and at most two are alive, so V is never whole."""
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
        return (self.u @ xi) @ self.vt_dense() / self.rank

    def add_to_(self, w: Tensor, a: Tensor) -> None:
        """w += a V^T for a (m, r), chunk by chunk (a = alpha U Xi / r for w += alpha z)."""
        for j0, j1, c in self.vt_chunks():
            w[:, j0:j1].addmm_(a, c)


def _positive_qr(a: Tensor) -> Tensor:
    """Q of a = Q R with diag(R) > 0: unique, so a Gaussian ``a`` gives a Haar-distributed Q."""
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r))


class OrthonormalSubspaceBasis(SubspaceBasis):
    """The bases of ``z = U Xi V^T / r`` with orthonormal columns scaled to the Gaussian
    basis's norms: U = sqrt(m) Q_U, V = sqrt(n) Q_V (SubZero, Yu et al. 2024, orthonormalise
    their bases by QR; here V is orthonormalised matrix-free, see the module docstring).

    The same seeds give Q_U, Q_V = the Q factors of the Gaussian basis's U and V, so the
    orthonormal variant spans exactly the subspace of the Gaussian one with the same seed."""

    def __init__(self, m: int, n: int, rank: int, seed: int, dtype: torch.dtype,
                 device: torch.device, plan=None) -> None:
        if plan is not None:  # the Gram matrix would need an all-reduce over the shards
            raise ValueError("the orthonormal basis is not sharded: its Gram matrix V^T V needs "
                             "every shard's rows of V")
        super().__init__(m, n, rank, seed, dtype, device)
        self.u = _positive_qr(self.u) * math.sqrt(m)
        gram = None
        for _, _, c in super()._regenerate():  # one pass over the Gaussian V^T: V^T V (r x r)
            part = c @ c.T
            gram = part if gram is None else gram + part
        chol = torch.linalg.cholesky(gram)
        eye = torch.eye(rank, dtype=dtype, device=self.device)
        #: sqrt(n) L^{-1}: maps a chunk of the Gaussian V^T onto the same columns of sqrt(n) Q_V^T
        self._whiten_t = torch.linalg.solve_triangular(chol, eye, upper=False) * math.sqrt(n)

    def _regenerate(self, into: Callable[[int, int], Tensor] | None = None
                    ) -> Iterator[tuple[int, int, Tensor]]:
        for j0, j1, c in super()._regenerate():
            yield j0, j1, torch.mm(self._whiten_t, c, out=None if into is None else into(j0, j1))


class SmallBlock:
    """The small parts of K perturbations (module docstring): one (K, S) standard Gaussian
    block, ``flat``, whose columns [offset_i, offset_i + numel_i) hold, for every parameter i,
    its Xi (r x r) when it has a basis, else its z_i when i > 0 (W0's full Gaussian z0 is
    parameter-sized and regenerated from its own seed instead)."""

    def __init__(self, shapes: Sequence[tuple[int, ...]], bases: Sequence[SubspaceBasis | None],
                 k: int, seed: int, dtype: torch.dtype, device: torch.device) -> None:
        self.k = int(k)
        #: parameter i -> (offset, shape) of its part of a row, for the parameters drawn here
        self.layout: dict[int, tuple[int, tuple[int, ...]]] = {}
        size = 0
        for i, (shape, basis) in enumerate(zip(shapes, bases)):
            part = (basis.rank, basis.rank) if basis is not None else (
                None if i == 0 else tuple(shape))
            if part is not None:
                self.layout[i] = (size, part)
                size += math.prod(part)
        self.flat = torch.randn(self.k, size, generator=generator(seed, device), dtype=dtype,
                                device=device)
        self._stacked: dict[int, Tensor] = {}

    def stacked(self, i: int) -> Tensor:
        """Parameter i's part of every row, (K, *part): a view of the block (no draw, no copy)."""
        out = self._stacked.get(i)
        if out is None:
            out = self._stacked[i] = self.split(self.flat, i)
        return out

    def split(self, rows: Tensor, i: int) -> Tensor:
        """Parameter i's part of ``rows`` (..., S) as (..., *part): a view."""
        offset, part = self.layout[i]
        return rows[..., offset:offset + math.prod(part)].unflatten(-1, part)


class Perturbation:
    """One random weight-space direction z over all parameters [W0, b0, ..., WL, bL], described
    by seeds and row ``row`` of a :class:`SmallBlock` (the input-space directions of the spatial
    estimators are *probes*, :class:`pinnbench.maths.directions.Directions`).

    ``bases[i]`` is the :class:`SubspaceBasis` of parameter i when it gets a low-rank perturbation
    (None: full Gaussian). ``xis[i]`` is then its r x r coefficient matrix. ``plan``: W0's shard
    (module docstring), None when this process holds all of W0. Without ``block`` the
    perturbation draws its own one-row block from ``derive_seed(seed, SMALL_PARTS)``."""

    def __init__(self, params: Sequence[Tensor], seed: int,
                 bases: Sequence[SubspaceBasis | None], plan=None,
                 block: SmallBlock | None = None, row: int = 0) -> None:
        self.seed = int(seed)
        self.plan = plan
        self.bases = list(bases)
        self.shapes = [tuple(p.shape) for p in params]
        self.dtype = params[0].dtype
        self.device = params[0].device
        if block is None:
            block = SmallBlock(self.shapes, self.bases, 1, derive_seed(self.seed, SMALL_PARTS),
                               self.dtype, self.device)
        self.block, self.row = block, int(row)
        self._parts: dict[int, Tensor] = {}  # the views of this row, made on first use
        self._small: dict[int, Tensor] = {}  # z_i of the tensors evaluated out of place

    @property
    def xis(self) -> list[Tensor | None]:
        """Xi_i of every parameter with a basis (None for the others)."""
        return [None if b is None else self.part(i) for i, b in enumerate(self.bases)]

    def part(self, i: int) -> Tensor:
        """This perturbation's row of the block for parameter i: Xi_i of a parameter with a
        basis, else z_i (i > 0); a view, the same tensor at every call."""
        z = self._parts.get(i)
        if z is None:
            z = self._parts[i] = self.block.stacked(i)[self.row]
        return z

    def small(self, i: int) -> Tensor:
        """z_i materialised once for this perturbation, for a tensor that the shifted evaluation
        adds out of place (every one but W0: width x width numbers at most): the + and -
        evaluations and the update read the same tensor (the block's view where z_i is in it,
        U Xi_i V_i^T / r made once for a low-rank one)."""
        z = self._small.get(i)
        if z is None:
            z = self._small[i] = self.dense(i)
        return z

    def made(self, i: int) -> Tensor:
        """z_i: :meth:`small`'s tensor when the evaluations made one, else materialised anew and
        not kept (W0's full Gaussian z is parameter-sized)."""
        z = self._small.get(i)
        return self.dense(i) if z is None else z

    def add_small_to_(self, i: int, w: Tensor, alpha: float | Tensor) -> None:
        """w += alpha z_i for a full Gaussian z_i: from the block, or W0's z0 regenerated chunk
        by chunk."""
        if i not in self.block.layout:
            self.gaussian(i).add_to_(w, alpha)
        elif isinstance(alpha, Tensor):
            w.addcmul_(self.part(i), alpha)
        else:
            w.add_(self.part(i), alpha=alpha)

    def gaussian(self, i: int) -> GaussianMatrix:
        """W0's full Gaussian z0 (i = 0, no basis), regenerated from its own seed."""
        if i != 0 or self.bases[0] is not None:
            raise ValueError(f"only W0's full Gaussian z0 is regenerated from a seed, not "
                             f"parameter {i}'s (it is in the perturbation's block)")
        return GaussianMatrix(self.shapes[0], z0_seed(self.seed), self.dtype, self.device,
                              self.plan)

    def dense(self, i: int) -> Tensor:
        """z_i materialised (meant for the small tensors; W0's z0 regenerated whole)."""
        basis = self.bases[i]
        if basis is not None:
            return basis.dense(self.part(i))
        return self.part(i) if i in self.block.layout else self.gaussian(i).dense()

    def add_to_(self, params: Sequence[Tensor], alpha: float) -> None:
        """theta += alpha z in place, chunk by chunk (never a full-size z)."""
        for i, w in enumerate(params):
            basis = self.bases[i]
            if basis is None:
                self.add_small_to_(i, w, alpha)
            else:
                basis.add_to_(w, (alpha / basis.rank) * (basis.u @ self.part(i)))


def one_block(zs: Sequence[Perturbation]) -> SmallBlock | None:
    """The block whose rows are exactly ``zs`` in order (those :func:`draw_perturbations` drew),
    else None."""
    block = zs[0].block
    ok = len(zs) == block.k and all(z.block is block and z.row == k for k, z in enumerate(zs))
    return block if ok else None


def stacked_parts(zs: Sequence[Perturbation], i: int) -> Tensor:
    """:meth:`Perturbation.part` of every z_k of ``zs`` stacked, (K, *part): the block's columns
    (a view) when ``zs`` are one block's rows in order, else stacked."""
    block = one_block(zs)
    return block.stacked(i) if block is not None else torch.stack([z.part(i) for z in zs])


def stacked_small(zs: Sequence[Perturbation], i: int) -> Tensor:
    """z_{k,i} of every perturbation z_k of ``zs`` stacked, (K, *shape of parameter i): a low-rank
    z_i as one batched product for all k, (U Xi_k) V^T / r (the numbers of :meth:`Perturbation.dense`,
    bit for bit on MKL at every shape tried), a full Gaussian one (i > 0) as its parts
    (:func:`stacked_parts`)."""
    basis = zs[0].bases[i]
    parts = stacked_parts(zs, i)
    return parts if basis is None else (basis.u @ parts) @ basis.vt_dense() / basis.rank


def draw_perturbations(params: Sequence[Tensor], step_seed: int, q: int,
                       bases: Sequence[SubspaceBasis | None],
                       plan=None) -> list[Perturbation]:
    """The q perturbations z_1..z_q of the step with seed ``step_seed``: z_k from the seed
    (step_seed, 1, k) (W0's full Gaussian z0) and row k of one block of their small parts
    from the seed (step_seed, SMALL_PARTS), low rank where ``bases`` gives a basis; ``plan``:
    W0's shard."""
    block = SmallBlock([tuple(p.shape) for p in params], bases, q,
                       derive_seed(step_seed, SMALL_PARTS), params[0].dtype, params[0].device)
    return [Perturbation(params, perturbation_seed(step_seed, k), bases, plan, block, k)
            for k in range(q)]


def perturbation_seed(step_seed: int, k: int) -> int:
    """The seed of the step's k-th perturbation."""
    return derive_seed(step_seed, 1, k)


def z0_seed(seed: int) -> int:
    """The seed W0's full Gaussian z0 of the perturbation with seed ``seed`` is regenerated
    from."""
    return derive_seed(seed, 0)


def make_bases(params: Sequence[Tensor], rank: int, seed: int,
               plan=None, orthonormal: bool = False) -> list[SubspaceBasis | None]:
    """A basis for every weight matrix thicker than ``rank`` in both dimensions (orthonormal
    columns, scaled, with ``orthonormal``); None (full Gaussian) for biases and thin matrices
    such as the 1 x width output layer. ``plan``: W0 is this rank's shard of a
    (width, plan.input_dim) matrix (module docstring); its thickness is the whole matrix's, so
    every rank decides alike."""
    kind = OrthonormalSubspaceBasis if orthonormal else SubspaceBasis
    out: list[SubspaceBasis | None] = []
    for i, p in enumerate(params):
        shard = plan if i == 0 else None
        shape = tuple(p.shape) if shard is None else (p.shape[0], shard.input_dim)
        if has_basis(shape, rank):
            out.append(kind(shape[0], shape[1], rank, basis_seed(seed, i), p.dtype, p.device,
                            shard))
        else:
            out.append(None)
    return out


def has_basis(shape: Sequence[int], rank: int) -> bool:
    """Whether a parameter of ``shape`` (the whole matrix's, for a sharded W0) gets a low-rank
    basis: a matrix thicker than ``rank`` in both dimensions."""
    return len(shape) == 2 and min(shape) > rank


def basis_seed(bases_seed: int, i: int) -> int:
    """The seed of parameter i's basis among the bases drawn from ``bases_seed``."""
    return derive_seed(bases_seed, i)


def u_seed(seed: int) -> int:
    """The seed U of the basis with seed ``seed`` is drawn from."""
    return derive_seed(seed, 0)


def v_seed(seed: int) -> int:
    """The seed V of the (unsharded) basis with seed ``seed`` is regenerated from."""
    return derive_seed(seed, 1)
