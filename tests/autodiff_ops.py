"""Reference derivatives by torch autograd, for tests only (small d, float64).

Every function takes ``fn``: (n, D) -> (n,) acting row by row, and points ``x`` (n, D); it
returns (n,) (or (n, V)). Rows are independent, so d/dx of ``fn(x).sum()`` gives every row's
gradient at once. Cost grows like D^k for a k-th order operator: reference use only.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Fn = Callable[[Tensor], Tensor]


def _grad(y: Tensor, x: Tensor) -> Tensor:
    if not y.requires_grad:  # y does not depend on x (a derivative of a polynomial, to its end)
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


def _laplacian_of(y: Tensor, x: Tensor, n_spatial: int) -> Tensor:
    g = _grad(y, x)
    return sum(_grad(g[:, j], x)[:, j] for j in range(n_spatial))


def laplacian(fn: Fn, x: Tensor, n_spatial: int | None = None) -> Tensor:
    """sum_{j < n_spatial} d^2 fn / dx_j^2 (all coordinates by default)."""
    x = x.detach().clone().requires_grad_(True)
    n_spatial = x.shape[1] if n_spatial is None else n_spatial
    return _laplacian_of(fn(x), x, n_spatial).detach()


def bilaplacian(fn: Fn, x: Tensor, n_spatial: int | None = None) -> Tensor:
    """Lap(Lap fn) over the first n_spatial coordinates."""
    x = x.detach().clone().requires_grad_(True)
    n_spatial = x.shape[1] if n_spatial is None else n_spatial
    lap = _laplacian_of(fn(x), x, n_spatial)
    return _laplacian_of(lap, x, n_spatial).detach()


def dt(fn: Fn, x: Tensor) -> Tensor:
    """d fn / dt, time the last coordinate."""
    x = x.detach().clone().requires_grad_(True)
    return _grad(fn(x), x)[:, -1].detach()


def dtt(fn: Fn, x: Tensor) -> Tensor:
    x = x.detach().clone().requires_grad_(True)
    return _grad(_grad(fn(x), x)[:, -1], x)[:, -1].detach()


def gradient(fn: Fn, x: Tensor) -> Tensor:
    """(n, D) gradient."""
    x = x.detach().clone().requires_grad_(True)
    return _grad(fn(x), x).detach()


def apply_term(name: str, fn: Fn, x: Tensor, n_spatial: int) -> Tensor:
    """One named linear term of :data:`pinnbench.maths.problem.TERMS` by autograd."""
    if name == "laplacian":
        return laplacian(fn, x, n_spatial)
    if name == "bilaplacian":
        return bilaplacian(fn, x, n_spatial)
    if name == "dt":
        return dt(fn, x)
    if name == "dtt":
        return dtt(fn, x)
    if name == "weighted_laplacian":
        return weighted_laplacian(fn, x, n_spatial)
    if name == "drift":
        return (gradient(fn, x)[:, :n_spatial] * x[:, :n_spatial]).sum(dim=1)
    if name == "grad_power_mean":
        raise ValueError("grad_power_mean needs its exponent: use apply_operator or "
                         "grad_power_mean(fn, x, n_spatial, c)")
    raise ValueError(f"no autodiff reference for term {name!r}")


def weighted_laplacian(fn: Fn, x: Tensor, n_spatial: int) -> Tensor:
    """sum_{j < n_spatial} x_j^2 d^2 fn / dx_j^2."""
    xg = x.detach().clone().requires_grad_(True)
    g = _grad(fn(xg), xg)
    return sum(x[:, j] ** 2 * _grad(g[:, j], xg)[:, j] for j in range(n_spatial)).detach()


def grad_power_mean(fn: Fn, x: Tensor, n_spatial: int, c: float) -> Tensor:
    """(1/n_spatial) sum_{j < n_spatial} |d fn / dx_j|^c."""
    return gradient(fn, x)[:, :n_spatial].abs().pow(c).mean(dim=1)


def problem_term(problem, name: str, fn: Fn, x: Tensor) -> Tensor:
    """One term of ``problem.operator`` by autograd (the exponent of grad_power_mean from the
    problem)."""
    if name == "grad_power_mean":
        return grad_power_mean(fn, x, problem.dim, problem.gradient_exponent)
    return apply_term(name, fn, x, problem.dim)


def apply_operator(problem, fn: Fn, x: Tensor) -> Tensor:
    """sum coef * term[fn] + pointwise(fn): the problem's declared operator, by autograd."""
    out = problem.pointwise(fn(x)) + torch.zeros(x.shape[0], dtype=x.dtype)
    for term in problem.operator.terms:
        out = out + term.coef * problem_term(problem, term.name, fn, x)
    return out


def directional_derivatives(fn: Fn, x: Tensor, v: Tensor, order: int) -> Tensor:
    """d^k/dtau^k fn(x + tau v_j) at tau = 0 for k = 0..order and every direction v_j (rows of
    v, (V, D)): returns (order + 1, n, V)."""
    out = torch.empty(order + 1, x.shape[0], v.shape[0], dtype=x.dtype)
    for j in range(v.shape[0]):
        tau = torch.zeros(x.shape[0], 1, dtype=x.dtype, requires_grad=True)
        y = fn(x.detach() + tau * v[j])
        out[0, :, j] = y.detach()
        for k in range(1, order + 1):
            g = None
            if y.requires_grad:
                (g,) = torch.autograd.grad(y.sum(), tau, create_graph=True, allow_unused=True)
            if g is None:  # fn is constant along v_j from here on (a polynomial of degree < k)
                out[k:, :, j] = 0.0
                break
            y = g.squeeze(1)
            out[k, :, j] = y.detach()
    return out
