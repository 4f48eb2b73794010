"""A ball problem as one rank of a sharded cell sees it: its own coordinates [lo, hi) of the
points and probes, and A(x), f(x), u*(x) from per-shard partial sums summed over the ranks
(issue 25; :mod:`pinnbench.cells.sharding`, docs/sharding.md).

Every d-sized quantity of the ball families (problems/ball.py) is a sum over coordinates or over
windows of w neighbouring coordinates (w = 2 two-body, 3 three-body):

    s = ||x||^2 = sum_r sum_{i in shard r} x_i^2,          A = 1 - s / R^2,
    x . v_k,  ||v_k||^2                                    (the jet of A along the probes),
    u2, x . grad u2, Lap u2 = sum_r sum_{windows i starting in shard r} c_i g_*(x_i..x_{i+w-1}),

    f = A Lap u2 - (4/R^2) x . grad u2 - (2d/R^2) u2 + pointwise(A u2),   u* = A u2.

A window that starts in shard r but straddles its right edge reads the first w - 1 columns of
the next shard (the halo): with per-block seeds a rank draws that block itself, so no data moves.
Each rank's partial sums go into one all-reduce; the combination (the formulas above) is the
problem's own code (``source_from``, ``ansatz_jet_from``).

The data (the streamed definition of :mod:`pinnbench.maths.streaming`, not the materialised
sampler's numbers): the points x = r g / ||g|| with g a :class:`ColumnStream` of column blocks
of ``plan.width`` from per-block seeds and r from its own seed, exactly as
:class:`pinnbench.maths.streaming.RadialBallStream` draws them; ||g||^2 from every block's squared norm,
all-reduced as one (blocks, n) array that only the owner of each block fills (adding zeros is
exact) and summed in block order, so that every R gives the same points **bit for bit** (the
blocks of a rank, concatenated, are the columns [lo, hi) of the one-rank sample). Probes are
ColumnStreams on the same blocks. The test and validation sets are drawn the same way from
seeds of the problem's streams TEST_STREAM and VALIDATION_STREAM.

The clamped biharmonic (problems/biharmonic.py: u* = q u2, q = A^2 on the annulus) is built
the same way: q and its jet from s, x . v, ||v||^2, and f = Lap^2(q u2) from the six order-4
window sums (the body's Hessian and bilaplacian are local to a window, so each is a sum over
windows), summed in one all-reduce. A family takes part by declaring ``supports_sharding`` and
giving ``radii``, ``ansatz_from``, ``ansatz_jet_from`` and ``source_from`` (u* = A(s) u2).

Supported: the six ball families (poisson, allen-cahn, sine-gordon x two-body, three-body),
``*-v1`` and ``*-scaled-v1``, the clamped biharmonic (two-body, its ``-scaled-v1``,
three-body), and heat and wave (t the last rank's last column:
:mod:`pinnbench.cells.sharded_time`, built by :func:`shard_view`), with dense probes drawn per
column block (stde, hte) or sampled coordinates, each owned by one rank (sdgd, sparse stde:
:class:`ShardCoordinates`); :func:`shard_skip`, :func:`probe_kind`.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from pinnbench.maths.directions import DenseDirections, Directions
from pinnbench.maths.jets import Jet
from pinnbench.maths.problem import TEST_STREAM, VALIDATION_STREAM
from pinnbench.problems._chunked import sqnorm
from pinnbench.seeds import derive_seed, draw_seed, generator as seeded
from pinnbench.cells.sharding import Collectives, ShardCoordinates, ShardPlan
from pinnbench.maths.estimators.probes import sample_indices
from pinnbench.maths.step_data import StepData
from pinnbench.maths.streaming import STREAM_DISTS, ColumnStream


#: the estimators a sharded step draws probes for (:func:`probe_kind`)
SHARDED_METHODS = ("stde", "hte", "sdgd")


def probe_kind(method: str, opts: dict, term: str = "laplacian") -> str:
    """The probes of a sharded step for the spatial ``term`` (laplacian, bilaplacian): dense
    ``rademacher`` or ``gaussian`` entries drawn per column block (stde, hte; the bilaplacian
    takes gaussian only, the estimators' own rule), or ``coordinate`` (sdgd's Laplacian; stde
    with dist=coordinate), V global coordinates each owned by one rank
    (:class:`ShardCoordinates`). Raises ValueError for the others: ``exact`` differentiates in
    x itself, d reverse passes of a small-d reference (d <= 1000) that one process holds;
    sdgd's bilaplacian is a Laplacian of a Laplacian by reverse mode in x; ``fd`` is not
    written here."""
    from pinnbench.maths.estimators.terms import _spatial_kind

    if method not in SHARDED_METHODS:
        raise ValueError(f"a sharded step draws probes for estimator {'|'.join(SHARDED_METHODS)}, "
                         f"not {method}")
    kind = _spatial_kind(method, term, opts, 0)
    if kind == "nested":
        raise ValueError(f"{method}'s {term} is nested reverse mode in x itself (a Laplacian of "
                         "a Laplacian over sampled coordinates), not written as shard sums")
    if kind not in STREAM_DISTS + ("coordinate",):
        raise ValueError(f"a sharded {method} step draws probes with dist in "
                         f"{STREAM_DISTS + ('coordinate',)}, not dist={kind!r}")
    return kind


def shard_skip(problem, solver=None) -> str:
    """Why ``problem`` (and ``solver``, when given) cannot run sharded, or "" when it can:
    a family that ``supports_sharding`` (its d-sized parts are the sums of the module
    docstring: the ball families, the clamped biharmonic), with a solver whose
    :meth:`pinnbench.solver.Solver.shard_unsupported` allows it and whose estimator's probes
    for the family's terms are drawn per shard (:func:`probe_kind`; dt and dtt take the fixed
    e_t). The terminal families have other d-sized parts (the drift and weighted terms by
    reverse mode in x) that are not written as shard sums."""
    if not getattr(problem, "supports_sharding", False):
        return f"{problem.id} is not sharded: {_family_reason(problem)} (docs/sharding.md)"
    if solver is None:
        return ""
    why = solver.shard_unsupported()  # the solver says whether it runs as one rank
    if why:
        return why
    p = solver.params  # and its probes must be drawable per shard for this problem's terms
    try:
        for term in _spatial_terms(problem):
            probe_kind(p.get("estimator", "stde"), solver.estimator_options, term)
    except ValueError as e:
        return f"{solver.spec} on {problem.id} is not sharded: {e}"
    return ""


def _spatial_terms(problem) -> tuple[str, ...]:
    """The operator's terms that take probes (dt and dtt take the fixed direction e_t)."""
    from pinnbench.maths.estimators.terms import TIME_ORDER

    return tuple(t for t in dict.fromkeys(problem.operator.names) if t not in TIME_ORDER)


def shard_view(problem, plan: ShardPlan, comm: Collectives) -> "ShardedBall":
    """Rank ``plan.rank``'s view of ``problem``: :class:`ShardedBall`, or for a time-dependent
    family :class:`pinnbench.cells.sharded_time.ShardedTimeBall` (t in the last rank's
    columns)."""
    if getattr(problem, "time_dependent", False):
        from pinnbench.cells.sharded_time import ShardedTimeBall

        return ShardedTimeBall(problem, plan, comm)
    return ShardedBall(problem, plan, comm)


def _family_reason(problem) -> str:
    """Why a family that does not declare ``supports_sharding`` is not sharded, by what its
    operator and points hold."""
    if "drift" in problem.operator.names:
        return ("its drift x . grad u is taken by reverse mode in x in every method (u's "
                "gradient in all d coordinates, dotted with x): sharded, each rank's part "
                "x_r . grad_r u would need a sum over the ranks, and the parts through A(s) and "
                "B(s) a backward through the all-reduce of s, which has none; its weighted "
                "Laplacian gathers x_j at the sampled coordinates by global index. Not written "
                "as shard sums (x . grad N = grad_z M . (z - b0) would be, not done)")
    return ("only the ball families (poisson, allen-cahn, sine-gordon; two- and three-body), "
            "the clamped biharmonic, heat and wave write their d-sized parts as sums over "
            "shards")


class ShardedBall:
    """The problem ``problem`` (a family that ``supports_sharding``) seen by rank
    ``plan.rank``: everything of the problem
    (id, dim, operator, pointwise, ...) with A, its jet, the step data, the source and the
    test/validation sets computed from this shard's coordinates and the ranks' sums.
    ``ansatz``/``ansatz_jet`` take this shard's columns of x (and of the directions)."""

    def __init__(self, problem, plan: ShardPlan, comm: Collectives) -> None:
        why = shard_skip(problem)
        if why:
            raise ValueError(why)
        if (plan.dim, plan.input_dim) != (problem.dim, problem.input_dim):
            raise ValueError(f"the shard plan is for d = {plan.dim} ({plan.input_dim} input "
                             f"columns), the problem has d = {problem.dim} "
                             f"({problem.input_dim})")
        self.base, self.plan, self.comm = problem, plan, comm

    def __getattr__(self, name: str):
        return getattr(self.__dict__["base"], name)

    def __repr__(self) -> str:
        p = self.plan
        return f"<ShardedBall {self.base!r} rank {p.rank}/{p.ranks} columns [{p.lo}, {p.hi})>"

    # -- the ansatz from partial sums -------------------------------------------------------------
    def ansatz(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = self.comm.sum(sqnorm(x))
        return self.base.ansatz_from(s), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def ansatz_jet(self, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        """The jet of A along the directions: s, x . v and ||v||^2 summed over the ranks in one
        all-reduce, then the problem's ``ansatz_jet_from``."""
        n, v = x.shape[0], dirs.count
        packed = self.comm.sum(torch.cat([sqnorm(x), dirs.dot(x).reshape(-1),
                                          dirs.sqnorm().to(x.dtype)]))
        s, xv, vsq = packed[:n], packed[n:n + n * v].reshape(n, v), packed[n + n * v:]
        return self.base.ansatz_jet_from(s, xv, vsq, order)

    def residual(self, terms: dict[str, Tensor], u: Tensor, x: Tensor,
                 source: Tensor | None = None) -> Tensor:
        if source is None:
            raise ValueError("a sharded residual needs the source computed with the step data "
                             "(ShardedBall.draw_step_data)")
        return self.base.residual(terms, u, x, source=source)

    # -- points, probes, and the sums over windows --------------------------------------------------
    def draw_points(self, n: int, seed: int, device=None) -> tuple[Tensor, Tensor | None]:
        """(x[:, lo:hi], halo): this shard's columns of the n streamed points fixed by ``seed``
        (module docstring), and the next shard's first w - 1 columns (None on the last rank, or
        without a many-body window), drawn on ``device`` (default: the problem's; the collective
        runs on the problem's). A time-dependent family's t ~ U[0, 1] (from
        ``derive_seed(seed, 2)``) follows as the last column on the rank that owns it."""
        plan, base = self.plan, self.base
        dtype, device = base.dtype, torch.device(device or base.device)
        g = self.point_stream(n, seed, device)
        k0, k1 = plan.blocks
        x = torch.empty(n, plan.input_columns, dtype=dtype, device=device)  # g, then x in place
        block_sq = torch.zeros(plan.n_blocks, n, dtype=dtype, device=device)
        for k in range(k0, k1):
            a = k * plan.width - plan.lo
            gb = g.block(k)
            x[:, a:a + gb.shape[1]] = gb
            block_sq[k] = torch.linalg.vector_norm(gb, dim=1).square_()
            del gb
        block_sq = self.comm.sum(block_sq.to(base.device)).to(device)
        scale = radial_scale(self.point_radii(n, seed, device), block_sq)
        x[:, :plan.columns].mul_(scale)
        if plan.owns_time:
            x[:, plan.columns:] = self.point_times(n, seed, device)
        halo = None
        if plan.hi < plan.dim and self.halo_columns:
            halo = g.block(k1)[:, :self.halo_columns].mul(scale)
        return x, halo

    def point_stream(self, n: int, seed: int, device) -> ColumnStream:
        """g of the n points fixed by ``seed``: x = r g / ||g|| (:meth:`draw_points`)."""
        plan, base = self.plan, self.base
        return ColumnStream(n, plan.dim, plan.width, derive_seed(seed, 0), "gaussian",
                            base.dtype, device)

    def point_radii(self, n: int, seed: int, device) -> Tensor:
        """r (n, 1) of the n points fixed by ``seed``, uniform on the family's radii."""
        r_min, r_max = self.base.radii
        return r_min + (r_max - r_min) * torch.rand(
            n, 1, generator=seeded(derive_seed(seed, 1), device), dtype=self.base.dtype,
            device=device)

    def point_times(self, n: int, seed: int, device) -> Tensor:
        """t (n, time) ~ U[0, 1] of the n points fixed by ``seed`` (a time-dependent family's
        last input column, on the rank that owns it)."""
        return torch.rand(n, self.plan.time, dtype=self.base.dtype, device=device,
                          generator=seeded(derive_seed(seed, 2), device))

    def draw_probes(self, count: int, seed: int, dist: str) -> Tensor:
        """This shard's columns of ``count`` probes, a :class:`ColumnStream` fixed by ``seed``."""
        plan, base = self.plan, self.base
        v = ColumnStream(count, plan.dim, plan.width, seed, dist, base.dtype, base.device)
        return torch.cat([v.block(k) for k in range(*plan.blocks)], dim=1)

    def window_sums(self, x: Tensor, halo: Tensor | None, order: int) -> tuple[Tensor, dict]:
        """(s, the body's order-``order`` sums), each (n,), summed over the ranks in one
        all-reduce: this shard's s and its windows (those starting in [lo, hi))."""
        part = self._window_partials(x, halo, self.plan.lo, order)
        keys = list(part)
        total = dict(zip(keys, self.comm.sum(torch.stack([part[k] for k in keys]))))
        return total.pop("s"), total

    def _window_partials(self, x: Tensor, halo: Tensor | None, lo: int,
                         order: int) -> dict[str, Tensor]:
        """s and the body's order-``order`` sums over the windows that start in the columns
        [lo, lo + x.shape[1]) of the points (``x`` those columns, ``halo`` the next w - 1 or
        None at the last), each (n,), not yet summed over the ranks."""
        base, body = self.base, self.base.body
        c, w = base.coefficients, body.window
        inside = max(0, x.shape[1] - w + 1)  # the windows inside the columns
        part = body.sums(x, c[lo:lo + inside], order)
        if halo is not None and halo.shape[1]:  # and those straddling their right edge
            edge = torch.cat([x[:, x.shape[1] - (w - 1):], halo], dim=1)
            start = lo + inside
            for k, v in body.sums(edge, c[start:start + halo.shape[1]], order).items():
                part[k] += v
        return {"s": sqnorm(x), **part}

    # -- the closed forms of a point set, from sums over column blocks (sharded_sets) -----------
    @property
    def halo_columns(self) -> int:
        """Columns after a block that its windows read: w - 1 (0 without a many-body
        window)."""
        return getattr(getattr(self.base, "body", None), "window", 1) - 1

    def closed_form_partials(self, x: Tensor, halo: Tensor | None, lo: int) -> dict[str, Tensor]:
        """This block's parts of the sums that A, B and u* need: ``x`` the points' columns
        [lo, lo + x.shape[1]), ``halo`` the next :attr:`halo_columns` (None at the last);
        each (n,), summed over the blocks and the ranks by the caller."""
        return self._window_partials(x, halo, lo, 0)

    def closed_forms(self, sums: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(A, B, u*) at the points from their sums over every column (:meth:`closed_form_partials`
        added over the blocks and the ranks)."""
        a = self.base.ansatz_from(sums["s"])
        return a, torch.zeros_like(a), a * sums["u2"]

    def source_of(self, x: Tensor, halo: Tensor | None) -> Tensor:
        s, t = self.window_sums(x, halo, self.base.order)
        return self.base.source_from(t, s)

    def exact_of(self, x: Tensor, halo: Tensor | None) -> Tensor:
        s, t = self.window_sums(x, halo, 0)
        return self.base.ansatz_from(s) * t["u2"]

    # -- what a solver and the cell ask -----------------------------------------------------------
    def draw_step_data(self, points: int, generator: torch.Generator, method: str, probes: int,
                       opts: dict, sets: int = 1,
                       probe_generator: torch.Generator | None = None) -> StepData:
        """The step's sample (:func:`pinnbench.maths.step_data.draw_step_data`'s counterpart, the
        streamed definition): one seed for the points from ``generator``, checked equal on
        every rank, then one seed per probe set from ``probe_generator`` (default: continuing
        ``generator``), its probes of :func:`probe_kind` (dense: this shard's columns; sampled
        coordinates: the same V indices on every rank, by Floyd's algorithm from that seed);
        the source computed here. Terms whose probes differ in kind (HJB-Lin with dense probes:
        its Laplacian's, and grad_power_mean's sampled coordinates) get a group each, in the
        order of the terms, group i > 0 drawn from :func:`probe_group_seed` (never one of the
        first group's column-block seeds, ``derive_seed(set seed, k)``); a time term's
        e_t rides along the first group's probes with stde, apart otherwise (the layout of
        :func:`pinnbench.maths.estimators.terms.draw_probes`)."""
        from pinnbench.maths.estimators.terms import SPATIAL_ORDER, TIME_ORDER, Probes, _Group

        base, names = self.base, tuple(dict.fromkeys(self.base.operator.names))
        kinds: dict[str, list[str]] = {}
        for t in _spatial_terms(base):
            kinds.setdefault(probe_kind(method, opts, t), []).append(t)
        time_order = max((TIME_ORDER[t] for t in names if t in TIME_ORDER), default=0)
        with_time = method == "stde" and time_order > 0  # e_t rides along the jets' probes
        seed = draw_seed(generator)
        self.comm.check_same("the step's points seed", seed)
        x, halo = self.draw_points(points, seed)
        with torch.no_grad():
            f = self.source_of(x, halo)
        pg = generator if probe_generator is None else probe_generator
        drawn = []
        for _ in range(sets):
            set_seed = draw_seed(pg)
            groups = {}
            for i, (kind, terms) in enumerate(kinds.items()):
                group_seed = probe_group_seed(set_seed, i)
                time_row = with_time and i == 0
                if kind == "coordinate":  # the same V coordinates on every rank, one owner each
                    index = sample_indices(probes, base.dim, seeded(group_seed, base.device))
                    count = index.shape[0]
                    if time_row:  # e_t: the global coordinate d, owned by the time column's rank
                        index = torch.cat([index, index.new_full((1,), base.dim)])
                    dirs = ShardCoordinates(index, self.plan, base.dtype)
                else:
                    dirs, count = self._dense_probes(probes, group_seed, kind, time_row), probes
                order = max(SPATIAL_ORDER[t] for t in terms)
                groups[kind] = _Group(kind, list(terms), order, dirs, count)
            time_dirs = None
            if time_order and not with_time:  # hte, sdgd: e_t apart
                time_dirs = ShardCoordinates(torch.tensor([base.dim], device=base.device),
                                             self.plan, base.dtype)
            drawn.append(Probes(method, names, probes, dict(opts), (base.dim, base.input_dim),
                                groups, {}, time_dirs, time_order))
        return StepData(x, f, tuple(drawn))

    def _dense_probes(self, count: int, seed: int, dist: str, time_row: bool) -> Directions:
        """This shard's columns of the dense probes, with a zero time column on the time
        column's owner and the row e_t after them when ``time_row`` (probes.dense_probes' layout,
        per shard: the row is zero on the other ranks)."""
        v, plan = self.draw_probes(count, seed, dist), self.plan
        if plan.input_columns == plan.columns and not time_row:
            return DenseDirections(v)
        full = v.new_zeros(count + int(time_row), plan.input_columns)
        full[:count, :plan.columns] = v
        if time_row and plan.owns_time:
            full[count, plan.columns] = 1.0
        return DenseDirections(full)

    def predictions(self, model, split: str = "test") -> Iterator[tuple[Tensor, Tensor]]:
        """(u, u*) on the sharded test (or validation) set: the n points of the set's seed,
        evaluated in column-block order, each of this shard's blocks drawn once an evaluation
        (:class:`pinnbench.cells.sharded_sets.ShardedPointSet`, kept per split: its scale and
        closed forms, n numbers each)."""
        from pinnbench.cells.sharded_sets import ShardedPointSet

        sets = self.__dict__.setdefault("_sets", {})
        if split not in sets:
            stream, n = ((TEST_STREAM, self.base.n_test) if split == "test"
                         else (VALIDATION_STREAM, self.base.n_validation))
            sets[split] = ShardedPointSet(self, draw_seed(self.base.cpu_generator(stream)), n)
        yield sets[split].predictions(model)

    def test_chunks(self):
        """Refused (not the unsharded problem's, which ``__getattr__`` would otherwise give)."""
        raise TypeError("a sharded cell's test and validation sets are evaluated in column-block "
                        "order (ShardedBall.predictions); their rows are never drawn whole")

    validation_chunks = test_chunks

    def warm_up(self, n_points: int = 2) -> None:
        """Nothing to compile ahead at the sizes sharded cells run (the block sums' compiled
        path is taken per shard when its width asks)."""


def radial_scale(r: Tensor, block_sq: Tensor) -> Tensor:
    """r / ||g|| (n, 1) from the squared norms of g's blocks (n_blocks, n), added in block
    order: :class:`pinnbench.maths.streaming.RadialBallStream`'s order of additions, so that every
    R gives the same points bit for bit."""
    sq = torch.zeros(block_sq.shape[1], dtype=block_sq.dtype, device=block_sq.device)
    for k in range(block_sq.shape[0]):
        sq += block_sq[k]
    return r / sq.sqrt().unsqueeze(1)


#: a tag that no column block's index reaches: the seeds of the probe groups after the first
PROBE_GROUP_TAG = 0x67726F7570  # "group"


def probe_group_seed(set_seed: int, i: int) -> int:
    """The seed of a probe set's group i: the set's seed for group 0 (its column blocks are
    ``derive_seed(set_seed, k)``, :class:`pinnbench.maths.streaming.ColumnStream`), and for
    i > 0 ``derive_seed(set_seed, PROBE_GROUP_TAG, i)``, a chain that no block seed shares (with
    ``derive_seed(set_seed, i)`` a group of sampled coordinates drew from the generator of group
    0's block i: two estimates meant to be independent shared their random numbers)."""
    return set_seed if i == 0 else derive_seed(set_seed, PROBE_GROUP_TAG, i)
