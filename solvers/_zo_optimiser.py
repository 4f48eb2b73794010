"""The optimiser of the zeroth-order solvers: from the step's quotients to the new theta.

Given the q difference quotients c_k of a step and its perturbations z_k
(:mod:`pinnbench.solvers._zo_perturbations`), the gradient estimate is
g_hat = (1/q) sum_k c_k z_k, and one heavy-ball step m <- beta m + g_hat, theta <- theta - lr_t m
updates every parameter alike (:func:`descend`). Optionally the quotients are first normalised by
a running scalar (:class:`QuotientScale`). Nothing here holds a tensor of parameter size except
the dense momentum of full Gaussian perturbations (zo's, and sdze's ``subspace=false``).

Read next: :mod:`pinnbench.solvers._zo_step` (the step that calls this).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from pinnbench.solvers import _zo_perturbations
from pinnbench.solvers._zo_perturbations import Perturbation, SubspaceBasis, one_block

#: the running mean's decay of :class:`QuotientScale` (Adam's beta2)
NORM_DECAY = 0.99


class QuotientScale:
    """Scalar second-moment normalisation of zeroth-order quotients (one number of state).

    v_t = beta2 v_{t-1} + (1 - beta2) mean_k q_k^2,  v_hat = v_t / (1 - beta2^(t+1)),
    q_k <- q_k / sqrt(v_hat). The PINN loss spans many orders of magnitude (at d = 100 the
    two-body source is ~2e3, so the initial loss is ~1e7 and its quotients ~1e6), and a plain
    ZO-SGD step size that is stable at the start is useless later; normalising by a running
    scale of the quotients makes ``lr`` the size of a step per unit of z, like Adam's lr (a
    scalar version of ZO-AdaMM, Chen et al., NeurIPS 2019), without any P-sized buffer.

    The quotients are a (q,) float64 tensor on the device (the solver reads nothing back during
    a step), and v and t are 0-d ones after the first call, updated in place (so a step captured
    as a CUDA graph reads and writes the same memory at every replay, and no step count is a
    Python number frozen into it); every operation is the float64 one Python's
    floats would do (the sum of squares in order, as ``cumsum``'s last element on the CPU; the
    powers by a tensor exponent, as C's ``pow``; t counts in exact integers), so the numbers are
    those of the same computation on Python floats, bit for bit (tests/test_quotient_scale.py),
    in 15 ops whatever q (the sum over a list of q 0-d tensors took 3q + 8)."""

    def __init__(self, beta2: float = NORM_DECAY) -> None:
        self.beta2 = beta2
        self.v: float | Tensor = 0.0
        self.t: Tensor | None = None  # the number of calls so far, float64 on the device

    def __call__(self, quotients: Tensor) -> Tensor:
        mean_sq = torch.cumsum(quotients * quotients, 0)[-1] / quotients.shape[0]
        if self.t is None:  # the first call: v = 0 * beta2 + (1 - beta2) mean_sq
            self.v = self.beta2 * self.v + (1.0 - self.beta2) * mean_sq
            self.t = torch.ones_like(mean_sq)
            # the exponent and the zero of the where below, made once
            self._minus_half, self._zero = torch.full_like(mean_sq, -0.5), torch.zeros_like(mean_sq)
        else:
            self.v.mul_(self.beta2).add_((1.0 - self.beta2) * mean_sq)
            self.t.add_(1.0)
        v_hat = self.v / (1.0 - torch.pow(self.beta2, self.t))
        # v_hat^(-1/2) where v_hat > 0, else 0 (then every quotient becomes 0 * c), no branch
        s = torch.where(v_hat > 0.0, torch.pow(v_hat, self._minus_half), self._zero)
        return quotients * s


#: a weight matrix's momentum term of an old basis is dropped once beta^age falls below this
#: (what is dropped is at most this fraction of that gradient estimate's total effect)
MOMENTUM_DROP = 0.01


def momentum_horizon(beta: float) -> int:
    """How many low-rank momentum terms live at once: a term's weight beta^age falls below
    :data:`MOMENTUM_DROP` at age ceil(log(DROP) / log(beta)) (44 at beta = 0.9), so that many
    bases (ages 0..43) are kept and each regenerates its V at every update."""
    return math.ceil(math.log(MOMENTUM_DROP) / math.log(beta))


def older_ages(beta: float, newest: int) -> list[int]:
    """The ages a >= 1 of the older terms that a step's update keeps, at one new basis a step
    (refresh 1) and ``newest`` steps taken before it: those whose weight beta^a, formed by the
    repeated products :class:`HeavyBall` forms, is still >= :data:`MOMENTUM_DROP` (ages 1..43
    at beta = 0.9 once 43 steps were taken)."""
    ages, w = [], 1.0
    while len(ages) < newest:
        w *= beta
        if w < MOMENTUM_DROP:
            break
        ages.append(len(ages) + 1)
    return ages


def live_terms(beta: float, refresh: int) -> int:
    """At most how many low-rank momentum terms (bases) of a matrix are alive at once, a new
    basis every ``refresh`` steps: :func:`momentum_horizon` at refresh 1 (44 at beta = 0.9),
    else the bases updated within the horizon, at most ceil(horizon / refresh) + 1."""
    horizon = momentum_horizon(beta)
    return min(horizon, -(-horizon // refresh) + 1)


class HeavyBall:
    """Heavy-ball momentum, one rule for every parameter: m_t = beta m_{t-1} + g_hat_t,
    theta_t = theta_{t-1} - lr_t m_t (Polyak 1964; beta = 0: no state, plain ZO-SGD).

    Only the storage differs. A dense parameter keeps m as a tensor of its shape. A weight
    matrix with low-rank perturbations keeps m in the ambient low-rank form
    m = sum_e U_e A_e V_e^T: one r x r matrix A_e per basis e still in the momentum (the basis
    itself is regenerable from its seed; U_e is m x r), so the momentum **survives a basis
    refresh**: when the basis changes, a new term starts and the old ones decay by beta per step.
    A term is dropped once beta^age < :data:`MOMENTUM_DROP` (44 steps at beta = 0.9): state
    O(horizon x (m r + r^2)) per matrix, independent of the input dimension, stacked
    (:class:`LowRankTerms`: one op scales every A_e, one batched product forms every U_e A_e);
    the update regenerates V_e once per live term (the cost of momentum with a short refresh
    period: :func:`momentum_horizon` terms at refresh 1), but keeps the V_e of a small matrix,
    and passes over the matrix once (:func:`add_lowrank_sum_`).
    We chose this over re-projecting m onto the new basis because two independent random
    r-dimensional bases of R^n are nearly orthogonal: the projection would keep ~r/n of m, i.e.
    reset it."""

    def __init__(self, beta: float, in_place: bool = False) -> None:
        self.beta = beta
        #: keep the low-rank terms' storage once their number stops changing (a step captured
        #: as a CUDA graph must update its state where it is): the same numbers
        self.in_place = in_place
        self.dense: dict[int, Tensor] = {}
        self.lowrank: dict[int, LowRankTerms] = {}

    def dense_steps(self, idx: Sequence[int], gs: Sequence[Tensor]) -> list[Tensor]:
        """m_i <- beta m_i + g_i for the dense parameters ``idx`` (m_i = g_i at the first step),
        as two multi-tensor ops; returns the m_i."""
        ms = [self.dense.get(i) for i in idx]
        if any(m is None for m in ms):
            ms = [g if m is None else m.mul_(self.beta).add_(g) for m, g in zip(ms, gs)]
        else:
            torch._foreach_mul_(ms, self.beta)
            torch._foreach_add_(ms, gs)
        self.dense.update(zip(idx, ms))
        return ms

    def lowrank_step(self, i: int, basis, g: Tensor) -> "LowRankTerms":
        """Add the r x r coordinates ``g`` (in ``basis``) to parameter i's momentum: every A_e
        times beta (one op on the stack), the terms whose weight beta^age fell below
        :data:`MOMENTUM_DROP` dropped (the oldest: a slice), then ``g`` added to the newest
        term if its basis is ``basis``, else appended as a new term; returns the live terms,
        whose sum of U_e A_e V_e^T is the momentum. The numbers of the term-by-term rule: the
        same elementwise products and sums, in the same order."""
        t = self.lowrank.get(i)
        if t is None:
            v = _kept_v(i, basis)
            t = LowRankTerms([basis], g.unsqueeze(0).clone(), basis.u.unsqueeze(0), [1.0],
                             None if v is None else v.unsqueeze(0))
        else:
            weights = [w * self.beta for w in t.weights]  # increasing: the oldest first
            k = next((j for j, w in enumerate(weights) if w >= MOMENTUM_DROP), len(weights))
            if self.in_place and k == 1 and t.bases[-1] is not basis:
                t = _shift_in_(t, self.beta, basis, g, weights[1:] + [1.0], _kept_v(i, basis))
                self.lowrank[i] = t
                return t
            t = LowRankTerms(t.bases[k:], (t.a * self.beta)[k:], t.u[k:], weights[k:],
                             None if t.v is None else t.v[k:])
            if t.bases and t.bases[-1] is basis:
                t.a[-1].add_(g)
                t.weights[-1] = 1.0
            else:
                v = _kept_v(i, basis)
                t = LowRankTerms(t.bases + [basis], torch.cat([t.a, g.unsqueeze(0)]),
                                 torch.cat([t.u, basis.u.unsqueeze(0)]), t.weights + [1.0],
                                 None if t.v is None or v is None
                                 else torch.cat([t.v, v.unsqueeze(0)]))
        self.lowrank[i] = t
        return t

    def state_tensors(self) -> list[Tensor]:
        return list(self.dense.values()) + [x for t in self.lowrank.values()
                                            for x in (t.a, t.u, t.v) if x is not None]


def _shift_in_(t: "LowRankTerms", beta: float, basis, g: Tensor, weights: list[float],
               v: Tensor | None) -> "LowRankTerms":
    """The oldest term dropped and ``basis``'s appended, in the stacks' own storage: every
    A_e times beta moved one slot towards the front (the numbers of ``(a * beta)[1:]``), then
    the new term written into the last slot."""
    t.a[:-1].copy_(t.a[1:] * beta)
    t.a[-1].copy_(g)
    for stack, new in ((t.u, basis.u), (t.v, v)):
        if stack is not None:
            stack[:-1].copy_(stack[1:].clone())  # overlapping slices: copy_ needs a copy
            stack[-1].copy_(new)
    return LowRankTerms(t.bases[1:] + [basis], t.a, t.u, weights, t.v)


#: a hidden matrix (not W0, whose n is the input dimension) whose V (n x r) has at most this
#: many numbers keeps each live term's V in its momentum instead of regenerating it at every
#: update (44 launches a step for W1, W2 at the defaults; 44 x 65,536 numbers = 11.5 MB at most
#: per matrix in float32). W0's V_e (d x r each, 2.4 W0 for 44 terms at r = 7 and width 128)
#: are what the momentum must not hold: its state stays independent of d
KEEP_V_NUMBERS = 2**16


def _kept_v(i: int, basis: SubspaceBasis) -> Tensor | None:
    """V^T of parameter i's basis, (r, n), kept, for a small hidden matrix; None for W0 (i = 0)
    and big ones. Only a V regenerated in one chunk is kept, so that its update is the same
    single product as the regenerated one's (bit for bit: the same (E r, n) right factor)."""
    small = basis.n * basis.rank <= min(KEEP_V_NUMBERS, _zo_perturbations.CHUNK_ELEMENTS)
    return basis.vt_dense() if i > 0 and small and basis.plan is None else None


@dataclass
class LowRankTerms:
    """The low-rank momentum of one weight matrix, sum_e U_e A_e V_e^T over its live bases
    (oldest first), stacked so that a step's work on it is a few ops whatever the number E of
    terms: ``a`` (E, r, r), ``u`` (E, m, r), ``weights`` beta^age of each term (the drop rule),
    ``v`` (E, r, n) the kept V_e^T of a small matrix (:data:`KEEP_V_NUMBERS`), else None."""

    bases: list
    a: Tensor
    u: Tensor
    weights: list[float]
    v: Tensor | None


def add_momentum_(w: Tensor, t: LowRankTerms, lr: float | Tensor) -> None:
    """w -= lr sum_e U_e A_e V_e^T: every (-lr) U_e A_e in one batched product (one term: its
    product, as without momentum), then one pass over w (:func:`add_lowrank_sum_`, or one
    product with the kept V_e^T, stacked (E r, n) as the regenerated ones are)."""
    if len(t.bases) == 1:
        add_lowrank_sum_(w, [(t.bases[0], (t.u[0] @ t.a[0]) * (-lr))])
        return
    e, m, r = t.u.shape
    a_all = (torch.bmm(t.u, t.a) * (-lr)).transpose(0, 1).reshape(m, e * r)  # (m, E r)
    if t.v is None:
        add_lowrank_sum_(w, list(zip(t.bases, a_all.split(r, dim=1))), a_all)
        return
    w.addmm_(a_all, t.v.reshape(e * r, t.v.shape[2]))


def add_lowrank_sum_(w: Tensor, terms: Sequence[tuple[SubspaceBasis, Tensor]],
                     a_all: Tensor | None = None) -> None:
    """w += sum_e a_e V_e^T for (basis_e, a_e (m, r)) pairs of bases of w's shape and rank, in
    one pass over w: the V_e are regenerated in lockstep row chunks (same chunking for every
    basis of a shape and rank), each chunk's V_e^T drawn straight into rows [e r, (e + 1) r) of
    one (E r, j1 - j0) block, and w[:, j0:j1] += a_all @ block, one product. ``a_all``: the
    a_e side by side, (m, E r), when the caller has them so."""
    if len(terms) == 1:
        basis, a = terms[0]
        basis.add_to_(w, a)
        return
    if a_all is None:
        a_all = torch.cat([a for _, a in terms], dim=1)  # (m, E r)
    r = terms[0][0].rank
    block: list[Tensor] = []  # the current chunk's (E, r, j1 - j0) block, then its E slices

    def rows(e: int):
        def into(j0: int, j1: int) -> Tensor:
            if e == 0:  # zip draws basis 0's chunk first: it opens the chunk's block
                b = torch.empty(len(terms), r, j1 - j0, dtype=w.dtype, device=w.device)
                block[:] = [b, *b.unbind()]  # E views in one op
            return block[1 + e]
        return into

    for chunks in zip(*[b.vt_chunks(rows(e)) for e, (b, _) in enumerate(terms)]):
        j0, j1 = chunks[0][0], chunks[0][1]
        w[:, j0:j1].addmm_(a_all, block[0].view(-1, j1 - j0))  # (E r, j1 - j0)


def descend(params: Sequence[Tensor], perturbations: Sequence[Perturbation],
            quotients: Tensor, lr: float | Tensor, momentum: HeavyBall | None) -> None:
    """theta -= lr m_t with m_t = beta m_{t-1} + (1/q) sum_k c_k z_k, for every parameter
    (:class:`HeavyBall`; ``momentum`` None: m_t = g_hat, no state). A low-rank z = U Xi V^T / r
    enters through its coordinates G = sum_k c_k Xi_k / (q r), so that U G V^T = (1/q) sum_k c_k
    z_k. The sums over k of the perturbations' small parts (every Xi_k and every z_k but W0's
    full Gaussian) are one product, c^T times their block
    (:class:`~pinnbench.solvers._zo_perturbations.SmallBlock`); W0's full Gaussian z0_k is
    regenerated one perturbation at a time (it is parameter-sized, so never q of them at once).
    ``quotients``: the (q,) tensor of the c_k. ``lr``: a number, or a 0-d float64 tensor on the
    device (a captured step's, refilled before each replay), the same numbers either way (the
    scalar is rounded to the parameters' dtype as a Python number is, and ``addcmul_`` by it
    rounds as ``sub_(alpha=)`` does, bit for bit on the CPU)."""
    nq = len(perturbations)
    bases = perturbations[0].bases
    block = one_block(perturbations)
    # sum_k c_k row_k of the block, (S,): every small part's sum in one product
    sums = None if block is None else quotients.to(block.flat.dtype) @ block.flat

    def summed(idx: Sequence[int]) -> list[Tensor]:
        """sum_k c_k part_{k,i} for each i of ``idx`` (Xi_k where i has a basis, else z_k)."""
        out = {i: block.split(sums, i) for i in idx if block is not None and i in block.layout}
        rest = [i for i in idx if i not in out]
        if rest:
            out.update(zip(rest, _weighted_sums(([z.made(i) if bases[i] is None else z.part(i)
                                                  for i in rest] for z in perturbations),
                                                list(quotients.unbind()))))
        return [out[i] for i in idx]

    lowrank = [i for i, b in enumerate(bases) if b is not None]
    dense = [i for i, b in enumerate(bases) if b is None]
    if lowrank:  # every matrix's G at once
        gs = torch._foreach_div(summed(lowrank), [float(nq * bases[i].rank) for i in lowrank])
        for i, g in zip(lowrank, gs):
            if momentum is None:
                add_lowrank_sum_(params[i], [(bases[i], (bases[i].u @ g) * (-lr))])
            else:
                add_momentum_(params[i], momentum.lowrank_step(i, bases[i], g), lr)
    if not dense:
        return
    if momentum is None and 0 in dense:  # W0's z0_k added one at a time, chunk by chunk
        for z, ck in zip(perturbations, quotients.unbind()):
            z.add_small_to_(0, params[0], (-lr / nq) * ck)
        dense = dense[1:]
        if not dense:
            return
    gs = torch._foreach_div(summed(dense), float(nq))
    ms = gs if momentum is None else momentum.dense_steps(dense, gs)
    if isinstance(lr, Tensor):  # theta + m (-lr): what sub_(alpha=lr) computes
        torch._foreach_addcmul_([params[i] for i in dense], ms, [-lr] * len(ms))
    else:
        torch._foreach_sub_([params[i] for i in dense], ms, alpha=lr)


def _weighted_sums(lists, coeffs: Sequence[Tensor]) -> list[Tensor]:
    """[c_1 t_{1,j} + c_2 t_{2,j} + ... for each j], summed in that order, for the lists
    t_k = [t_{k,1}, t_{k,2}, ...] that ``lists`` yields one at a time: the numbers of
    ``c_1 * t_1 + c_2 * t_2 + ...`` tensor by tensor (bit for bit), in two multi-tensor ops per
    k whatever the number of tensors."""
    it, cs = iter(lists), iter(coeffs)
    total = torch._foreach_mul(next(it), next(cs))
    for ts, c in zip(it, cs):
        torch._foreach_add_(total, torch._foreach_mul(ts, c))
    return total
