"""pinnbench.maths.tanh_jet: the order-2 jet of the tanh MLP's hidden layers with a hand-written
backward pass, against autograd through the unfused jets (float64 gradcheck) and bit for bit
in the forward."""

import pytest
import torch

from pinnbench.maths.jets import Jet
from pinnbench.maths.model import _linear_jet
from pinnbench.maths.tanh_jet import hidden_jet2, network_jet2


def unfused(z0, z1, params):
    """PINN._hidden_jet's arithmetic, recorded by autograd op by op."""
    z = Jet([z0, z1], 2)
    for layer in range(len(params) // 2):
        z = _linear_jet(z.tanh(), params[2 * layer])
        z.coeffs[0] = z.coeffs[0] + params[2 * layer + 1]
    return [c.squeeze(-1) for c in z.coeffs]


def unfused_network(x, v, params):
    """PINN.net_jet's arithmetic with the first layer outside the node, op by op."""
    z0 = torch.addmm(params[1], x, params[0].T).unsqueeze(-2)
    z1 = (v @ params[0].T).unsqueeze(-3)
    return unfused(z0, z1, params[2:])


def network_inputs(gen, dtype, n=3, v=2, d=5, h=4, layers=3):
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    dirs = torch.randn(v, d, generator=gen, dtype=dtype)
    w0 = (torch.randn(h, d, generator=gen, dtype=dtype) / d ** 0.5).requires_grad_()
    b0 = torch.randn(h, generator=gen, dtype=dtype).requires_grad_()
    return x, dirs, [w0, b0, *inputs(gen, dtype, n=n, v=v, h=h, layers=layers)[2:]]


def inputs(gen, dtype, n=3, v=2, h=4, layers=3):
    z0 = torch.randn(n, 1, h, generator=gen, dtype=dtype)
    z1 = torch.randn(1, v, h, generator=gen, dtype=dtype)
    params = []
    for layer in range(layers):
        out = 1 if layer == layers - 1 else h
        params += [torch.randn(out, h, generator=gen, dtype=dtype) / h ** 0.5,
                   torch.randn(out, generator=gen, dtype=dtype)]
    return [t.requires_grad_() for t in (z0, z1, *params)]


@pytest.mark.parametrize("layers,v", [(3, 2), (1, 2), (4, 1)])
def test_the_backward_pass_is_autograds(gen, layers, v):
    args = inputs(gen, torch.float64, v=v, layers=layers)
    assert torch.autograd.gradcheck(lambda *a: tuple(hidden_jet2(a[0], a[1], a[2:]).coeffs),
                                    args)
    weights = [torch.randn(3, k, generator=gen, dtype=torch.float64) for k in (1, v, v)]
    fused = hidden_jet2(args[0], args[1], args[2:]).coeffs
    ref = unfused(args[0], args[1], args[2:])
    loss = sum((w * c).sum() for w, c in zip(weights, fused))
    loss_ref = sum((w * c).sum() for w, c in zip(weights, ref))
    for a, b in zip(torch.autograd.grad(loss, args), torch.autograd.grad(loss_ref, args)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layers,v", [(3, 2), (1, 3)])
def test_the_network_nodes_backward_pass_is_autograds(gen, layers, v):
    """The first layer inside the node: W0's gradient (sum_n gz_1)^T v + gz_0^T x written as
    one matrix and b0's sum_n gz_0, against autograd through the unfused layers."""
    x, dirs, params = network_inputs(gen, torch.float64, v=v, layers=layers)
    assert torch.autograd.gradcheck(
        lambda *p: tuple(network_jet2(x, dirs, p).coeffs), tuple(params))
    weights = [torch.randn(3, k, generator=gen, dtype=torch.float64) for k in (1, v, v)]
    loss = sum((w * c).sum() for w, c in zip(weights, network_jet2(x, dirs, params).coeffs))
    ref = sum((w * c).sum() for w, c in zip(weights, unfused_network(x, dirs, params)))
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_network_nodes_numbers_are_the_unfused_ones_bit_for_bit(gen):
    """Forward values and W0's gradient, float32 at a step's shapes, against the node of the
    hidden layers with the first layer outside it (bp's step before): the gradient accumulated
    by addmm_ is the sum of the two products autograd made, to the bit (MKL; checked at
    d = 1e2 .. 1e6 when it landed)."""
    x, dirs, params = network_inputs(gen, torch.float32, n=20, v=16, d=300, h=64)
    out = network_jet2(x, dirs, params).coeffs
    z0 = torch.addmm(params[1], x, params[0].T).unsqueeze(-2)
    ref = hidden_jet2(z0, (dirs @ params[0].T).unsqueeze(-3), params[2:]).coeffs
    for a, b in zip(out, ref):
        assert torch.equal(a, b)
    g = torch.autograd.grad(sum(c.sum() for c in out), params[:2])
    g_ref = torch.autograd.grad(sum(c.sum() for c in ref), params[:2])
    for a, b in zip(g, g_ref):
        assert torch.equal(a, b)


def test_the_network_node_refuses_to_differentiate_x(gen):
    x, dirs, params = network_inputs(gen, torch.float64)
    out = network_jet2(x.requires_grad_(), dirs, params).coeffs
    with pytest.raises(RuntimeError, match="parameters only"):
        torch.autograd.grad(out[0].sum(), x)


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_an_unused_coefficient_has_no_cotangent(gen, missing):
    args = inputs(gen, torch.float64)
    used = [k for k in range(3) if k != missing]
    fused = hidden_jet2(args[0], args[1], args[2:]).coeffs
    ref = unfused(args[0], args[1], args[2:])
    kw = dict(allow_unused=True, materialize_grads=True)  # the output bias: in the value only
    g = torch.autograd.grad(sum(fused[k].sum() for k in used), args, **kw)
    g_ref = torch.autograd.grad(sum(ref[k].sum() for k in used), args, **kw)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_forward_numbers_are_the_unfused_ones(gen):
    args = inputs(gen, torch.float32, n=20, v=16, h=64)
    for a, b in zip(hidden_jet2(args[0], args[1], args[2:]).coeffs,
                    unfused(args[0], args[1], args[2:])):
        assert torch.equal(a, b)


@pytest.fixture
def node_calls(gen, monkeypatch):
    """(calls, model, x, dense directions): ``calls`` lists which fused node each jet took."""
    import pinnbench
    from pinnbench.maths import model as model_module
    from pinnbench.maths.estimators.probes import dense_probes

    calls = []
    for name in ("hidden_jet2", "network_jet2"):
        monkeypatch.setattr(model_module, name, lambda *a, f=getattr(model_module, name), n=name:
                            calls.append(n) or f(*a))
    problem = pinnbench.make_problem("poisson-2body-v1", dim=20, seed=0)
    model = pinnbench.make_model(problem, width=8, depth=3, generator=gen)
    dirs = dense_probes("rademacher", 3, 20, 20, gen, torch.float32, torch.device("cpu"))
    return calls, model, problem.sample_interior(5, gen), dirs


def test_bp_takes_it_and_a_differentiated_x_does_not(node_calls):
    """bp's step takes the fused hidden layers; where x itself is differentiated (gPINN, drift
    terms: a second backward pass through the jet, which the fused node does not have) the
    jets stay op by op."""
    calls, model, x, dirs = node_calls
    model.jet(x, dirs, 2)
    assert calls == ["network_jet2"]
    model.jet(x.requires_grad_(), dirs, 2)
    assert calls == ["network_jet2"]


def test_other_first_layers_and_directions_keep_the_node_of_the_hidden_layers(node_calls):
    """The first layer joins the node only where it is the plain dense product with dense
    directions: coordinate directions (sparse STDE, SDGD) and a first layer of another kind
    (sharded columns, a zeroth-order solver's shifted layer) keep their own products."""
    from pinnbench.maths.directions import CoordinateDirections
    from pinnbench.maths.model import FirstLayer

    calls, model, x, dirs = node_calls
    model.jet(x, CoordinateDirections(torch.tensor([0, 3, 7]), 20), 2)
    assert calls == ["hidden_jet2"]

    class Shifted(FirstLayer):
        pass

    model.first_layer = Shifted()
    model.jet(x, dirs, 2)
    assert calls == ["hidden_jet2", "hidden_jet2"]


def test_no_cotangent_is_made_for_an_input_that_needs_none(gen):
    """The node's backward returns None (not a tensor of zeros, nor a discarded one) for the
    inputs that do not require a gradient (``ctx.needs_input_grad``)."""
    args = inputs(gen, torch.float64)
    frozen = {0, 3, 5}  # z0, b1 and b2
    args = [a.detach() if k in frozen else a for k, a in enumerate(args)]
    out = hidden_jet2(args[0], args[1], args[2:]).coeffs
    grads = out[0].grad_fn.apply(*(torch.ones_like(c) for c in out))
    assert [k for k, g in enumerate(grads) if g is None] == sorted(frozen)
    ref = torch.autograd.grad(sum(c.sum() for c in unfused(args[0], args[1], args[2:])),
                              [a for k, a in enumerate(args) if k not in frozen])
    for a, b in zip([g for g in grads if g is not None], ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)

