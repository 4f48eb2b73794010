"""A time-dependent ball problem (heat, wave: problems/time_dependent.py) as one rank of a sharded
cell sees it (issue 25; docs/sharding.md).

The points are (x, t), t the input's column d. **The time column belongs to the last rank**: it is
one more column block of W0 there (:class:`pinnbench.cells.sharding.ShardPlan`, ``time=1``, block
k = n_blocks drawn from its own seed), so the first layer's all-reduce adds t's product once,
as any other column's, and its gradient and Adam moments stay on that rank. The probes carry it
the same way: the dense probes' time entries are zero, and e_t (the time derivatives' direction:
a row after stde's probes, or apart for hte and sdgd) is 1 in that column on its owner and 0
on every other rank, so W0 e_t summed over the ranks is W0's time column, exactly.

The family's closed forms need t and sums over the spatial coordinates:

    heat:  s = ||x||^2, t;                    wave: s, t, S = sum_i sinh x_i,
    jets:  x . v_k, ||v_k||^2 (spatial), v_{k,t} (e_t's 1), and for wave
           sum_i sinh^(k)(x_i) v_{k,i}^k  (k = 1..order).

Each rank computes its shard's part (t and v_t only on the owner, zeros elsewhere) and one
all-reduce sums them, so every rank has the whole row's numbers (adding zeros is exact); the
family's own ``*_from`` / ``ansatz_jet_of`` then combine them, the arithmetic of its unsharded
methods. The points' spatial part is the ball's streamed sample (radii [0, 1]); t ~ U[0, 1] from
its own seed (``ShardedBall.draw_points``)."""

from __future__ import annotations

import torch
from torch import Tensor

from pinnbench.cells.sharded_ball import ShardedBall
from pinnbench.maths.directions import Directions
from pinnbench.maths.jets import Jet
from pinnbench.problems._chunked import sqnorm


class ShardedTimeBall(ShardedBall):
    """:class:`ShardedBall` for a time-dependent family (module docstring)."""

    def _t(self, x: Tensor) -> Tensor:
        """This rank's part of t: the time column on its owner, zeros elsewhere."""
        plan = self.plan
        if plan.owns_time:
            return x[:, plan.columns]
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def _reduced(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """(s, t, the family's coordinate sums), each (n,), summed over the ranks in one
        all-reduce."""
        xs = x[:, :self.plan.columns]
        sums = self.base.coordinate_sums(xs)
        keys = list(sums)
        total = self.comm.sum(torch.stack([sqnorm(xs), self._t(x)] + [sums[k] for k in keys]))
        return total[0], total[1], dict(zip(keys, total[2:]))

    def ansatz(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.ansatz_from(*self._reduced(x))

    def ansatz_jet(self, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        """The jets of A and B along the directions from s, t, x . v, ||v||^2, v_t and the
        family's sums, summed over the ranks in one all-reduce (the layout of
        ``spatial_sqnorm_jet`` and ``time_jet``: the time part is removed from the full-width
        products on its owner)."""
        plan, base = self.plan, self.base
        v, cols = dirs.count, plan.columns
        xv, vv = dirs.dot(x), dirs.sqnorm().to(x.dtype)
        t = self._t(x)
        vt = torch.zeros(v, dtype=x.dtype, device=x.device)
        if plan.owns_time:
            vt = dirs.component(cols).to(x.dtype)
            xv = xv - x[:, cols:cols + 1] * vt.unsqueeze(0)
            vv = vv - vt * vt
        sums = base.coordinate_sums(x[:, :cols])
        keys = list(sums)
        jet_sums = base.coordinate_jet_sums(x, dirs, order, cols)
        parts = [sqnorm(x, cols), t] + [sums[k] for k in keys]
        flat = [p.reshape(-1) for p in parts + [xv, vv, vt] + jet_sums]
        total = self.comm.sum(torch.cat(flat))
        out, at = [], 0
        for p in parts + [xv, vv, vt] + jet_sums:
            out.append(total[at:at + p.numel()].reshape(p.shape))
            at += p.numel()
        k = len(parts)
        s, t, red = out[0], out[1], dict(zip(keys, out[2:k]))
        xv, vv, vt = out[k:k + 3]
        s_jet = Jet([s.unsqueeze(1), 2.0 * xv, vv.unsqueeze(0)], order)
        t_jet = Jet([t.unsqueeze(1), vt.unsqueeze(0)], order)
        return base.ansatz_jet_of(s_jet, t_jet, red, out[k + 3:], order)

    def source_of(self, x: Tensor, halo: Tensor | None) -> Tensor:
        s, t, sums = self._reduced(x)
        return self.base.source_from(sums, s, t)

    def exact_of(self, x: Tensor, halo: Tensor | None) -> Tensor:
        s, t, sums = self._reduced(x)
        return self.base.exact_from(s, t, sums)

    def closed_form_partials(self, x: Tensor, halo: Tensor | None, lo: int) -> dict[str, Tensor]:
        """This block's parts of s and the family's coordinate sums (``x`` spatial columns
        only; t is added by the caller, :class:`pinnbench.cells.sharded_sets.ShardedPointSet`)."""
        return {"s": sqnorm(x), **self.base.coordinate_sums(x)}

    def closed_forms(self, sums: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(A, B, u*) from s, t and the family's sums over every column."""
        sums = dict(sums)
        s, t = sums.pop("s"), sums.pop("t")
        a, b = self.base.ansatz_from(s, t, sums)
        return a, b, self.base.exact_from(s, t, sums)
