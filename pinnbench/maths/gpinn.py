"""gPINN: the gradient-enhanced residual loss with randomized coordinates (issue 12 item 4).

Yu, Lu, Meng & Karniadakis, "Gradient-enhanced physics-informed neural networks for forward and
inverse PDE problems", CMAME 393 (2022), add the gradient of the residual r = L u - f to the
loss: L = mean_x r^2 + w sum_j mean_x (d_j r)^2. In d dimensions the sum has d terms, so here
it is sampled as SDGD samples the Laplacian (Hu et al., Neural Networks 2024): k coordinates J
drawn uniformly without replacement, and

    L_g = mean_x r(x)^2 + w (d / k) sum_{j in J} mean_x (d_j r(x))^2,

whose expectation over J is the full gPINN loss for the given residual estimate (each j is in J
with probability k / d). With the operator's terms estimated by probes v (fixed for the step),
d_j r = d_j (L_hat u + N(u)) - d_j f: d_j f in closed form (``problem.source_grad``, the
problems with ``supports_gpinn``), and the derivative of the estimate

- by reverse mode through the estimator (backprop solvers: x requires grad, the graph is kept
  so that the loss is differentiated in theta), exact for the drawn probes;
- by a central difference [R(x + h e_j) - R(x - h e_j)] / (2 h), R = L_hat u + N(u), with the
  same probes (forward-only solvers, no autograd): error O(h^2) + O(eps_mach / h), h =
  eps_mach^(1/3) (``default_fd_step(dtype, 1)``: 4.9e-3 in float32, 6.1e-6 in float64).

Both are unbiased for d_j of the estimated residual's mean over the probes, since the probes do
not depend on x. Choices of ours: w (``gpinn_weight``, default 1: the paper sets it per problem)
and k (``gpinn_dims``, default 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pinnbench.maths.estimators import estimate_terms
from pinnbench.maths.estimators.directional import default_fd_step


def residual_gradient(problem, model, x: Tensor, drawn, index: Tensor, method: str,
                      probes: int, opts: dict, autograd: bool,
                      residual: Tensor | None = None) -> Tensor:
    """(n, k): d_j r at the points ``x`` for the spatial coordinates j in ``index``, with the
    operator's terms estimated from the drawn probes (see the module docstring). ``residual``:
    r already computed from ``x`` (which requires grad) with these probes, e.g. by the loss
    itself, so that reverse mode differentiates it instead of estimating it again (the source
    in it is a constant of x: its derivative comes from ``source_grad``)."""
    index = index.to(x.device)
    df = problem.source_grad(x.detach(), index)
    zero = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    if autograd:
        if residual is None:
            x = x.detach().requires_grad_(True)
            u, terms = estimate_terms(model, x, method, probes=probes, drawn=drawn, **opts)
            residual = problem.residual(terms, u, x, source=zero)
        (g,) = torch.autograd.grad(residual.sum(), x, create_graph=True)
        return g[:, index] - df
    h = default_fd_step(x.dtype, 1)
    n, k = x.shape[0], index.numel()
    shifted = x.repeat(2 * k, 1)  # blocks: +h e_j0, -h e_j0, +h e_j1, ...
    rows = torch.arange(2 * k * n, device=x.device)
    cols = index.repeat_interleave(2 * n)
    signs = torch.tensor([h, -h], dtype=x.dtype, device=x.device).repeat_interleave(n).repeat(k)
    shifted[rows, cols] += signs
    u, terms = estimate_terms(model, shifted, method, probes=probes, drawn=drawn, **opts)
    r = problem.residual(terms, u, shifted, source=zero.repeat(2 * k)).reshape(k, 2, n)
    return ((r[:, 0] - r[:, 1]) / (2.0 * h)).T - df


def gpinn_term(problem, model, x: Tensor, drawn, index: Tensor, method: str, probes: int,
               opts: dict, autograd: bool, residual: Tensor | None = None) -> Tensor:
    """(d / k) sum_{j in J} mean_x (d_j r)^2, a 0-d tensor (``residual``: see
    :func:`residual_gradient`)."""
    g = residual_gradient(problem, model, x, drawn, index, method, probes, opts, autograd,
                          residual)
    return (g * g).sum(dim=1).mean() * (problem.dim / index.numel())
