"""Random probes for the spatial estimators, drawn only from an explicit generator.

Probes are shared by every point of a batch (see :mod:`pinnbench.maths.directions`): one (V, D) tensor
or V coordinate indices. Spatial probes have a zero time component; a time-dependent problem's
``dt``/``dtt`` use the fixed direction e_t (the last coordinate), appended as one extra row so a
single pass serves the spatial and the time terms.

Distributions (``dist``):

- ``rademacher``: v_i = ±1, E[v v^T] = I, the minimum-variance Hutchinson probe for the
  Laplacian (Hutchinson 1990; Hu et al., "Hutchinson trace estimation for high-dimensional and
  high-order PINNs", 2024);
- ``gaussian``: v ~ N(0, I); also unbiased for the bilaplacian through Isserlis' theorem,
  E[∂⁴u(v,v,v,v)] = 3 Δ²u (docs/domain.md §2);
- ``coordinate``: V distinct unit vectors e_j, j drawn uniformly without replacement (SDGD,
  Hu et al., "Tackling the curse of dimensionality with PINNs", 2024), scaled by d/V.

Random numbers are drawn on the generator's device and then moved to the points' device, so a
CPU generator gives the same probes whatever device the model is on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pinnbench.maths.directions import CoordinateDirections, DenseDirections, Directions

DISTS = ("rademacher", "gaussian", "coordinate")


def sample_indices(count: int, dim: int, generator: torch.Generator | None) -> Tensor:
    """``min(count, dim)`` distinct indices of range(dim), uniformly without replacement, as a
    sorted int64 tensor on the generator's device.

    Robert Floyd's algorithm (Bentley, "Programming Pearls: A sample of brilliance", CACM 1987):
    O(count) work and memory whatever ``dim`` (a randperm would be O(dim): 80 MB at d = 10^7),
    one generator draw of ``count`` uniforms u_k. For k = 0..m-1 (m = count) with j_k = d - m + k
    and t_k = min(floor(u_k (j_k + 1)), j_k), uniform on 0..j_k, Floyd adds t_k to the chosen set
    unless it is in it already, and then adds j_k. Computed here on the device without reading
    the uniforms back (no host sync; the same indices as the sequential loop, to the bit):

    - every t_i (i < k) is in the set before step k (it was added, or it was there), so the set
      is {t_i : i < k} ∪ {j_i : i < k, step i collided};
    - step k collides iff t_k equals an earlier t_i, or t_k = j_i for i = t_k - (d - m) < k
      whose step i collided: an OR along the chain of pointers k -> t_k - (d - m), each to an
      earlier step (a step with no such i points to itself, a fixed point of the OR), which
      pointer jumping (Wyllie 1979) resolves in ceil(log2 m) rounds of gathers of m numbers.

    With ``count >= dim`` it returns every index and consumes no randomness (no generator needed).
    """
    device = generator.device if generator is not None else torch.device("cpu")
    if count >= dim:
        return torch.arange(dim, device=device)
    u = torch.rand(count, generator=generator, dtype=torch.float64, device=device)
    return floyd_indices(u, dim)


def floyd_indices(u: Tensor, dim: int) -> Tensor:
    """The sorted indices Floyd's algorithm picks from range(dim) with the uniforms ``u`` (m,),
    float64, m < dim (:func:`sample_indices`), computed on u's device without a host read."""
    m, device = u.shape[0], u.device
    k = torch.arange(m, device=device)
    top = k + (dim - m)  # j_k
    t = torch.minimum((u * (top + 1)).floor_().long(), top)
    earlier = torch.ones(m, m, dtype=torch.bool, device=device).tril_(-1)  # [k, i]: i < k
    collided = ((t.unsqueeze(1) == t.unsqueeze(0)) & earlier).any(dim=1)
    ptr = t - (dim - m)  # <= k, as t_k <= j_k: step k collides if step ptr_k did (ptr_k < k)
    ptr = torch.where(ptr >= 0, ptr, k)  # ptr_k = k: no earlier step to follow
    for _ in range(max(0, (m - 1).bit_length())):
        collided = collided | collided[ptr]
        ptr = ptr[ptr]
    return torch.where(collided, top, t).sort().values


def dense_probes(dist: str, count: int, dim: int, input_dim: int, generator: torch.Generator,
                 dtype: torch.dtype, device: torch.device, time_row: bool = False) -> DenseDirections:
    """(V [+1], D) probes: V random rows on the first ``dim`` coordinates (zero elsewhere), plus
    the unit row e_{D-1} when ``time_row``."""
    rows = count + int(time_row)
    if dist not in ("rademacher", "gaussian"):
        raise ValueError(f"dense probes are rademacher or gaussian, got {dist!r}")
    full = rows == count and input_dim == dim  # every entry drawn: nothing to zero first
    v = (torch.empty if full else torch.zeros)(rows, input_dim, dtype=dtype,
                                               device=generator.device)
    spatial = v[:count, :dim]
    sqnorm = None
    if dist == "rademacher":
        # uniform bits as int8, then +-1 (in int8, exact), then one conversion into v: about 3x
        # faster than bernoulli_ on the CPU (16 x 1e6 probes: 0.10 s against 0.29 s), and two
        # passes over the (V, D) floats fewer than +-1 made in them
        bits = torch.randint(0, 2, spatial.shape, generator=generator, dtype=torch.int8,
                             device=spatial.device)
        spatial.copy_(bits.mul_(2).sub_(1))
        if dim <= _EXACT_COUNT.get(dtype, 0):
            # ||v_k||^2 = dim (a sum of dim ones, exact in this dtype), 1 for the time row
            sqnorm = torch.full((rows,), float(dim), dtype=dtype, device=device)
            if time_row:
                sqnorm[count] = 1.0
    else:
        spatial.normal_(generator=generator)
    if time_row:
        v[count, input_dim - 1] = 1.0
    return DenseDirections(v.to(device), sqnorm)


#: the largest count of ones whose sum is exact in each dtype, in any order of summation
_EXACT_COUNT = {torch.float32: 2**24, torch.float64: 2**53}


def coordinate_probes(count: int, dim: int, input_dim: int, generator: torch.Generator | None,
                      dtype: torch.dtype, device: torch.device,
                      time_row: bool = False) -> CoordinateDirections:
    """``min(count, dim)`` sampled spatial unit vectors (all of them when count >= dim, with no
    generator needed), plus e_{D-1} when ``time_row``."""
    idx = sample_indices(count, dim, generator)
    if time_row:
        idx = torch.cat([idx, torch.full((1,), input_dim - 1, device=idx.device)])
    return CoordinateDirections(idx.to(device), input_dim, dtype)


def time_direction(input_dim: int, dtype: torch.dtype, device: torch.device) -> CoordinateDirections:
    """e_t, the last coordinate, as a single coordinate direction."""
    return CoordinateDirections(torch.tensor([input_dim - 1], device=device), input_dim, dtype)


def row_dot(g: Tensor, dirs: Directions, j: int) -> Tensor:
    """(n, D) -> (n,): g . v_j for one direction (a gather for coordinate directions)."""
    if isinstance(dirs, CoordinateDirections):
        return g[:, dirs.index[j]]
    if isinstance(dirs, DenseDirections):
        return g @ dirs.v[j]
    raise TypeError(f"unsupported directions {type(dirs).__name__}")


def row_shift(x: Tensor, dirs: Directions, j: int, step: float) -> Tensor:
    """x + step * v_j, a new (n, D) tensor (one column updated for coordinate directions)."""
    if isinstance(dirs, CoordinateDirections):
        y = x.clone()
        y[:, dirs.index[j]] += step
        return y
    if isinstance(dirs, DenseDirections):
        return torch.add(x, dirs.v[j], alpha=step)
    raise TypeError(f"unsupported directions {type(dirs).__name__}")
