"""Streamed step data: points and probes generated column block by column block from per-block
seeds, consumed as reductions, so no n x D tensor exists (issue 16; docs/streaming.md).

Everything a zeroth-order step needs from its points x (n, D) and probes v (V, D) on a ball
problem is a handful of reductions over the D coordinates:

    x W0^T (n, h), x V (n, r), W0 v (V, h), V^T v (V, r)   the first layer and its subspace
    s = ||x||^2 (n,), x . v (n, V), ||v||^2 (V,)           the ansatz A = 1 - s/R^2 and its jet
    the window sums of the many-body source (n,) each      f(x), blocks with their halo

so a step walks the columns in blocks of ``width`` columns, draws each block of x and of v from
its own seed (:class:`ColumnStream`: block k of a stream with seed s comes from
``generator(derive_seed(s, k))``, so any block can be drawn again, in any order, on any device),
adds the block's contributions to the reductions and drops it (:func:`reduce`). Memory: a few
blocks of n x width numbers (``STREAM_BLOCK_ELEMENTS``), whatever D.

The radial sampler x = r g / ||g|| needs ||g|| before any x is known: it is a first pass over
the blocks of g (:class:`RadialBallStream`), done when the sample is drawn.

Same distribution as the materialised path (:func:`pinnbench.maths.step_data.draw_step_data`), not
the same numbers: the materialised sampler draws g as one (n, D) tensor from one generator, the
stream draws it block by block from per-block seeds. :meth:`StreamedStepData.materialise` gives
the materialised path *of the same streamed sample* (its blocks concatenated), against which
tests/test_streaming.py checks the streamed losses, quotients and errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor

from pinnbench.maths.estimators.directional import as_matrix
from pinnbench.seeds import derive_seed, draw_seed, generator
from pinnbench.timing import clock

#: numbers in one block of points (n x width): a block's width is STREAM_BLOCK_ELEMENTS // n
#: columns (at least MIN_BLOCK_COLUMNS). Part of the stream's definition: another width gives
#: other numbers (the same distribution).
STREAM_BLOCK_ELEMENTS = 2**22
#: narrowest block (a many-body window's halo must fit in one block)
MIN_BLOCK_COLUMNS = 4
#: probe distributions a stream can draw
STREAM_DISTS = ("rademacher", "gaussian")


def block_width(n_rows: int) -> int:
    return max(MIN_BLOCK_COLUMNS, STREAM_BLOCK_ELEMENTS // max(1, n_rows))


class ColumnStream:
    """A (rows, cols) random matrix defined block by block: block k (columns
    [k width, (k + 1) width)) is drawn from ``generator(derive_seed(seed, k))`` with entries
    N(0, 1) (``gaussian``) or +-1 with probability 1/2 each (``rademacher``)."""

    def __init__(self, rows: int, cols: int, width: int, seed: int, dist: str,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        if dist not in STREAM_DISTS:
            raise ValueError(f"a column stream draws {' or '.join(STREAM_DISTS)} entries, "
                             f"not {dist!r}")
        self.rows, self.cols, self.width = int(rows), int(cols), int(width)
        self.seed, self.dist = int(seed), dist
        self.dtype, self.device = dtype, torch.device(device)

    @property
    def n_blocks(self) -> int:
        return -(-self.cols // self.width)

    def bounds(self) -> Iterator[tuple[int, int, int]]:
        """(k, a, b): block k covers the columns [a, b)."""
        for k in range(self.n_blocks):
            a = k * self.width
            yield k, a, min(a + self.width, self.cols)

    def block(self, k: int) -> Tensor:
        a = k * self.width
        shape = (self.rows, min(a + self.width, self.cols) - a)
        g = generator(derive_seed(self.seed, k), self.device)
        if self.dist == "gaussian":
            return torch.randn(shape, generator=g, dtype=self.dtype, device=self.device)
        bits = torch.randint(0, 2, shape, generator=g, dtype=torch.int8, device=self.device)
        return bits.to(self.dtype).mul_(2.0).sub_(1.0)

    def dense(self) -> Tensor:
        """The whole matrix (tests and small D only)."""
        return torch.cat([self.block(k) for k, _, _ in self.bounds()], dim=1)


class RadialBallStream:
    """x = r g / ||g||, g ~ N(0, I_D) (a :class:`ColumnStream`), r ~ U[r_min, r_max]: the
    distribution of :func:`pinnbench.maths.problem.radius_uniform_ball`, streamed. The radii come from
    ``generator(derive_seed(seed, 1))``, g from the seed ``derive_seed(seed, 0)``; ||g||^2 is a
    first pass over the blocks of g (n numbers kept)."""

    def __init__(self, n: int, dim: int, width: int, seed: int, *, r_min: float = 0.0,
                 r_max: float = 1.0, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        self.g = ColumnStream(n, dim, width, derive_seed(seed, 0), "gaussian", dtype, device)
        gen = generator(derive_seed(seed, 1), self.g.device)
        r = r_min + (r_max - r_min) * torch.rand(n, 1, generator=gen, dtype=dtype,
                                                 device=self.g.device)
        sq = torch.zeros(n, dtype=dtype, device=self.g.device)
        for k, _, _ in self.g.bounds():
            sq += torch.linalg.vector_norm(self.g.block(k), dim=1).square_()
        self.scale = r / sq.sqrt().unsqueeze(1)  # (n, 1): x = g * scale

    @property
    def n(self) -> int:
        return self.g.rows

    def bounds(self) -> Iterator[tuple[int, int, int]]:
        return self.g.bounds()

    def block(self, k: int) -> Tensor:
        return self.g.block(k).mul_(self.scale)

    def dense(self) -> Tensor:
        return torch.cat([self.block(k) for k, _, _ in self.bounds()], dim=1)


@dataclass(frozen=True, eq=False)
class StreamedStepData:
    """One step's spatial sample as streams: ``points`` (a :class:`RadialBallStream`),
    ``probes`` (one :class:`ColumnStream` of V rows per independent estimate), all on the same
    column blocks. The counterpart of :class:`pinnbench.maths.step_data.StepData`; solvers hold it and
    share it by identity exactly as they do a StepData."""

    problem: object
    points: RadialBallStream
    probes: tuple[ColumnStream, ...]
    coordinates: None = None
    streamed: bool = field(default=True, init=False)

    def blocks(self) -> Iterator[tuple[int, int, Tensor, list[Tensor]]]:
        """(a, b, x[:, a:b], [v[:, a:b] for each probe set]), left to right."""
        for k, a, b in self.points.bounds():
            yield a, b, self.points.block(k), [p.block(k) for p in self.probes]

    def materialise(self, opts: dict):
        """The materialised :class:`pinnbench.maths.step_data.StepData` of this very sample (its
        blocks concatenated, the source from ``problem.source``, the probes as stde ``Probes``
        with estimator options ``opts``): the reference of the streamed path at small D."""
        from pinnbench.maths.directions import DenseDirections
        from pinnbench.maths.estimators import draw_probes
        from pinnbench.maths.step_data import StepData

        problem = self.problem
        x = self.points.dense()
        with torch.no_grad():
            f = problem.source(x)
        sets = []
        for stream in self.probes:
            drawn = draw_probes(problem, "stde", torch.Generator(device=x.device).manual_seed(0),
                                stream.rows, dtype=problem.dtype, device=x.device, **opts)
            (group,) = drawn.groups.values()
            group.dirs = DenseDirections(stream.dense())
            sets.append(drawn)
        return StepData(x, f, tuple(sets))


#: tags of the seeds a streamed sample derives from an integer seed on the host
#: (:func:`draw_streamed_step_data`): the points' stream, and each probe set's (with its index)
POINTS_SEED, PROBES_SEED = 0, 1


def draw_streamed_step_data(problem, points: int, generator: torch.Generator | int, probes: int,
                            opts: dict, sets: int = 1,
                            probe_generator: torch.Generator | int | None = None
                            ) -> StreamedStepData:
    """The streamed counterpart of :func:`pinnbench.maths.step_data.draw_step_data` for the stde
    estimator with dense probes: one seed for the points from ``generator``, then one seed per
    probe set from ``probe_generator`` (default: continuing ``generator``); the first pass over
    the points (their norms) is done here.

    ``generator`` and ``probe_generator`` may be integer seeds instead: the points' stream is
    then ``derive_seed(seed, POINTS_SEED)`` and probe set j's ``derive_seed(probe seed,
    PROBES_SEED, j)`` (the probe seed defaulting to the points' seed), derived on the host. A
    seed drawn from a generator is read back from its device (``draw_seed``): a host sync, two
    a step of a zeroth-order solver on the old path (ours, issue 22: its step passes the
    integers it seeded its sample's generators from)."""
    if not getattr(problem, "supports_streaming", False):
        raise ValueError(f"{problem.id} cannot stream its step data (supports_streaming is "
                         "False); streamed data exists for the ball problems")
    dist = opts.get("dist", "rademacher")
    if dist not in STREAM_DISTS:
        raise ValueError(f"streamed probes are {' or '.join(STREAM_DISTS)}, not {dist!r}")
    width = block_width(points)
    x_seed = (derive_seed(generator, POINTS_SEED) if isinstance(generator, int)
              else draw_seed(generator))
    x = problem.stream_interior(points, x_seed, width)
    pg = generator if probe_generator is None else probe_generator
    set_seeds = ([derive_seed(pg, PROBES_SEED, j) for j in range(sets)] if isinstance(pg, int)
                 else [draw_seed(pg) for _ in range(sets)])
    streams = tuple(ColumnStream(probes, problem.dim, width, seed, dist, problem.dtype,
                                 problem.device) for seed in set_seeds)
    return StreamedStepData(problem, x, streams)


@dataclass
class Reductions:
    """What a step needs from a streamed sample (see the module docstring); ``xv``, ``vsq``,
    ``wv`` and ``vv`` hold one entry per probe set. ``data_time_s``: the part of the pass spent
    drawing blocks and summing the source (the step's data time)."""

    source: Tensor
    sqnorm: Tensor
    xv: list[Tensor]
    vsq: list[Tensor]
    wx: Tensor
    vx: Tensor | None
    wv: list[Tensor]
    vv: list[Tensor | None]
    data_time_s: float = 0.0


def reduce(data: StreamedStepData, w0: Tensor, basis=None) -> Reductions:
    """One pass over the blocks of ``data``: the source, the ansatz reductions and the
    first-layer products with ``w0`` (h, D) and, when ``basis`` is given (an object with
    ``rank`` and ``v_cursor()``, e.g. a zeroth-order solver's low-rank perturbation basis), with
    its V (D, r), regenerated alongside the blocks and never held whole."""
    problem = data.problem
    n, dtype, device = data.points.n, problem.dtype, problem.device
    h = w0.shape[0]
    sets = len(data.probes)

    def zeros(*shape):
        return torch.zeros(*shape, dtype=dtype, device=device)

    source = problem.stream_source(n)
    s, wx = zeros(n), zeros(n, h)
    vx = zeros(n, basis.rank) if basis is not None else None
    xv = [zeros(n, p.rows) for p in data.probes]
    vsq = [zeros(p.rows) for p in data.probes]
    wv = [zeros(p.rows, h) for p in data.probes]
    vv = [zeros(p.rows, basis.rank) if basis is not None else None for p in data.probes]
    take = basis.v_cursor() if basis is not None else None
    data_s = 0.0
    t0 = clock(device)
    for a, b, xb, vbs in data.blocks():
        source.add(xb, a)
        t1 = clock(device)
        data_s += t1 - t0
        s += torch.linalg.vector_norm(xb, dim=1).square_()  # no block-sized temporary
        w_block = w0[:, a:b].T
        wx.addmm_(xb, w_block)
        v_block = take(a, b) if take is not None else None
        if v_block is not None:
            vx.addmm_(xb, v_block)
        for j in range(sets):
            vb = vbs[j]
            xv[j].addmm_(xb, vb.T)
            vsq[j] += vb.square().sum(dim=1)
            wv[j].addmm_(vb, w_block)
            if v_block is not None:
                vv[j].addmm_(vb, v_block)
        del xb, vbs
        t0 = clock(device)
    f = source.source(s)
    data_s += clock(device) - t0
    return Reductions(f, s, xv, vsq, wx, vx, wv, vv, data_s)


def residual_loss(problem, model, data: StreamedStepData) -> Tensor:
    """The biased (one probe set) or unbiased (two) PINN loss of
    :meth:`pinnbench.solver.Solver.residual_loss` on streamed data, for the stde estimator of
    the Laplacian: D_v^2 u from the jet of u = A N along each probe (the jet of N from the
    first-layer reductions: the model's :meth:`pinnbench.maths.model.FirstLayer.reductions` makes them,
    once per call, or once per step for a first layer that caches them, and
    :meth:`pinnbench.maths.model.PINN.streamed_jet` reads them),
    Lap_hat u = mean_k D_{v_k}^2 u, r = Lap_hat u + pointwise(u) - f, loss mean r_1 r_2. The
    same arithmetic as the estimators' stde path on the materialised sample."""
    if problem.operator.names != ("laplacian",):
        raise ValueError(f"streamed losses estimate the Laplacian only; {problem.id} has the "
                         f"terms {problem.operator.names}")
    red = model.first_layer.reductions(data, model.params[0])
    residuals = []
    for k in range(len(data.probes)):
        jet = model.streamed_jet(red, k, 2)
        n, v = red.wx.shape[0], red.xv[k].shape[1]
        c0 = jet[0]
        u = c0[..., 0] if c0.ndim >= 2 else c0.expand(n)
        lap = as_matrix(jet.derivative(2), n, v, red.wx).mean(dim=-1)
        residuals.append(problem.residual({"laplacian": lap}, u, None, source=red.source))
    return (residuals[0] * residuals[-1]).mean(dim=-1)
