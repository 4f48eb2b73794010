"""Trivial reference fits ("floors"): how well does an almost-empty model already do?

With the hard-constraint ansatz u = A(x) N(x) + B(x), the two floors replace the network N by

- a constant:     N(x) = c               (1 unknown),
- an affine map:  N(x) = a + b . x       (D + 1 unknowns),

and report the relative L2 error of the best such fit **on the problem's fixed test set** (the
same points as :func:`pinnbench.judge.metrics.evaluate`): each is a least-squares fit on the test set
itself, i.e. the exact minimum of the reported metric over its family. No model of the family
scores below its floor on this test set, and since {A (a + b . x)} contains {A c}, the affine
floor is never above the constant one (checked in tests/test_floors.py).

Method (targets y = u*(x) - B(x), features Phi = A(x) [1, x], all sums in float64):

- constant: c = sum A y / sum A^2, on every test set (one unknown, n_test >= 100 points).
- affine: only where the fit is over-determined by a factor of at least OVERDETERMINED = 4,
  n_test >= 4 (D + 1), i.e. D <= 2895 with the default test set rule
  (:func:`pinnbench.maths.problem.test_set_size`). The normal equations Phi^T Phi w = Phi^T y are
  accumulated in blocks of at most ROW_BLOCK_ELEMENTS numbers (so no n_test x D float64 array
  is built), scaled by their diagonal and solved by Cholesky (a symmetric eigen-solve with a
  relative cut-off if Cholesky fails). Memory: the (D + 1)^2 Gram matrix, at most
  GRAM_ELEMENTS numbers (128 MiB); time O(n_test D^2), about 10 s at D = 2895 on one core.
  Beyond that no affine floor is reported (``floor_affine_rel_l2`` is None and
  ``floor_method`` says why): an affine map through fewer than 4 (D + 1) points is close to an
  interpolation, and its in-sample error says nothing about the family's best.

How the in-sample minimum relates to the best fit over the sampling law: for the part of u* the
family cannot represent, the in-sample residual is smaller by about sqrt(1 - (D + 1)/n_test)
(0.87 at the 4 (D + 1) limit, 0.997 at d = 100). It is the floor of the reported number, which
is what a trained model is compared with.

With the radius-uniform sampler of the published suites, ||x|| <= 1 puts every coordinate at
O(1/sqrt(d)), so at high d the two-body solutions are close to A(x)(a + b . x) and these floors
are small: a trained model is only interesting where it beats them (the ``*-scaled-v1`` ids).

Each floor comes with a 95 % interval over the draw of the test points (delta method,
:mod:`pinnbench.judge.intervals`), for the fitted function held fixed. The test set is drawn from a
CPU generator (:meth:`pinnbench.maths.problem.Problem.test_chunks`), and nothing here draws random
numbers, so CPU and CUDA rows of one (problem, d, seed) get the same floors up to rounding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from pinnbench.judge.intervals import RatioMoments, rel_l2_interval

#: an affine floor is reported only when the test set has at least this many points per unknown
OVERDETERMINED = 4
#: the largest Gram matrix (D + 1)^2 accumulated, in numbers (float64: 128 MiB)
GRAM_ELEMENTS = 2**24
#: rows of the float64 feature block at a time: rows * (D + 1) <= this (float64: 32 MiB)
ROW_BLOCK_ELEMENTS = 2**22
#: eigenvalues below this fraction of the largest are dropped when Cholesky fails
EIG_CUTOFF = 1e-13


def affine_reported(input_dim: int, n_points: int) -> tuple[bool, str]:
    """(whether an affine floor is fitted, the reason when not)."""
    unknowns = input_dim + 1
    if n_points < OVERDETERMINED * unknowns:
        return False, (f"affine: none ({n_points} test points < {OVERDETERMINED}(D+1) = "
                       f"{OVERDETERMINED * unknowns}, no over-determined fit)")
    if unknowns * unknowns > GRAM_ELEMENTS:
        return False, (f"affine: none ((D+1)^2 = {unknowns * unknowns} > {GRAM_ELEMENTS} numbers "
                       "for the normal equations)")
    return True, ""


def _row_blocks(n: int, width: int):
    rows = max(1, ROW_BLOCK_ELEMENTS // width)
    for start in range(0, n, rows):
        yield start, min(start + rows, n)


def _solve_normal_equations(gram: Tensor, rhs: Tensor) -> tuple[Tensor, str]:
    """w with gram w = rhs (symmetric positive semi-definite), after diagonal scaling."""
    gram, rhs = gram.cpu(), rhs.cpu()
    scale = torch.sqrt(torch.diagonal(gram)).clamp_min(torch.finfo(gram.dtype).tiny)
    g = gram / scale[:, None] / scale[None, :]
    b = rhs / scale
    chol, info = torch.linalg.cholesky_ex(g)
    if int(info) == 0:
        return torch.cholesky_solve(b[:, None], chol)[:, 0] / scale, "cholesky"
    evals, evecs = torch.linalg.eigh(g)
    keep = evals > EIG_CUTOFF * float(evals.max())
    w = evecs[:, keep] @ ((evecs[:, keep].T @ b) / evals[keep])
    return w / scale, f"eigh, rank {int(keep.sum())}"


@torch.no_grad()
def floors(problem) -> dict[str, Any]:
    """The floors of ``problem`` on its test set, as result-row columns:

    ``floor_const_rel_l2`` (+ ``_lo``, ``_hi``), ``floor_affine_rel_l2`` (+ ``_lo``, ``_hi``;
    None where no over-determined fit is possible), ``floor_points`` (test points fitted and
    scored) and ``floor_method`` (how, in words). See the module docstring."""
    D = problem.input_dim
    n = problem.n_test
    do_affine, why_not = affine_reported(D, n)

    s_aa = s_ay = 0.0
    gram = rhs = None
    if do_affine:
        gram = torch.zeros(D + 1, D + 1, dtype=torch.float64, device=problem.device)
        rhs = torch.zeros(D + 1, dtype=torch.float64, device=problem.device)
    a_all, y_all, target_all = [], [], []  # n_test numbers each: one pass for the constant
    for t, u_star in problem.test_chunks():
        a, b = problem.ansatz(t)
        a64, y = a.double(), (u_star - b).double()
        a_all.append(a64)
        y_all.append(y)
        target_all.append(u_star.double())
        s_aa += float((a64 * a64).sum())
        s_ay += float((a64 * y).sum())
        if do_affine:
            for i, j in _row_blocks(t.shape[0], D + 1):
                ab = a64[i:j, None]
                phi = torch.cat([ab, ab * t[i:j].double()], dim=1)
                gram.addmm_(phi.T, phi)
                rhs.addmv_(phi.T, y[i:j])
    c = s_ay / s_aa if s_aa > 0 else 0.0

    bias = slope = None
    solver = ""
    if do_affine:
        w, solver = _solve_normal_equations(gram, rhs)
        del gram, rhs
        w = w.to(problem.device)
        bias, slope = w[0], w[1:]

    const = RatioMoments()
    for a64, y, target in zip(a_all, y_all, target_all):
        e = a64 * c - y
        const.add(e * e, target * target)
    affine = RatioMoments()
    if do_affine:  # a second pass over the points (kept in memory at these D)
        for (t, _), a64, y, target in zip(problem.test_chunks(), a_all, y_all, target_all):
            for i, j in _row_blocks(t.shape[0], D + 1):
                e = a64[i:j] * (bias + t[i:j].double() @ slope) - y[i:j]
                affine.add(e * e, target[i:j] ** 2)

    out: dict[str, Any] = {"floor_points": n}
    out["floor_const_rel_l2"] = math.sqrt(const.ratio)
    out["floor_const_rel_l2_lo"], out["floor_const_rel_l2_hi"] = rel_l2_interval(const)
    method = f"least squares on the {n} test points (in-sample: the family's best on this test set)"
    if do_affine:
        value = math.sqrt(affine.ratio)
        lo, hi = rel_l2_interval(affine)
        if not value <= out["floor_const_rel_l2"]:  # only by rounding: the constant is affine
            value, lo, hi = (out[k] for k in ("floor_const_rel_l2", "floor_const_rel_l2_lo",
                                              "floor_const_rel_l2_hi"))
            solver += "; the solve was less accurate than the constant fit, which is kept"
        out["floor_affine_rel_l2"], out["floor_affine_rel_l2_lo"], out["floor_affine_rel_l2_hi"] = \
            value, lo, hi
        out["floor_method"] = f"{method}; affine by normal equations ({solver})"
    else:
        out["floor_affine_rel_l2"] = out["floor_affine_rel_l2_lo"] = None
        out["floor_affine_rel_l2_hi"] = None
        out["floor_method"] = f"{method}; {why_not}"
    return out


def floors_for(problem_id: str, dim: int, seed: int, dtype: str = "float32",
               device: str = "cpu") -> dict[str, Any]:
    """The floors of one (problem, dim, seed, dtype) key, which every cell of that key shares
    whatever its solver, status (ok, timeout, oom, ...) or device: compute them once per key,
    on the CPU by default (the device changes them by rounding only)."""
    from pinnbench.maths.problem_registry import make_problem

    return floors(make_problem(problem_id, dim=dim, seed=seed, dtype=dtype, device=device))
