"""Directional derivatives of u along a set of directions, three ways.

Every randomized estimator here is a linear combination of k-th directional derivatives

    D_v^k u(x) = d^k/dt^k u(x + t v) |_{t=0}   (k = 1, 2, 4),

so the estimators differ only in the probes (:mod:`.probes`) and in how D_v^k u is computed:

- :func:`jet_directional` (STDE): forward-mode Taylor jets, ``model.jet`` (Shi et al., "Stochastic
  Taylor Derivative Estimator", NeurIPS 2024). One forward pass for all V directions and all
  orders up to K; no autograd graph is needed (works under ``torch.no_grad()``).
- :func:`autodiff_directional` (HTE, SDGD, exact): reverse-mode nesting,
  D_v^{k+1} u = ∇(D_v^k u) · v. The first gradient is shared by all directions, each further order
  costs one backward pass per direction.
- :func:`fd_directional` (FD): central finite-difference stencils (Fornberg, "Generation of
  finite difference formulas on arbitrarily spaced grids", Math. Comp. 1988):

      D_v u   ≈ (u(x+hv) − u(x−hv)) / (2h)
      D_v^2 u ≈ (u(x+hv) − 2u(x) + u(x−hv)) / h²
      D_v^4 u ≈ (u(x+2hv) − 4u(x+hv) + 6u(x) − 4u(x−hv) + u(x−2hv)) / h⁴

  each with truncation error O(h²) and round-off O(ε/h^k); the default step balances the two,
  h_k = ε^{1/(k+2)} with ε the dtype's machine epsilon (:func:`default_fd_step`).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor

from pinnbench.maths.directions import CoordinateDirections, DenseDirections, Directions
from pinnbench.maths.estimators.probes import row_dot, row_shift
from pinnbench.maths.jets import derivative

#: finite-difference stencils: order -> ((offset in units of h, weight), ...), divided by h^order
FD_STENCILS: dict[int, tuple[tuple[int, float], ...]] = {
    1: ((1, 0.5), (-1, -0.5)),
    2: ((1, 1.0), (0, -2.0), (-1, 1.0)),
    4: ((2, 1.0), (1, -4.0), (0, 6.0), (-1, -4.0), (-2, 1.0)),
}


def default_fd_step(dtype: torch.dtype, order: int) -> float:
    """h_k = ε^{1/(k+2)}: the step that balances truncation O(h²) against round-off O(ε/h^k).

    float64: h_1 = 6.1e-6, h_2 = 1.2e-4, h_4 = 2.5e-3; float32: h_1 = 4.9e-3, h_2 = 2.0e-2,
    h_4 = 7.1e-2. The step is in the line parameter t of u(x + t v), v unnormalised."""
    return float(torch.finfo(dtype).eps) ** (1.0 / (order + 2))


def as_matrix(c, n: int, v: int, like: Tensor) -> Tensor:
    """A jet coefficient (a tensor broadcastable to (n, V), or the float 0.0) as an (n, V) tensor
    ((B, n, V) for the jet of a batch of B parameter sets, :mod:`pinnbench.maths.model`)."""
    if not isinstance(c, Tensor):
        return torch.full((n, v), float(c), dtype=like.dtype, device=like.device)
    shape = torch.broadcast_shapes(c.shape, (n, v))
    return c.expand(shape) if c.shape != shape else c


def jet_directional(model, x: Tensor, dirs: Directions, order: int, params=None,
                    orders: Iterable[int] | None = None,
                    value: bool = True) -> tuple[Tensor | None, dict[int, Tensor]]:
    """(u (n,), {k: D_v^k u (n, V)} for k in ``orders``, default 1..``order``) from one
    Taylor-jet pass of ``model`` (u (B, n) and (B, n, V) for a model whose parameters carry a
    batch of B sets). Only the coefficients of u asked for are formed
    (:meth:`pinnbench.maths.model.PINN.jet_coefficients`): ``value=False`` returns u as None
    and forms no u_0; an order not in ``orders`` forms nothing."""
    orders = sorted(set(range(1, order + 1) if orders is None else orders))
    c = model.jet_coefficients(x, dirs, [0] * value + orders, params)
    n, v = x.shape[0], dirs.count
    u = None
    if value:
        u = c[0][..., 0] if c[0].ndim >= 2 else c[0].expand(n)
    return u, {k: as_matrix(derivative(c[k], k), n, v, x) for k in orders}


def grad_of(f: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    """∇_x sum(f): row i is ∇ f_i(x_i) since f_i depends on point i only; zeros where f does
    not depend on x."""
    if not f.requires_grad:
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(f.sum(), x, create_graph=create_graph, retain_graph=True,
                               allow_unused=True, materialize_grads=True)
    return g


#: the batched second derivatives hold (directions, n, D) numbers at a time: at most this many
BATCHED_ELEMENTS = 2**24


def autodiff_directional(f: Tensor, x: Tensor, dirs: Directions, order: int,
                         create_graph: bool) -> list[Tensor]:
    """[D_v^1 f, ..., D_v^order f], each (n, V), by nested reverse mode; ``f`` (n,) must have been
    computed from ``x`` (which requires grad). ``create_graph`` keeps the graph of the last
    order (needed to backpropagate through the estimate).

    Order 2 (every HTE / SDGD / exact Laplacian) takes the V Hessian-vector products in batched
    backward passes (``torch.autograd.grad(..., is_grads_batched=True)``, i.e. vmap over the
    backward), in groups of at most ``BATCHED_ELEMENTS`` numbers, instead of a Python loop of V
    backward passes; order 4 loops."""
    g = grad_of(f, x, create_graph=create_graph or order > 1)
    out = [dirs.dot(g)]
    if order == 1:
        return out
    if order == 2:
        return out + [_batched_second(out[0], x, dirs, create_graph)]
    cols: list[list[Tensor]] = [[] for _ in range(order - 1)]
    for j in range(dirs.count):
        fj = out[0][:, j]
        for k in range(2, order + 1):
            fj = row_dot(grad_of(fj, x, create_graph=create_graph or k < order), dirs, j)
            cols[k - 2].append(fj)
    return out + [torch.stack(c, dim=1) for c in cols]


def _batched_second(first: Tensor, x: Tensor, dirs: Directions, create_graph: bool) -> Tensor:
    """v_j^T H v_j for every direction j, (n, V): ``first`` (n, V) holds the directional
    derivatives D_{v_j} f = grad f . v_j; the gradient of its column j is H v_j, taken for a
    group of columns at once by a batched backward pass, then contracted with v_j."""
    if not first.requires_grad:
        return torch.zeros_like(first)
    n, v_count = first.shape
    group = max(1, BATCHED_ELEMENTS // max(1, n * x.shape[1]))
    cols = []
    for a in range(0, v_count, group):
        b = min(a + group, v_count)
        pick = torch.zeros(b - a, 1, v_count, dtype=first.dtype, device=first.device)
        # pick[j, 0, a + j] = 1 through a view and a fill (the number is a kernel argument):
        # `pick[rows, 0, rows + a] = 1.0` is an index_put_ whose value Python makes as a host
        # tensor and copies in, which a CUDA graph's capture refuses (an H200 did, 2026-12-04)
        torch.diagonal(pick[:, 0, a:b]).fill_(1.0)
        (hv,) = torch.autograd.grad(first, x, grad_outputs=pick.expand(b - a, n, v_count),
                                    retain_graph=True, create_graph=create_graph,
                                    is_grads_batched=True, allow_unused=True,
                                    materialize_grads=True)
        cols.append(_contract(hv, dirs, a, b).T)
    return torch.cat(cols, dim=1)


def _contract(hv: Tensor, dirs: Directions, a: int, b: int) -> Tensor:
    """(k, n, D) rows H v_j for j = a..b-1 -> (k, n): v_j . (H v_j)."""
    if isinstance(dirs, CoordinateDirections):
        index = dirs.index[a:b]  # both index tensors on one device (the directions')
        return hv[torch.arange(b - a, device=index.device), :, index]
    if isinstance(dirs, DenseDirections):
        return torch.einsum("knd,kd->kn", hv, dirs.v[a:b].to(hv.dtype))
    raise TypeError(f"unsupported directions {type(dirs).__name__}")


def fd_directional(fn: Callable[[Tensor], Tensor], x: Tensor, dirs: Directions,
                   orders: set[int] | tuple[int, ...], steps: dict[int, float],
                   u0: Tensor | None = None) -> tuple[Tensor, dict[int, Tensor]]:
    """(u (n,), {k: D_v^k u (n, V)}) for k in ``orders`` (subset of {1, 2, 4}) from central
    stencils with step ``steps[k]``; evaluations at equal shifts are shared. ``fn`` maps (n, D)
    points to (n,) values; ``u0`` is fn(x) when already known. Cost: 2V (orders 1, 2) or 4V
    (order 4) extra evaluations of ``fn``, one (n, D) shifted copy of x alive at a time."""
    bad = sorted(set(orders) - set(FD_STENCILS))
    if bad:
        raise ValueError(f"finite differences support derivative orders {sorted(FD_STENCILS)}, "
                         f"not {bad}")
    u = fn(x) if u0 is None else u0
    out: dict[int, list[Tensor]] = {k: [] for k in orders}
    for j in range(dirs.count):
        cache: dict[float, Tensor] = {0.0: u}
        for k in sorted(orders):
            h = steps[k]
            acc = 0.0
            for offset, weight in FD_STENCILS[k]:
                shift = offset * h
                if shift not in cache:
                    cache[shift] = fn(row_shift(x, dirs, j, shift))
                acc = acc + weight * cache[shift]
            out[k].append(acc / h**k)
    return u, {k: torch.stack(v, dim=1) for k, v in out.items()}
