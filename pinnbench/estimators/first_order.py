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
  the probes independent of n (pinnbench.directions), and x ⊙ ξ is one probe per point.
- ``drift`` x·∇u = Σ_{i<d} x_i ∂_i u: one directional derivative along w = (x_spatial, 0), exact:
  from the gradient (autodiff), by forward-mode AD along the per-point tangent w (stde:
  :func:`drift_forward`, no reverse graph), or by the central stencil
  (u(x + h w) − u(x − h w)) / (2h) (fd: :func:`drift_fd`, O(h²) truncation).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor


def grad_power_mean(first: Tensor, exponent: float) -> Tensor:
    """(n, V) first derivatives ∂_j u for V coordinates (sampled, or all d) -> (n,):
    (1/V) Σ_j |∂_j u|^c, the unbiased estimate of (1/d) Σ_i |∂_i u|^c (module docstring)."""
    return first.abs().pow(exponent).mean(dim=1)


def weighted_second(x: Tensor, index: Tensor, second: Tensor, dim: int) -> Tensor:
    """(d/V) Σ_{j∈J} x_j² ∂²_j u with J = ``index`` (V spatial coordinates; all d of them gives
    the exact term): ``second`` (n, V) holds ∂²_j u."""
    weights = x[:, index].square()
    return (weights * second).sum(dim=1) * (dim / index.numel())


def spatial_tangent(x: Tensor, dim: int) -> Tensor:
    """w = (x_0, ..., x_{d-1}, 0...): x with its time column (if any) zeroed, (n, D)."""
    w = x.clone()
    w[:, dim:] = 0.0
    return w


def drift_from_gradient(x: Tensor, grad: Tensor, dim: int) -> Tensor:
    """x·∇u over the first ``dim`` coordinates, from the (n, D) gradient."""
    return (x[:, :dim] * grad[:, :dim]).sum(dim=1)


def drift_forward(model, x: Tensor, dim: int,
                  params: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """(u, x·∇u), each (n,), from one forward-mode pass along the per-point tangent
    w = (x_spatial, 0) (torch.autograd.forward_ad: a jet of order 1 whose direction differs by
    point). Builds no reverse graph in x; differentiable in the parameters when grad mode is on."""
    with fwad.dual_level():
        u_dual = model(fwad.make_dual(x, spatial_tangent(x, dim)), params)
        u, tangent = fwad.unpack_dual(u_dual)
    if tangent is None:  # u does not depend on x
        tangent = torch.zeros_like(u)
    return u, tangent


def drift_fd(fn: Callable[[Tensor], Tensor], x: Tensor, dim: int, step: float) -> Tensor:
    """(u(x + h w) − u(x − h w)) / (2h), w = (x_spatial, 0): the central stencil along x itself,
    i.e. u at the points scaled by (1 ± h) in space, time untouched."""
    w = spatial_tangent(x, dim)
    return (fn(x + step * w) - fn(x - step * w)) / (2.0 * step)
