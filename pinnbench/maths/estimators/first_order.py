"""The first-order and weighted terms of the terminal-value problems (problems/terminal.py).

Each is a function of directional derivatives that :mod:`.directional` already computes; this
module holds the maths that turns them into the term, and the one derivative that needs a
direction per point (x itself).

- ``grad_power_mean`` G(u) = (1/d) Σ_{i<d} |∂_i u|^c (HJB-Lin, c = 1.75; Hu et al., Neural Networks
  2024). Not linear in u, but a *mean over coordinates* of a function of one derivative each, so
  dimension sampling is unbiased: for J ⊂ {0..d-1} uniform without replacement,
  E_J[(1/|J|) Σ_{j∈J} |∂_j u|^c] = (1/d) Σ_i |∂_i u|^c (each i is in J with probability |J|/d).
  Variance: (1 − (|J|−1)/(d−1)) S²/|J| with S² the spread of |∂_i u|^c over i (finite-population
  sampling); zero when every |∂_i u| is equal (as for u* of HJB-Lin).
  Dense probes cannot serve it: E[|vᵀ∇u|^c] is not a function of Σ|∂_i u|^c.
  The exact term needs the whole gradient: one reverse pass (autodiff methods), or d forward
  passes (jets, stencils), which is why stde and fd sample coordinates.
- ``weighted_laplacian`` W(u) = Σ_{i<d} x_i² ∂²_i u (Black-Scholes-Barenblatt): the SDGD estimator
  with the weights gathered per point, (d/|J|) Σ_{j∈J} x_j² ∂²_j u, unbiased for the same reason
  (E_J[1{j∈J}] = |J|/d). Hutchinson with per-point probes v = x ⊙ ξ (E[ξξᵀ] = I gives
  E[vᵀ∇²u v] = Σ x_i² ∂²_i u) is not offered: shared probes are what keep jets and the memory of
  the probes independent of n (pinnbench.maths.directions), and x ⊙ ξ is one probe per point.
- ``drift`` x·∇u = Σ_{i<d} x_i ∂_i u: one directional derivative along w = (x_spatial, 0), exact:
  from the gradient: reverse mode (autodiff methods, and stde: :func:`drift_reverse`, a local
  graph of one evaluation even under no_grad, since jets take directions shared by the points),
  or the central stencil (u(x + h w) − u(x − h w)) / (2h) (fd: :func:`drift_fd`, O(h²)
  truncation, no autograd).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from pinnbench.maths.estimators.directional import grad_of


def grad_power_mean(first: Tensor, exponent: float) -> Tensor:
    """(n, V) first derivatives ∂_j u for V coordinates (sampled, or all d) -> (n,):
    (1/V) Σ_j |∂_j u|^c, the unbiased estimate of (1/d) Σ_i |∂_i u|^c (module docstring)."""
    return first.abs().pow(exponent).mean(dim=-1)


def weighted_second(x: Tensor, index: Tensor, second: Tensor, dim: int) -> Tensor:
    """(d/V) Σ_{j∈J} x_j² ∂²_j u with J = ``index`` (V spatial coordinates; all d of them gives
    the exact term): ``second`` (n, V) holds ∂²_j u."""
    weights = x[:, index].square()
    return (weights * second).sum(dim=-1) * (dim / index.numel())


def spatial_tangent(x: Tensor, dim: int) -> Tensor:
    """w = (x_0, ..., x_{d-1}, 0...): x with its time column (if any) zeroed, (n, D)."""
    w = x.clone()
    w[:, dim:] = 0.0
    return w


def drift_from_gradient(x: Tensor, grad: Tensor, dim: int) -> Tensor:
    """x·∇u over the first ``dim`` coordinates, from the (n, D) gradient."""
    return (x[:, :dim] * grad[:, :dim]).sum(dim=1)


def drift_reverse(model, x: Tensor, dim: int,
                  params: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """(u, x·∇u), each (n,), from one reverse-mode gradient in x (the jets' Directions are shared
    by the points, and x is one direction per point). Under ``torch.no_grad()`` the graph of this
    one evaluation is built locally and freed, and the results are detached; with grad mode on,
    the drift stays differentiable in the parameters.

    Forward-mode AD along the per-point tangent (torch.autograd.forward_ad) gives the same
    numbers without a reverse graph, but the CUDA simulation that checks every device
    (tests/cuda_sim.py) cannot follow forward-mode tangents, so the path every CI run checks is
    this one."""
    keep = torch.is_grad_enabled()
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        u = model(xg, params)
        drift = drift_from_gradient(x, grad_of(u, xg, create_graph=keep), dim)
    if not keep:
        return u.detach(), drift.detach()
    return u, drift


def drift_fd(fn: Callable[[Tensor], Tensor], x: Tensor, dim: int, step: float) -> Tensor:
    """(u(x + h w) − u(x − h w)) / (2h), w = (x_spatial, 0): the central stencil along x itself,
    i.e. u at the points scaled by (1 ± h) in space, time untouched."""
    w = spatial_tangent(x, dim)
    return (fn(x + step * w) - fn(x - step * w)) / (2.0 * step)
