"""Jet arithmetic and the analytic-function recurrences of pinnbench.maths.jets against autodiff:
the k-th Taylor coefficient of t -> f(z(t)) must be d^k/dt^k f(z(t)) / k! at t = 0, the
reference computed by nesting torch.autograd.grad in t (float64, to 1e-12). (Nested
torch.func.jacfwd gives the same reference but takes ~1 min on this CPU.)"""

import math

import pytest
import torch

from pinnbench.maths.jets import Jet

ORDER = 5


def poly_coeffs(gen, size=7, degree=3):
    """Coefficients of a random polynomial path z(t) = sum_k c_k t^k (vectors of ``size``)."""
    return [0.5 * torch.randn(size, generator=gen, dtype=torch.float64) for _ in range(degree + 1)]


def path(coeffs):
    return lambda t: sum(c * t**k for k, c in enumerate(coeffs))


def taylor_reference(fn, order=ORDER, size=7):
    """[d^k/dt^k fn(t) / k! at t = 0 for k = 0..order] by nested reverse-mode autodiff. ``fn`` is
    elementwise in t (component i of the path depends on t_i only), so the gradient of the sum
    is the vector of componentwise derivatives."""
    t = torch.zeros(size, dtype=torch.float64, requires_grad=True)
    out, y = [], fn(t)
    for k in range(order + 1):
        out.append(y.detach() / math.factorial(k))
        if k < order and not y.requires_grad:  # a polynomial: the rest is zero
            y = torch.zeros_like(t)
        elif k < order:
            (y,) = torch.autograd.grad(y.sum(), t, create_graph=True, allow_unused=True,
                                       materialize_grads=True)
    return out


def assert_jet_matches(jet, reference, tol=1e-12):
    assert jet.order == ORDER
    for k, ref in enumerate(reference):
        got = jet[k]
        got = torch.zeros_like(ref) + got  # a 0.0 float where the jet knows it is zero
        torch.testing.assert_close(got, ref, rtol=tol, atol=tol, msg=f"coefficient {k}")


@pytest.mark.parametrize("name", ["exp", "sin", "cos", "sinh", "cosh", "tanh"])
@pytest.mark.parametrize("degree", [1, 3])  # an affine input (2 coefficients) and a cubic one
def test_analytic_functions_match_autodiff(gen, name, degree):
    coeffs = poly_coeffs(gen, degree=degree)
    jet = getattr(Jet(coeffs, ORDER), name)()
    f = getattr(torch, name)
    assert_jet_matches(jet, taylor_reference(lambda t: f(path(coeffs)(t))))


def test_arithmetic_matches_autodiff(gen):
    a, b = poly_coeffs(gen, degree=2), poly_coeffs(gen, degree=3)
    ja, jb = Jet(a, ORDER), Jet(b, ORDER)
    pa, pb = path(a), path(b)
    cases = {
        "a*b": (ja * jb, lambda t: pa(t) * pb(t)),
        "a+b": (ja + jb, lambda t: pa(t) + pb(t)),
        "a-b": (ja - jb, lambda t: pa(t) - pb(t)),
        "2.5-a": (2.5 - ja, lambda t: 2.5 - pa(t)),
        "3*a+1": (3.0 * ja + 1.0, lambda t: 3.0 * pa(t) + 1.0),
        "-a/4": (-ja / 4.0, lambda t: -pa(t) / 4.0),
        "a*a*b": (ja * ja * jb, lambda t: pa(t) * pa(t) * pb(t)),
        "exp(a)*sin(b)": (ja.exp() * jb.sin(), lambda t: torch.exp(pa(t)) * torch.sin(pb(t))),
        "tanh(a*b)-cosh(b)": ((ja * jb).tanh() - jb.cosh(),
                              lambda t: torch.tanh(pa(t) * pb(t)) - torch.cosh(pb(t))),
    }
    for name, (jet, fn) in cases.items():
        for k, ref in enumerate(taylor_reference(fn)):
            got = torch.zeros_like(ref) + jet[k]
            torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12, msg=f"{name}, k={k}")


def test_derivative_is_factorial_times_coefficient(gen):
    coeffs = poly_coeffs(gen, degree=1)
    jet = Jet(coeffs, ORDER).sin()
    ref = taylor_reference(lambda t: torch.sin(path(coeffs)(t)))
    for k in range(ORDER + 1):
        torch.testing.assert_close(jet.derivative(k), ref[k] * math.factorial(k), rtol=1e-12,
                                   atol=1e-12)


def test_truncation_and_known_zeros():
    line = Jet.line(torch.tensor([1.0]), torch.tensor([2.0]), order=3)
    assert len(line.coeffs) == 2 and line[2] == 0.0 and line.derivative(3) == 0.0
    sq = line * line  # (1 + 2t)^2 = 1 + 4t + 4t^2, no t^3 coefficient stored
    assert [float(c) for c in sq.coeffs] == [1.0, 4.0, 4.0]
    assert (line * line * line).order == 3 and len((line * line * line).coeffs) == 4
    low = Jet([torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0)], order=1)
    assert len(low.coeffs) == 2  # truncated at construction
    assert (low + line).order == 1  # the sum keeps the lower order


def test_bad_jets_are_refused():
    with pytest.raises(ValueError, match="order must be >= 0"):
        Jet([1.0], order=-1)
    with pytest.raises(ValueError, match="at least its value"):
        Jet([], order=2)


@pytest.mark.parametrize("degree", [1, 2])  # an affine input (2 coefficients), a quadratic (3)
def test_order2_tanh_matches_autodiff_and_the_recurrence_bit_for_bit(gen, degree):
    """tanh's order-2 jet takes its own shorter arithmetic (jets._tanh_order2): the derivatives
    of autodiff, and the very numbers of the general recurrence (the order-3 jet's first three
    coefficients) in float32 on the broadcast shapes of a network's jets."""
    coeffs = poly_coeffs(gen, degree=degree)
    jet = Jet(coeffs, 2).tanh()
    reference = taylor_reference(lambda t: torch.tanh(path(coeffs)(t)), order=2)
    for k, ref in enumerate(reference):
        torch.testing.assert_close(jet[k], ref, rtol=1e-12, atol=1e-12, msg=f"coefficient {k}")
    z = [3 * torch.randn(40, 1, 64, generator=gen)] + [
        2 * torch.randn(40, 16, 64, generator=gen) for _ in range(degree)]
    short, general = Jet(z, 2).tanh(), Jet(z, 3).tanh()
    for k in range(3):
        assert torch.equal(short[k], general[k]), f"coefficient {k}"


def test_order2_tanh_writes_one_stacked_buffer_without_autograd(gen):
    """Without autograd the coefficients are slices of one buffer, which the next layer's
    product reads instead of a concatenated copy (pinnbench.maths.model.stacked_base): the
    same numbers as with autograd recording, where they are separate tensors."""
    from pinnbench.maths.model import stacked_base

    for batch in ((), (3,)):
        z = [3 * torch.randn(*batch, 40, 1, 64, generator=gen),
             2 * torch.randn(*batch, 40, 16, 64, generator=gen),
             torch.randn(*batch, 40, 16, 64, generator=gen)]
        for k in (2, 3):
            with torch.no_grad():
                stacked = Jet(z[:k], 2).tanh()
            apart = Jet([c.clone().requires_grad_() for c in z[:k]], 2).tanh()
            base = stacked_base(stacked.coeffs)
            assert base is not None and stacked_base(apart.coeffs) is None
            assert torch.equal(base, torch.cat([c.detach() for c in apart.coeffs], dim=-2))
    assert stacked_base([base[..., :1, :], base[..., 2:, :]]) is None  # a gap: not the buffer
    assert stacked_base([base[..., 1:, :], base[..., :1, :]]) is None  # out of order


def test_scalar_minus_a_jet_and_a_jet_times_one_are_the_plain_arithmetic_bit_for_bit(gen):
    """``c - J`` is one op for the value (not a negation of every coefficient and an addition)
    and ``J * 1.0`` (``J / 1.0``: a unit ball's 1 / R^2) no op at all, with the numbers of
    (-J) + c and of c_k * 1.0, bit for bit (issue 22: a step's ATen ops)."""
    j = Jet([torch.randn(4, 1, generator=gen), torch.randn(4, 3, generator=gen),
             torch.randn(1, 3, generator=gen)], 4)
    got = 1.0 - j
    want = [-c for c in j.coeffs]
    want[0] = want[0] + 1.0
    assert all(torch.equal(a, b) for a, b in zip(got.coeffs, want))
    assert all(torch.equal(a, b) for a, b in zip((0.0 - j).coeffs, (-j).coeffs))
    one = j / 1.0
    assert all(a is b for a, b in zip(one.coeffs, j.coeffs))  # the same tensors: no op
    assert all(torch.equal(a, b * 2.0) for a, b in zip((j * 2.0).coeffs, j.coeffs))
