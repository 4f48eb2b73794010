"""Reverse-mode directional derivatives of the PINN taken through its first layer's
pre-activations (the HTE and SDGD estimators' derivatives).

The PINN is u(x) = A(x) N(x) + B(x) with the MLP N(x) = M(z), z = W₀x + b₀ (pinnbench.maths.model).
Along a direction v the pre-activation moves on a line, z(x + t v) = z + t p with p = W₀v, so

    D_v^k N(x) = D_p^k M(z)       (k = 1, 2, 4: ∇_z M · p, pᵀ ∇²_z M p, ...)

and the Hessian-vector products of Hutchinson's and SDGD's estimators can be taken in the
width-h space of z instead of in R^D: reverse mode over M from z, contracted with the V
pre-activation directions p_k = W₀v_k ((V, h): one first-layer product for dense probes, a
gather of V columns of W₀ for coordinates). The largest intermediate is (V, n, h), not the
(V, n, D) of a batched Hessian-vector product in x, which at D = 10⁵ was 20x the time of the
jets of STDE that do the same contraction (docs/roofline.md, "HTE and SDGD through the
pre-activations").

The hard-constraint factors enter by Leibniz' rule on Taylor coefficients,
u_k = Σ_{i≤k} A_i N_{k−i} + B_k with c_k = D^k c / k!, A and B from the problem's closed-form
jets (``problem.ansatz_jet``, the ones STDE uses); the network's coefficients come from the
reverse-mode derivatives above. The estimate is the same number as the Hessian-vector product
in x (to rounding: tests/test_estimators.py, tests/test_estimator_constants.py); it stays
differentiable in the parameters (through z and p) and in x (through z and the jets of A, B),
which is what bp's backward pass and its gPINN term need.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from pinnbench.maths.directions import DenseDirections, Directions
from pinnbench.maths.estimators.directional import as_matrix, autodiff_directional
from pinnbench.maths.jets import Jet


class ThroughPreactivations:
    """u at the points ``x`` evaluated through z = W₀x + b₀, and its directional derivatives
    along any :class:`Directions` by reverse mode in z. ``x`` needs to require grad only when
    the caller differentiates in x: the derivatives are taken in z, so a backward pass need not
    form the (n, D) gradient in x.

    ``u`` is computed with the operations of ``model.forward`` (the same number)."""

    @staticmethod
    def supports(model) -> bool:
        """Whether ``model`` is the tanh MLP of :mod:`pinnbench.maths.model` (any other callable u(x)
        is differentiated in x)."""
        return getattr(model, "activation", None) == "tanh"

    def __init__(self, model, x: Tensor, params: Sequence[Tensor] | None = None) -> None:
        if not self.supports(model):
            raise ValueError(f"derivatives through the pre-activations need the tanh MLP of "
                             f"pinnbench.maths.model, got activation {getattr(model, 'activation', None)!r}")
        p = list(model.params if params is None else params)
        self.problem, self.x, self.params = model.problem, x, p
        self.first_layer = model.first_layer
        z = model.first_layer.points(x, p[0], p[1])  # (n, h): W0 x + b0 through the model's hook
        # neither x nor the weights require grad (a zeroth-order solver's estimate): z is the
        # leaf the derivatives are taken in
        self.z = z if z.requires_grad else z.requires_grad_(True)
        self.net = mlp_after_first_layer(self.z, p)  # (n,)
        a, b = self.problem.ansatz(x)
        self.u = a * self.net + b

    def directional(self, dirs: Directions, order: int, create_graph: bool) -> list[Tensor]:
        """[D_v^1 u, ..., D_v^order u], each (n, V): the network's derivatives along
        p_k = W₀v_k by nested reverse mode in z (:func:`autodiff_directional`), the factors A, B
        by their jets (module docstring)."""
        n, v = self.x.shape[0], dirs.count
        # (V, h): W0 v_k through the model's hook, as z (a sharded layer sums it over the ranks)
        p = DenseDirections(self.first_layer.directions(dirs, self.params[0]))
        nets = autodiff_directional(self.net, self.z, p, order, create_graph)
        coeffs = [self.net.unsqueeze(1)] + [dk / math.factorial(k) for k, dk in enumerate(nets, 1)]
        a, b = self.problem.ansatz_jet(self.x, dirs, order)
        jet = a * Jet(coeffs, order) + b
        return [as_matrix(jet.derivative(k), n, v, self.x) for k in range(1, order + 1)]


def mlp_after_first_layer(z: Tensor, params: Sequence[Tensor]) -> Tensor:
    """M(z): the tanh MLP of :meth:`pinnbench.maths.model.PINN.net` from its first pre-activation on,
    (n, h) -> (n,), with the same operations (so M(W₀x + b₀) is ``net(x)`` to the bit)."""
    h = z
    for layer in range(1, len(params) // 2):
        h = torch.addmm(params[2 * layer + 1], torch.tanh(h), params[2 * layer].T)
    return h.squeeze(-1)
