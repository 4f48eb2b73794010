"""zo: naive zeroth-order PINN training, two-point SPSA with MeZO's in-place seed trick.

Each step draws a seed; z ~ N(0, I_P) over all parameters is regenerated from it tensor by tensor
and column chunk by column chunk (:class:`pinnbench.perturbation.GaussianMatrix`), never held
whole (Malladi et al., "Fine-tuning language models with just forward passes", NeurIPS 2023):

    theta += eps z;  L+ = L(theta; omega_1)
    theta -= 2 eps z; L- = L(theta; omega_2)
    theta += eps z                                  (restore; not bit-exact in floating point)
    q = (L+ - L-) / (2 eps);  theta -= lr q z       (averaged over ``q`` directions)

with the spatial operator from a forward-only estimator (STDE jets, or finite differences) under
``torch.no_grad()``. The two evaluations use INDEPENDENT spatial randomness omega_1, omega_2
(different collocation points and probes): this is the naive combination of DOMAIN.md §3, whose
quotient carries [L(theta; omega_1) - L(theta; omega_2)] / (2 eps) = O(1/eps) noise. It is the
baseline that sdze's common random numbers fix. Optimizer state: one seed per direction.
"""

from __future__ import annotations

from pinnbench.perturbation import Direction
from pinnbench.solver import register_solver
from pinnbench.solvers._common import ZerothOrderSolver, zeroth_order_parameters


@register_solver
class ZO(ZerothOrderSolver):
    name = "zo"
    parameters = zeroth_order_parameters(lr=1e-3, q=1, momentum=0.0, crns=False)

    def _pair(self, d: Direction, eps: float, samples: list[tuple]) -> tuple[float, float]:
        params = self.model.params
        (x1, f1, s1), (x2, f2, s2) = samples
        d.add_to_(params, eps)
        plus = self._loss(self.model, x1, f1, s1)
        d.add_to_(params, -2.0 * eps)
        minus = self._loss(self.model, x2, f2, s2)
        d.add_to_(params, eps)
        return plus, minus
