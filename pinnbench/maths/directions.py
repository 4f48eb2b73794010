"""Directions along which jets are taken, shared by every point of a batch.

Randomized estimators contract derivatives of u along V directions v_1..v_V in R^D. The same
directions serve all n points of a batch (the estimate is unbiased at every point either way, and
a per-point probe tensor would be n*V*D numbers: 64 GB at n = 100, V = 16, D = 10^7).

Two representations, one interface:

- :class:`DenseDirections`: a (V, D) tensor (Rademacher or Gaussian probes);
- :class:`CoordinateDirections`: unit vectors e_j for V sampled indices (SDGD), where every
  operation below is a gather instead of an O(D) product.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Directions:
    count: int  # V
    dim: int  # D

    def dot(self, x: Tensor) -> Tensor:
        """(n, D) -> (n, V): x . v_k."""
        raise NotImplementedError

    def sqnorm(self) -> Tensor:
        """(V,): ||v_k||^2."""
        raise NotImplementedError

    def apply_weight(self, weight: Tensor) -> Tensor:
        """weight (h, D) -> (V, h): W v_k, the first layer's response to each direction."""
        raise NotImplementedError

    def power_sum(self, y: Tensor, k: int) -> Tensor:
        """(n, D) -> (n, V): sum_i y_i v_{k,i}^k, the k-th jet coefficient of sum_i f(x_i) when
        ``y = f^(k)(x) / k!``."""
        raise NotImplementedError

    def component(self, i: int) -> Tensor:
        """(V,): the i-th coordinate of every direction."""
        raise NotImplementedError


class DenseDirections(Directions):
    """``sqnorm``: ||v_k||^2 when the maker knows it exactly (Rademacher rows: the count of their
    +-1 entries), so that it is not computed by a pass over the (V, D) probes."""

    def __init__(self, v: Tensor, sqnorm: Tensor | None = None) -> None:
        if v.ndim != 2:
            raise ValueError(f"directions must be (V, D), got shape {tuple(v.shape)}")
        if sqnorm is not None and tuple(sqnorm.shape) != (v.shape[0],):
            raise ValueError(f"sqnorm must be ({v.shape[0]},), got {tuple(sqnorm.shape)}")
        self.v = v
        self.count, self.dim = v.shape
        self._sqnorm = sqnorm

    def dot(self, x: Tensor) -> Tensor:
        return x @ self.v.T

    def sqnorm(self) -> Tensor:
        if self._sqnorm is not None:
            return self._sqnorm
        return (self.v * self.v).sum(dim=1)

    def apply_weight(self, weight: Tensor) -> Tensor:
        return self.v @ weight.T

    def power_sum(self, y: Tensor, k: int) -> Tensor:
        return y @ (self.v**k).T

    def component(self, i: int) -> Tensor:
        return self.v[:, i]


class CoordinateDirections(Directions):
    def __init__(self, index: Tensor, dim: int, dtype: torch.dtype = torch.float32) -> None:
        if index.ndim != 1:
            raise ValueError(f"coordinate indices must be 1-D, got shape {tuple(index.shape)}")
        self.index = index
        self.count = index.shape[0]
        self.dim = dim
        self.dtype = dtype

    def dot(self, x: Tensor) -> Tensor:
        return x[:, self.index]

    def sqnorm(self) -> Tensor:
        return torch.ones(self.count, dtype=self.dtype, device=self.index.device)

    def apply_weight(self, weight: Tensor) -> Tensor:
        return weight[:, self.index].T

    def power_sum(self, y: Tensor, k: int) -> Tensor:
        return y[:, self.index]

    def component(self, i: int) -> Tensor:
        i = i % self.dim
        return (self.index == i).to(self.dtype)
