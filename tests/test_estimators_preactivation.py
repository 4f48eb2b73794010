"""hte and sdgd through the first layer's pre-activations (pinnbench.maths.estimators.preactivation):
the same derivatives as reverse mode in x, the same gradients in the weights and in x, and no
(V, n, D) intermediate in the estimate or in its backward pass."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pinnbench.maths.directions import CoordinateDirections, DenseDirections
from pinnbench.maths.estimators import estimate
from pinnbench.maths.estimators.directional import autodiff_directional
from pinnbench.maths.estimators.preactivation import ThroughPreactivations, mlp_after_first_layer
from pinnbench.maths.model import make_model

from test_estimators import ToyBall, ToySpaceTime, g, setup

F64 = torch.float64


def test_the_mlp_after_the_first_layer_is_the_network_to_the_bit():
    p, m, x = setup(ToyBall, dim=6, n=5)
    w0, b0 = m.params[0], m.params[1]
    assert torch.equal(mlp_after_first_layer(torch.addmm(b0, x, w0.T), m.params), m.net(x))
    xg = x.clone().requires_grad_(True)
    assert torch.equal(ThroughPreactivations(m, xg).u.detach(), m(x))


@pytest.mark.parametrize("cls", [ToyBall, ToySpaceTime])
@pytest.mark.parametrize("kind", ["dense", "coordinate"])
def test_derivatives_through_z_equal_reverse_mode_in_x(cls, kind):
    """Orders 1..4 along fixed directions, and the gradients of a loss built on them in the
    weights and in x, equal those of nested reverse mode in x (float64, to rounding)."""
    p, m, x = setup(cls, dim=5, n=4)
    big_d = p.input_dim
    dirs = (DenseDirections(torch.randn(3, big_d, generator=g(0), dtype=F64)) if kind == "dense"
            else CoordinateDirections(torch.tensor([4, 0, big_d - 1]), big_d, F64))

    def run(through_z: bool):
        params = [q.clone().requires_grad_(True) for q in m.params]
        xg = x.clone().requires_grad_(True)
        if through_z:
            derivs = ThroughPreactivations(m, xg, params).directional(dirs, 4, create_graph=True)
        else:
            derivs = autodiff_directional(m(xg, params), xg, dirs, 4, create_graph=True)
        loss = sum((dk**2).sum() / (k + 1) for k, dk in enumerate(derivs))
        return [dk.detach() for dk in derivs], torch.autograd.grad(loss, params + [xg])

    (d_z, g_z), (d_x, g_x) = run(True), run(False)
    for k, (a, b) in enumerate(zip(d_z, d_x), 1):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=f"order {k}")
    for a, b in zip(g_z, g_x):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


class LargestTensor(TorchDispatchMode):
    """The largest number of elements of any tensor an op returns (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("method", ["hte", "sdgd"])
def test_no_probe_by_point_by_dimension_intermediate(method):
    """At D = 3000, n = 6, V = 8, width 8, the estimate of the Laplacian and its backward pass in
    the weights create no tensor of n V D elements (the batched Hessian-vector products in x
    did): the largest is W0's gradient (h D) or the batch (n D)."""
    n, v, dim, width = 6, 8, 3000, 8
    p = ToyBall(dim, dtype=torch.float32)
    m = make_model(p, width=width, depth=2, generator=g(0))
    x = p.sample_interior(n, g(1))
    params = [q.clone().requires_grad_(True) for q in m.params]
    with LargestTensor() as mode:
        lap = estimate("laplacian", m, x, method, generator=g(2), probes=v, params=params)
        (lap**2).mean().backward()
    assert mode.largest >= n * dim  # it sees the batch: the mode did watch the estimate
    assert mode.largest <= max(n, width, v) * dim, mode.largest
