"""One cell's input dimension sharded over R processes (issue 25; docs/sharding.md).

The first layer is the only part of a PINN whose size grows with d. Split W0's columns, and the
matching coordinates of the points and probes, over R ranks: rank r holds the columns
[lo_r, hi_r) and computes its partial products; one sum over the ranks (an all-reduce of an
n x width block, plus V x width for the jets' directions) gives the pre-activations

    x W0^T = sum_r x[:, lo_r:hi_r] W0[:, lo_r:hi_r]^T,    W0 v_k = sum_r W0[:, lo_r:hi_r] v_k[lo_r:hi_r],

and everything after the first layer is replicated: every rank holds the hidden layers and
computes the same loss. This is Megatron-LM's row-parallel linear layer (Shoeybi et al. 2019,
"Megatron-LM", §3: the input split along the reduction dimension): forward an all-reduce,
backward the identity. Not ``torch.distributed.nn.functional.all_reduce``, whose backward
all-reduces the gradient again: with a loss replicated on every rank the incoming gradient is
already the same everywhere, and summing it would scale W0's gradient by R
(tests/test_sharding.py checks the gradients against one process). W0's gradient and its Adam
moments live on the shard; the replicated parameters get the same gradient on every rank, so
nothing else is communicated.

Here: the shard plan (:class:`ShardPlan`: whole column blocks per rank, the blocks of the
streamed step data, :mod:`pinnbench.maths.streaming`), the collectives (:class:`Collectives`: a
process group or none, with the time spent in them), the first layer
(:class:`ShardedFirstLayer`, plugged into :class:`pinnbench.maths.model.PINN`'s hook) and the sharded
initial model (:func:`make_sharded_model`, W0 drawn block by block so that every R draws the
same W0). The problem side (points, probes, A(x), f(x), u*(x) from per-shard partial sums) is
:mod:`pinnbench.cells.sharded_ball`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from pinnbench.maths.directions import Directions
from pinnbench.maths.model import PINN, FirstLayer
from pinnbench.seeds import derive_seed, draw_seed, generator as seeded
from pinnbench.maths.streaming import MIN_BLOCK_COLUMNS


@dataclass(frozen=True)
class ShardPlan:
    """Rank ``rank`` of ``ranks`` owns the column blocks [k0, k1) of width ``width`` (the last
    block of the d columns may be narrower): blocks are split as evenly as whole blocks allow,
    the first ``n_blocks % ranks`` ranks taking one more. Every rank must own at least one.

    ``time``: input columns after the d spatial ones (1 for a time-dependent family, whose points
    carry t as column d), owned by the last rank as one more block, k = ``n_blocks``, of W0's
    columns (the model's input is then (n, ``input_columns``) on every rank, t last on the last
    rank): the first layer sums t's product once, as any other column's."""

    dim: int
    width: int
    ranks: int
    rank: int
    time: int = 0

    def __post_init__(self) -> None:
        if self.width < MIN_BLOCK_COLUMNS:
            raise ValueError(f"shard blocks need at least {MIN_BLOCK_COLUMNS} columns (a "
                             f"many-body window's halo must fit in one), got {self.width}")
        if not 0 <= self.rank < self.ranks:
            raise ValueError(f"rank {self.rank} is not in [0, {self.ranks})")
        if self.n_blocks < self.ranks:
            raise ValueError(f"d = {self.dim} in blocks of {self.width} columns is "
                             f"{self.n_blocks} block(s), fewer than the {self.ranks} ranks: "
                             "use fewer ranks or narrower blocks")

    @property
    def n_blocks(self) -> int:
        return -(-self.dim // self.width)

    def blocks_of(self, rank: int) -> tuple[int, int]:
        q, extra = divmod(self.n_blocks, self.ranks)
        k0 = rank * q + min(rank, extra)
        return k0, k0 + q + (1 if rank < extra else 0)

    @property
    def blocks(self) -> tuple[int, int]:
        return self.blocks_of(self.rank)

    @property
    def lo(self) -> int:
        return self.blocks[0] * self.width

    @property
    def hi(self) -> int:
        return min(self.blocks[1] * self.width, self.dim)

    @property
    def columns(self) -> int:
        return self.hi - self.lo

    @property
    def owns_time(self) -> bool:
        """Whether this rank holds the time column(s) (the last rank, when there are any)."""
        return self.time > 0 and self.rank == self.ranks - 1

    @property
    def input_dim(self) -> int:
        """The model's whole input width: d + ``time``."""
        return self.dim + self.time

    @property
    def input_columns(self) -> int:
        """This rank's columns of the model's input (and of W0): its spatial columns, then the
        time column(s) on their owner."""
        return self.columns + (self.time if self.owns_time else 0)

    def input_blocks(self):
        """(j0, j1, k): this rank's column blocks of W0 as ranges [j0, j1) of its own columns,
        block k drawn from its own seed: the spatial blocks, then the time block k = n_blocks
        on its owner."""
        for k in range(*self.blocks):
            yield k * self.width - self.lo, min((k + 1) * self.width, self.dim) - self.lo, k
        if self.owns_time:
            yield self.columns, self.columns + self.time, self.n_blocks


class _SumOverRanks(torch.autograd.Function):
    """y = sum over the ranks of x (an all-reduce), backward the identity (module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, comm: "Collectives") -> Tensor:
        return comm.sum(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class Collectives:
    """The sums a sharded cell needs over its ranks, on the process group ``group`` (the default
    group of ``torch.distributed`` when None), or nothing to do when ``ranks`` is 1 (no process
    group needed). ``time_s`` adds up the wall time spent in them (device-synchronised: the
    communication time per step of the cell's record); ``calls`` and ``bytes`` (each rank's
    payload) count them, the seed checks' all-gathers included.
    The timeout of every collective is the process group's (``init_process_group(timeout=)``)."""

    def __init__(self, ranks: int, group=None) -> None:
        self.ranks, self.group = int(ranks), group
        self.time_s, self.calls, self.bytes = 0.0, 0, 0

    def sum(self, t: Tensor) -> Tensor:
        """A new tensor holding the sum of ``t`` over the ranks (not differentiable: see
        :meth:`sum_grad`)."""
        out = t.detach().clone(memory_format=torch.contiguous_format)
        if self.ranks == 1:
            return out
        import torch.distributed as dist

        from pinnbench.timing import clock

        t0 = clock(out.device)
        dist.all_reduce(out, group=self.group)
        self.time_s += clock(out.device) - t0
        self.calls += 1
        self.bytes += out.numel() * out.element_size()
        return out

    def sum_grad(self, t: Tensor) -> Tensor:
        """:meth:`sum` that backpropagates the identity (the row-parallel layer's reduce)."""
        return _SumOverRanks.apply(t, self) if t.requires_grad else self.sum(t)

    def check_same(self, what: str, value: int) -> None:
        """Raise on every rank when the ranks do not agree on the integer ``value`` (a seed, a
        step count): an all-gathered check, so a mismatch is detected, not silently trained
        on. 63-bit values are compared as two 32-bit halves (exact in float64)."""
        if self.ranks == 1:
            return
        import torch.distributed as dist

        from pinnbench.timing import clock

        device = "cuda" if dist.get_backend(self.group) == "nccl" else "cpu"
        mine = torch.tensor([value >> 32, value & 0xFFFFFFFF], dtype=torch.float64,
                            device=device)
        parts = [torch.empty_like(mine) for _ in range(self.ranks)]
        t0 = clock(mine.device)
        dist.all_gather(parts, mine, group=self.group)
        self.time_s += clock(mine.device) - t0
        self.calls += 1
        self.bytes += mine.numel() * mine.element_size()
        values = [(int(p[0]) << 32) | int(p[1]) for p in parts]
        if len(set(values)) > 1:
            raise RuntimeError(f"the ranks disagree on {what}: {values} (rank r's value at "
                               "position r); a sharded cell needs the same on every rank")


class ShardedFirstLayer(FirstLayer):
    """The first layer of a PINN whose W0 holds this rank's columns only, as do the points and
    the probes: the partial products summed over the ranks, then b0 (module docstring)."""

    def __init__(self, comm: Collectives, plan: ShardPlan) -> None:
        self.comm, self.plan = comm, plan

    def points(self, x: Tensor, w0: Tensor, b0: Tensor) -> Tensor:
        return self.comm.sum_grad(x @ w0.T) + b0

    def directions(self, dirs: Directions, w0: Tensor) -> Tensor:
        return self.comm.sum_grad(dirs.apply_weight(w0))

    def sum_columns(self, partial: Tensor) -> Tensor:
        return self.comm.sum_grad(partial)

    def check_same(self, what: str, value: int) -> None:
        self.comm.check_same(what, value)


class ShardCoordinates(Directions):
    """Sampled unit vectors e_j (SDGD's and sparse STDE's coordinate probes, ``index`` the V
    global coordinates, the same on every rank) as rank ``plan.rank`` sees them: each e_j lies
    in one shard, so the owner's columns give its products and every other rank's are zero,

        x . e_j = x_j,   ||e_j||^2 = 1,   W0 e_j = W0[:, j]   (on the owner; 0 elsewhere),

    and the sum over the ranks that the sharded first layer and the problem's jets already take
    (one all-reduce each, adding zeros: exact) gives the one-process numbers. In the backward
    pass only the owner's column of W0 gets the gradient of W0 e_j. Deliberately not a
    :class:`pinnbench.maths.directions.CoordinateDirections`: code that gathers by the global
    ``index`` (stencils in x, a low-rank basis's rows) raises on these instead of reading the
    wrong columns."""

    def __init__(self, index: Tensor, plan: ShardPlan, dtype: torch.dtype) -> None:
        if index.ndim != 1:
            raise ValueError(f"coordinate indices must be 1-D, got shape {tuple(index.shape)}")
        self.index, self.plan, self.dtype = index, plan, dtype
        # this rank's input columns: its spatial ones, then the time column (global index d) on
        # its owner, so e_t is a coordinate like any other
        self.count, self.dim = index.shape[0], plan.input_columns
        self.owned = (index >= plan.lo) & (index < plan.lo + plan.input_columns)  # (V,)
        self.local = (index - plan.lo).clamp_(0, plan.input_columns - 1)  # valid everywhere

    def dot(self, x: Tensor) -> Tensor:
        return torch.where(self.owned, x[:, self.local], 0.0)

    def sqnorm(self) -> Tensor:
        return self.owned.to(self.dtype)

    def apply_weight(self, weight: Tensor) -> Tensor:
        return torch.where(self.owned.unsqueeze(1), weight[:, self.local].T, 0.0)

    def power_sum(self, y: Tensor, k: int) -> Tensor:
        return torch.where(self.owned, y[:, self.local], 0.0)

    def owned_rows(self, read) -> Tensor:
        """``read(local columns)`` (V, k), kept where this rank owns the coordinate and zero
        elsewhere: summed over the ranks, the one-process rows at the global index (a
        zeroth-order solver's V rows and z0 columns)."""
        return torch.where(self.owned.unsqueeze(1), read(self.local), 0.0)

    def component(self, i: int) -> Tensor:
        """(V,): this rank's local column ``i`` of every direction (1 where e_j is that column
        and this rank owns it)."""
        i = i % self.dim
        return (self.owned & (self.local == i)).to(self.dtype)


def draw_first_weight(plan: ShardPlan, hidden: int, seed: int, input_dim: int,
                      dtype: torch.dtype, device) -> Tensor:
    """This rank's columns of W0 (hidden, D) ~ N(0, 1/D) (LeCun normal, as
    :func:`pinnbench.maths.model.make_model`), drawn block by block: block k from
    ``generator(derive_seed(seed, k))``, so every shard plan with these blocks draws the same
    W0 (a definition of its own: not make_model's numbers). The time column of a time-dependent
    family is block n_blocks, on its owner (:meth:`ShardPlan.input_blocks`)."""
    cols = []
    for a, b, k in plan.input_blocks():
        cols.append(torch.randn(hidden, b - a, generator=seeded(derive_seed(seed, k), device),
                                dtype=dtype, device=device))
    return torch.cat(cols, dim=1).mul_(1.0 / math.sqrt(input_dim))


def make_sharded_model(problem, plan: ShardPlan, comm: Collectives, width: int = 128,
                       depth: int = 3, generator: torch.Generator | None = None) -> PINN:
    """The sharded PINN of ``problem`` (a :class:`pinnbench.cells.sharded_ball.ShardedBall`): W0's
    columns of this shard (:func:`draw_first_weight`, from one seed drawn from ``generator``),
    then the replicated layers drawn from ``generator`` as make_model draws them (N(0, 1/fan_in),
    biases 0). Every rank must pass a generator in the same state (checked)."""
    if generator is None:
        generator = seeded(problem.seed, problem.device)
    w_seed = draw_seed(generator)
    comm.check_same("the initial model's seed", w_seed)
    kw = dict(dtype=problem.dtype, device=problem.device)
    params = [draw_first_weight(plan, width, w_seed, problem.input_dim, **kw),
              torch.zeros(width, **kw)]
    sizes = [width] * depth + [1]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = torch.randn(fan_out, fan_in, generator=generator, **kw).mul_(1.0 / math.sqrt(fan_in))
        params += [w, torch.zeros(fan_out, **kw)]
    return PINN(problem, params, "tanh", first_layer=ShardedFirstLayer(comm, plan))
