"""The PINN of pinnbench.maths.model: shapes, dtypes, parameters, and its Taylor jets against autodiff."""

import math

import pytest
import torch

from pinnbench.maths.directions import CoordinateDirections, DenseDirections
from pinnbench.maths.jets import Jet
from pinnbench.maths.model import PINN, make_model
from pinnbench.maths.problem import LinearTerm, Operator, Problem, radius_uniform_ball, sqnorm_jet


class ToyBall(Problem):
    """u = A N + B with A = 1 - ||x||^2 and B = sin(x_0) (a non-zero B exercises its jet)."""

    family = "toy-ball"
    operator = Operator((LinearTerm("laplacian"),))

    def ansatz(self, x):
        return 1.0 - (x * x).sum(dim=1), torch.sin(x[:, 0])

    def ansatz_jet(self, x, dirs, order):
        b = Jet.line(x[:, :1], dirs.component(0).unsqueeze(0), order).sin()
        return 1.0 - sqnorm_jet(x, dirs, order), b

    def sample_interior(self, n, generator):
        return radius_uniform_ball(n, self.dim, generator, dtype=self.dtype, device=self.device)


def toy(dim=5, dtype=torch.float64, seed=0):
    return ToyBall(dim, seed=seed, dtype=dtype)


def points(problem, n=4, seed=7):
    return problem.sample_interior(n, torch.Generator().manual_seed(seed))


def test_shapes_dtypes_and_counts():
    for dtype in (torch.float32, torch.float64):
        p = toy(dim=5, dtype=dtype)
        m = make_model(p, width=8, depth=3)
        assert [tuple(w.shape) for w in m.params] == [(8, 5), (8,), (8, 8), (8,), (8, 8), (8,),
                                                       (1, 8), (1,)]
        assert m.n_params == 5 * 8 + 8 + 2 * (8 * 8 + 8) + 8 + 1 == 201
        assert m.param_bytes == 201 * (4 if dtype == torch.float32 else 8)
        assert m.n_layers == 4 and m.input_dim == 5 and m.dtype == dtype
        u = m(points(p))
        assert u.shape == (4,) and u.dtype == dtype and torch.isfinite(u).all()


def test_params_are_plain_tensors_and_biases_start_at_zero():
    m = make_model(toy(), width=8, depth=2)
    for w in m.params:
        assert type(w) is torch.Tensor and not w.requires_grad and w.is_leaf
    assert all((b == 0).all() for b in m.params[1::2])
    # LeCun normal: the first layer's weights have variance 1/fan_in
    big = make_model(toy(dim=400), width=300, depth=1)
    assert abs(big.params[0].var().item() * 400 - 1.0) < 0.05


def test_u_is_ansatz_times_net_plus_boundary_term_and_params_override():
    p = toy()
    m = make_model(p, width=8, depth=2)
    x = points(p)
    a, b = p.ansatz(x)
    torch.testing.assert_close(m(x), a * m.net(x) + b, rtol=0, atol=0)
    other = [w + 0.1 for w in m.params]
    torch.testing.assert_close(m(x, params=other), PINN(p, other)(x), rtol=0, atol=0)
    assert not torch.allclose(m(x, params=other), m(x))


def directional_reference(model, x, v, order):
    """[D_v^k u(x_i)] for k = 1..order by nested reverse mode in a per-point line parameter t:
    u_i(t_i) = u(x_i + t_i v); the gradient of the sum is the vector of per-point derivatives."""
    t = torch.zeros(x.shape[0], dtype=x.dtype, requires_grad=True)
    y = model(x + t.unsqueeze(1) * v)
    out = []
    for _ in range(order):
        (y,) = torch.autograd.grad(y.sum(), t, create_graph=True)
        out.append(y.detach())
    return out


@pytest.mark.parametrize("kind", ["dense", "coordinate"])
def test_jet_matches_autodiff_directional_derivatives(kind, gen):
    p = toy(dim=6)
    m = make_model(p, width=12, depth=3, generator=torch.Generator().manual_seed(3))
    x = points(p, n=5)
    if kind == "dense":
        v = torch.randn(3, 6, generator=gen, dtype=torch.float64)
        dirs = DenseDirections(v)
    else:
        idx = torch.tensor([4, 0, 2])
        dirs = CoordinateDirections(idx, 6, torch.float64)
        v = torch.eye(6, dtype=torch.float64)[idx]
    jet = m.jet(x, dirs, order=4)
    torch.testing.assert_close(jet[0].expand(5, 3), m(x).unsqueeze(1).expand(5, 3), rtol=0,
                               atol=1e-14)
    for j in range(3):
        ref = directional_reference(m, x, v[j], 4)
        for k in range(1, 5):
            got = jet.derivative(k)[:, j]
            torch.testing.assert_close(got, ref[k - 1], rtol=1e-10, atol=1e-10,
                                       msg=f"{kind} direction {j}, order {k}")


@pytest.mark.parametrize("pid", ["poisson-2body-v1", "biharmonic-clamped-2body-scaled-v1",
                                 "heat-v1", "hjb-lin-v1"])
@pytest.mark.parametrize("grad", [False, True])
def test_jet_coefficients_are_the_jets_own_bit_for_bit(pid, grad, gen):
    """u's coefficients asked alone (the others not formed) are the full jet's, to the bit, with
    autograd recording (bp: the fused node) and without (the zeroth-order solvers), for a
    boundary term B = 0 and one that is not."""
    from pinnbench import make_problem

    p = make_problem(pid, dim=7, seed=1, dtype=torch.float32)
    m = make_model(p, width=16, depth=3, generator=torch.Generator().manual_seed(2))
    x = p.sample_interior(6, gen)
    dirs = DenseDirections(torch.randn(3, p.input_dim, generator=gen))
    order = 4 if "biharmonic" in pid else 2
    with torch.set_grad_enabled(grad):
        full = m.jet(x, dirs, order)
        for ks in ([order], [0, order], list(range(order + 1)), [1]):
            got = m.jet_coefficients(x, dirs, ks)
            ref = full if max(ks) == order else m.jet(x, dirs, max(ks))
            assert sorted(got) == sorted(ks)
            for k in ks:
                assert torch.equal(torch.as_tensor(got[k]), torch.as_tensor(ref[k])), (ks, k)


def test_jet_with_other_params_and_under_no_grad(gen):
    p = toy()
    m = make_model(p, width=8, depth=2)
    other = [w * 1.5 for w in m.params]
    x = points(p)
    v = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        jet = m.jet(x, DenseDirections(v), 2, params=other)
    assert not jet[2].requires_grad
    ref = directional_reference(PINN(p, other), x, v[1], 2)[1]
    torch.testing.assert_close(jet.derivative(2)[:, 1], ref, rtol=1e-10, atol=1e-10)


def test_same_generator_same_weights_and_default_uses_problem_seed():
    p = toy()
    a = make_model(p, width=8, generator=torch.Generator().manual_seed(5))
    b = make_model(p, width=8, generator=torch.Generator().manual_seed(5))
    c = make_model(p, width=8, generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(u, w) for u, w in zip(a.params, b.params))
    assert not torch.equal(a.params[0], c.params[0])
    d1, d2 = make_model(toy(seed=11), width=8), make_model(toy(seed=11), width=8)
    assert torch.equal(d1.params[0], d2.params[0])
    assert not torch.equal(d1.params[0], make_model(toy(seed=12), width=8).params[0])


@pytest.mark.parametrize("kwargs, match", [
    ({"activation": "relu"}, "unknown activation 'relu'; known: tanh"),
    ({"width": 0}, "width must be a positive integer"),
    ({"width": 2.5}, "width must be a positive integer"),
    ({"width": True}, "width must be a positive integer"),
    ({"depth": -1}, "depth must be a positive integer"),
])
def test_make_model_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_model(toy(), **kwargs)


def test_model_refuses_bad_points():
    p = toy(dim=5)
    m = make_model(p, width=8)
    with pytest.raises(ValueError, match=r"x must be an \(n, 5\) tensor"):
        m(torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must be an \(n, 5\) tensor"):
        m(torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="dtype torch.float32 but the model is torch.float64"):
        m(torch.zeros(3, 5))
    assert math.isfinite(m(torch.zeros(1, 5, dtype=torch.float64)).item())


def test_torch_default_init_is_nn_linear_uniform_and_reproducible():
    """W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)): bounds, mean 0, variance bound^2 / 3 (to
    5 standard errors), every layer; the same generator state gives the same weights."""
    import math

    import torch

    from pinnbench import make_model, make_problem
    from pinnbench.maths.model import torch_default_init_

    problem = make_problem("poisson-2body-v1", dim=300, seed=0, dtype=torch.float64)
    models = []
    for _ in range(2):
        m = make_model(problem, width=64, depth=2, generator=torch.Generator().manual_seed(0))
        torch_default_init_(m, torch.Generator().manual_seed(5))
        models.append(m)
    for i in range(0, len(models[0].params), 2):
        w, b = models[0].params[i], models[0].params[i + 1]
        bound = 1.0 / math.sqrt(w.shape[1])
        assert w.abs().max() <= bound and b.abs().max() <= bound
        n = w.numel()
        if n >= 4096:  # P(no draw within 1 % of an end) < 1e-17
            assert w.min() < -0.99 * bound and w.max() > 0.99 * bound
        var = bound**2 / 3
        assert abs(float(w.mean())) < 5 * math.sqrt(var / n)
        assert abs(float(w.var()) - var) < 5 * var * math.sqrt(0.8 / n)  # Var(U^2) = 4/5 var^2
        assert torch.any(b != 0)
    assert all(torch.equal(a, b) for a, b in zip(models[0].params, models[1].params))


def test_bp_init_torch_redraws_and_lecun_keeps_the_built_model():
    import torch

    from pinnbench import make_model, make_problem, make_solver

    problem = make_problem("poisson-2body-v1", dim=20, seed=0, dtype=torch.float64)
    built = make_model(problem, width=16, depth=2, generator=torch.Generator().manual_seed(0))
    keep = [p.clone() for p in built.params]
    make_solver("bp", problem, built, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(keep, built.params))
    make_solver("bp[init=torch]", problem, built, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(keep[0], built.params[0])
    assert all(p.requires_grad for p in built.params)
