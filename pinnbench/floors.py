"""Trivial reference fits: how well does an almost-empty model already do?

With the hard-constraint ansatz u = A(x) N(x) + B(x), the two floors replace the network N by

- a constant:  N(x) = c                (1 unknown),
- an affine map: N(x) = a + b . x      (D + 1 unknowns),

fitted by least squares to the exact solution on ``n_fit`` points drawn by the problem's own
sampler (``sample_interior``, a generator fixed by the seed), and scored by relative L2 on the
problem's fixed test set (the same set as :func:`pinnbench.metrics.evaluate`). With the
radius-uniform sampler used by the published suites, ||x|| <= 1 puts every coordinate at
O(1/sqrt(d)), so at high d the two-body solutions are close to A(x)(a + b.x) and these floors are
small: a trained model is only interesting where it beats them.

Fitting (targets y = u*(x) - B(x), features Phi = A(x) [1, x]):

- constant: c = sum A y / sum A^2 (closed form).
- affine, ``n_fit > D + 1``: ordinary least squares ``lstsq(Phi, y)`` in float64.
- affine, ``n_fit <= D + 1`` (large D): the least-squares problem is under-determined, so we take
  the minimum-norm solution through the kernel (dual) form: with K_ij = A_i A_j (1 + x_i . x_j),
  alpha = (K + lam I)^{-1} y, lam = 1e-10 trace(K)/n (a ridge only for numerical stability), and
  N(t) = sum_i alpha_i A_i (1 + x_i . t) = a + b . t with a = sum_i alpha_i A_i and
  b = sum_i alpha_i A_i x_i (one D-vector). This costs O(n_fit^2 D). It interpolates the fit
  points, so it is an *upper bound* on the true affine floor (more points would only lower it);
  the row's provenance says which method and how many points were used.

``n_fit`` is ``min(2 (D + 1), max(MIN_FIT_POINTS, FIT_ELEMENTS // D))``: 2(D+1) points (an
over-determined fit) while 2(D+1) * D <= 2^22 numbers, i.e. up to D ~ 1450; beyond that at most
2^22 numbers (16 MiB in float32, 419 points at D = 10^4) and never fewer than 16 points.
"""

from __future__ import annotations

import torch

FIT_ELEMENTS = 2**22
MIN_FIT_POINTS = 16


def fit_points(input_dim: int) -> int:
    return int(min(2 * (input_dim + 1), max(MIN_FIT_POINTS, FIT_ELEMENTS // input_dim)))


@torch.no_grad()
def floors(problem, n_fit: int | None = None, seed: int | None = None) -> dict[str, float]:
    """``{"floor_const_rel_l2", "floor_affine_rel_l2", "floor_fit_points", "floor_affine_method"}``
    for ``problem`` (see the module docstring for the method)."""
    D = problem.input_dim
    n = fit_points(D) if n_fit is None else int(n_fit)
    gen = torch.Generator(device=problem.device)
    gen.manual_seed(((problem.seed if seed is None else seed) * 1_000_003 + 0xF100) % (2**63 - 1))
    x = problem.sample_interior(n, gen)
    a, b = problem.ansatz(x)
    y = (problem.exact(x) - b).double()
    a64 = a.double()
    c = float((a64 * y).sum() / (a64 * a64).sum())

    if n > D + 1:
        phi = torch.cat([a64[:, None], a64[:, None] * x.double()], dim=1)
        coef = torch.linalg.lstsq(phi.cpu(), y.cpu()[:, None], driver="gels").solution[:, 0]
        coef = coef.to(x.device)
        method = "lstsq"

        bias, slope = coef[0], coef[1:]
    else:
        gram = (x @ x.T).double()  # (n, n), O(n^2 D) in the problem dtype
        k = a64[:, None] * a64[None, :] * (1.0 + gram)
        lam = 1e-10 * float(torch.diagonal(k).sum()) / n
        alpha = torch.linalg.solve(k + lam * torch.eye(n, dtype=k.dtype, device=k.device), y)
        w = alpha * a64  # N(t) = sum_i w_i (1 + x_i . t) = a + b . t
        bias, slope = w.sum(), x.double().T @ w
        method = f"min-norm dual, {n} points <= D+1 = {D + 1}"

    sq_ref = sq_const = sq_aff = 0.0
    for t, u_star in problem.test_chunks():
        at, bt = problem.ansatz(t)
        target = u_star.double()
        sq_ref += float((target * target).sum())
        sq_const += float(((at.double() * c + bt.double()) - target).pow(2).sum())
        affine = at.double() * (bias + (t @ slope.to(t.dtype)).double())
        sq_aff += float((affine + bt.double() - target).pow(2).sum())
    return {
        "floor_const_rel_l2": (sq_const / sq_ref) ** 0.5 if sq_ref > 0 else float("nan"),
        "floor_affine_rel_l2": (sq_aff / sq_ref) ** 0.5 if sq_ref > 0 else float("nan"),
        "floor_fit_points": n,
        "floor_affine_method": method,
    }
