"""A sharded cell's test and validation sets, evaluated in column-block order (issue 25;
docs/sharding.md).

A set is n streamed points x = r g / ||g||, g a :class:`pinnbench.maths.streaming.ColumnStream`
of column blocks from per-block seeds (:meth:`ShardedBall.draw_points`' definition; the set's
seed from the problem's TEST_STREAM or VALIDATION_STREAM). The model's only d-sized product is its
first layer's, and that is linear in x:

    x W0^T = diag(r / ||g||) sum_k g_k W0_k^T        (k over the column blocks; + t W0_t^T)

so **one pass over this shard's blocks**, each drawn once from its seed, accumulates g W0^T
(n x h) and, at the first evaluation, the blocks' squared norms; one all-reduce sums both over
the ranks (the norms in block order, so the scale r / ||g|| is the step data's bit for bit).

The closed forms (A, B, u*) are nonlinear in x but do not change: they are computed once, by a
second pass after the scale is known (block k scaled as draw_points scales it, its windows
reading the first w - 1 columns of block k + 1, the next shard's first block drawn for the last),
from the family's sums over the columns (``closed_form_partials``, added over the blocks and
the ranks in one all-reduce, then ``closed_forms``), and kept: n numbers each, in host memory.

Cost: the first evaluation draws the shard's blocks twice (and one halo block), every later one
once. Drawn in row chunks instead (the old ``test_chunks``), every chunk drew every block again:
at d = 2e7 on 2 ranks a 100-point set in 8 chunks of 13 rows took ~180 s an evaluation
(reports/sharding-cpu). Memory per rank: one n x width block, the n x h products, n numbers per
block for the norms, and the kept n-vectors. The errors equal the row-wise evaluation's to
rounding (the products are summed per block, then scaled).
"""

from __future__ import annotations

import torch
from torch import Tensor


class ShardedPointSet:
    """The n points of the set fixed by ``seed`` on ``view`` (a
    :class:`pinnbench.cells.sharded_ball.ShardedBall`): :meth:`predictions` of a model there, and
    u*. The blocks are drawn on the CPU (the same points on every device and every R) and each is
    copied to the problem's device for its product."""

    def __init__(self, view, seed: int, n: int) -> None:
        self.view, self.seed, self.n = view, int(seed), int(n)
        self.stream = view.point_stream(self.n, self.seed, "cpu")
        self.scale: Tensor | None = None  # (n, 1) r / ||g||, after the first pass (host)
        self.closed: tuple[Tensor, Tensor, Tensor] | None = None  # (A, B, u*) (host)
        #: blocks drawn so far (the cost this module exists to bound; tests read it)
        self.blocks_drawn = 0

    def _block(self, k: int) -> Tensor:
        self.blocks_drawn += 1
        return self.stream.block(k)

    @torch.no_grad()
    def predictions(self, model) -> tuple[Tensor, Tensor]:
        """(u, u*) at the n points, each (n,) on the problem's device: u = A N + B with N's first
        layer from one pass over the blocks (module docstring)."""
        device = self.view.base.device
        first = self.first_layer(model.params[0], model.params[1])
        if self.closed is None:
            self.closed = self._closed_forms()
        a, b, u_star = (c.to(device) for c in self.closed)
        return a * model.net_from_first(first) + b, u_star

    def first_layer(self, w0: Tensor, b0: Tensor) -> Tensor:
        """x W0^T + b0 (n, h) summed over the ranks, ``w0`` this rank's columns (spatial, then
        time on its owner)."""
        view = self.view
        plan, comm, device = view.plan, view.comm, view.base.device
        n, h = self.n, w0.shape[0]
        known = self.scale is not None
        product = torch.zeros(n, h, dtype=w0.dtype, device=device)
        block_sq = None if known else torch.zeros(plan.n_blocks, n, dtype=w0.dtype)
        for k in range(*plan.blocks):
            j0 = k * plan.width - plan.lo
            g = self._block(k)
            if block_sq is not None:
                block_sq[k] = torch.linalg.vector_norm(g, dim=1).square_()
            product.addmm_(g.to(device), w0[:, j0:j0 + g.shape[1]].T)
            del g
        parts = [product]
        if plan.time:  # t's product on its owner, zeros elsewhere: not scaled
            time_product = torch.zeros_like(product)
            if plan.owns_time:
                t = view.point_times(n, self.seed, "cpu").to(device)
                time_product.addmm_(t, w0[:, plan.columns:].T)
            parts.append(time_product)
        if block_sq is not None:
            parts.append(block_sq.to(device))
        total = comm.sum(torch.cat([p.reshape(-1) for p in parts]))
        products = total[:(2 if plan.time else 1) * n * h]
        if not known:
            from pinnbench.cells.sharded_ball import radial_scale

            norms = total[products.numel():].reshape(plan.n_blocks, n).cpu()
            self.scale = radial_scale(view.point_radii(n, self.seed, "cpu"), norms)
        out = products[:n * h].reshape(n, h) * self.scale.to(device)
        if plan.time:
            out += products[n * h:].reshape(n, h)
        return out + b0

    def _closed_forms(self) -> tuple[Tensor, Tensor, Tensor]:
        """(A, B, u*) on the host: the second pass (module docstring)."""
        view = self.view
        plan, comm, device = view.plan, view.comm, view.base.device
        k0, k1 = plan.blocks
        w = view.halo_columns
        sums: dict[str, Tensor] = {}

        def add(x: Tensor, halo: Tensor | None, lo: int) -> None:
            part = view.closed_form_partials(x.to(device),
                                             None if halo is None else halo.to(device), lo)
            for key, v in part.items():
                sums[key] = v if key not in sums else sums[key] + v

        previous = None  # (block k - 1 scaled, its first column)
        for k in range(k0, k1):
            x = self._block(k).mul_(self.scale)
            if previous is not None:
                add(previous[0], x[:, :w] if w else None, previous[1])
            previous = (x, k * plan.width)
        halo = None
        if w and k1 < plan.n_blocks:  # the next shard's first columns
            halo = self._block(k1)[:, :w].mul_(self.scale)
        add(previous[0], halo, previous[1])
        if plan.time:
            t = view.point_times(self.n, self.seed, "cpu")[:, 0].to(device)
            sums["t"] = t if plan.owns_time else torch.zeros_like(t)
        keys = list(sums)
        total = dict(zip(keys, comm.sum(torch.stack([sums[k] for k in keys]))))
        return tuple(c.cpu() for c in view.closed_forms(total))
