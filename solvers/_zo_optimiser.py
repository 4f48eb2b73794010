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
from typing import Sequence

import torch
from torch import Tensor

from pinnbench.solvers._zo_perturbations import Perturbation, SubspaceBasis

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

    The quotients are 0-d float64 tensors on the device (the solver reads nothing back during a
    step), and so is v after the first call; every operation is the float64 one Python's floats
    would do (the power by a tensor exponent, as C's ``pow``), so the numbers are those of the
    same computation on Python floats, bit for bit."""

    def __init__(self, beta2: float = NORM_DECAY) -> None:
        self.beta2 = beta2
        self.v = 0.0
        self.t = 0

    def __call__(self, quotients: list[Tensor]) -> list[Tensor]:
        mean_sq = sum(c * c for c in quotients) / len(quotients)
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * mean_sq
        self.t += 1
        v_hat = self.v / (1.0 - self.beta2**self.t)
        # v_hat^(-1/2) where v_hat > 0, else 0 (then every quotient becomes 0 * c), no branch
        s = torch.where(v_hat > 0.0, torch.pow(v_hat, torch.full_like(v_hat, -0.5)),
                        torch.zeros_like(v_hat))
        return [c * s for c in quotients]


#: a weight matrix's momentum term of an old basis is dropped once beta^age falls below this
#: (what is dropped is at most this fraction of that gradient estimate's total effect)
MOMENTUM_DROP = 0.01


def momentum_horizon(beta: float) -> int:
    """How many low-rank momentum terms live at once: a term's weight beta^age falls below
    :data:`MOMENTUM_DROP` at age ceil(log(DROP) / log(beta)) (44 at beta = 0.9), so that many
    bases (ages 0..43) are kept and each regenerates its V at every update."""
    return math.ceil(math.log(MOMENTUM_DROP) / math.log(beta))


class HeavyBall:
    """Heavy-ball momentum, one rule for every parameter: m_t = beta m_{t-1} + g_hat_t,
    theta_t = theta_{t-1} - lr_t m_t (Polyak 1964; beta = 0: no state, plain ZO-SGD).

    Only the storage differs. A dense parameter keeps m as a tensor of its shape. A weight
    matrix with low-rank perturbations keeps m in the ambient low-rank form
    m = sum_e U_e A_e V_e^T: one r x r matrix A_e per basis e still in the momentum (the basis
    itself is regenerable from its seed; U_e is m x r), so the momentum **survives a basis
    refresh**: when the basis changes, a new term starts and the old ones decay by beta per step.
    A term is dropped once beta^age < :data:`MOMENTUM_DROP` (44 steps at beta = 0.9): state
    O(horizon x (m r + r^2)) per matrix, independent of the input dimension; the update
    regenerates V_e once per live term (the cost of momentum with a short refresh period) and
    passes over the matrix once (:func:`add_lowrank_sum_`).
    We chose this over re-projecting m onto the new basis because two independent random
    r-dimensional bases of R^n are nearly orthogonal: the projection would keep ~r/n of m, i.e.
    reset it."""

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self.dense: dict[int, Tensor] = {}
        self.lowrank: dict[int, list[list]] = {}  # i -> [[basis, A (r x r), beta^age], ...]

    def dense_step(self, i: int, g: Tensor) -> Tensor:
        m = self.dense.get(i)
        m = g if m is None else m.mul_(self.beta).add_(g)
        self.dense[i] = m
        return m

    def lowrank_step(self, i: int, basis, g: Tensor) -> list[list]:
        """Add the r x r coordinates ``g`` (in ``basis``) to parameter i's momentum; returns the
        live [basis, A, weight] terms, whose sum of U A V^T is the momentum."""
        terms = self.lowrank.setdefault(i, [])
        for term in terms:
            term[1] = term[1] * self.beta
            term[2] *= self.beta
        terms[:] = [term for term in terms if term[2] >= MOMENTUM_DROP]
        if terms and terms[-1][0] is basis:
            terms[-1][1] = terms[-1][1] + g
            terms[-1][2] = 1.0
        else:
            terms.append([basis, g.clone(), 1.0])
        return terms

    def state_tensors(self) -> list[Tensor]:
        return list(self.dense.values()) + [t[1] for ts in self.lowrank.values() for t in ts]


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


def descend(params: Sequence[Tensor], perturbations: Sequence[Perturbation],
            quotients: Sequence[Tensor], lr: float, momentum: HeavyBall | None) -> None:
    """theta -= lr m_t with m_t = beta m_{t-1} + (1/q) sum_k c_k z_k, for every parameter
    (:class:`HeavyBall`; ``momentum`` None: m_t = g_hat, no state). A low-rank z = U Xi V^T / r
    enters through its coordinates G = sum_k c_k Xi_k / (q r), so that U G V^T = (1/q) sum_k c_k
    z_k; a full Gaussian z_i without momentum is added perturbation by perturbation (from its
    materialised tensor when the evaluations made one, else regenerated chunk by chunk)."""
    nq = len(perturbations)
    steps = None  # -lr c_k / q, the factor of z_k in every dense parameter's update
    for i, w in enumerate(params):
        basis = perturbations[0].bases[i]
        if basis is not None:
            g = _sum(c * z.xis[i] for z, c in zip(perturbations, quotients)) / (nq * basis.rank)
            terms = [[basis, g]] if momentum is None else momentum.lowrank_step(i, basis, g)
            add_lowrank_sum_(w, [(b, (-lr) * (b.u @ a)) for b, a, *_ in terms])
        elif momentum is None:
            if steps is None:
                steps = [-lr * c / nq for c in quotients]
            for z, step in zip(perturbations, steps):
                z.add_small_to_(i, w, step)
        else:
            g = _sum(c * z.dense(i) for z, c in zip(perturbations, quotients)) / nq
            w.sub_(momentum.dense_step(i, g), alpha=lr)


def _sum(terms):
    """t_1 + t_2 + ... in that order: ``sum()`` without its leading ``0 +`` (an op per call;
    the same numbers)."""
    it = iter(terms)
    total = next(it)
    for t in it:
        total = total + t
    return total
