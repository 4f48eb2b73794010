"""QuotientScale (solvers/_zo_optimiser.py): the scalar second-moment normalisation of the
zeroth-order quotients, checked against the same formula on Python floats, bit for bit:
v_t = b v_{t-1} + (1 - b) mean_k c_k^2, v_hat = v_t / (1 - b^t), c_k <- c_k / sqrt(v_hat)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pinnbench.solvers._zo_optimiser import NORM_DECAY, QuotientScale

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


def reference(steps: list[list[float]], b: float = NORM_DECAY) -> list[list[float]]:
    v, out = 0.0, []
    for t, cs in enumerate(steps, start=1):
        mean_sq = 0
        for c in cs:  # in order, as Python's sum
            mean_sq = mean_sq + c * c
        v = b * v + (1.0 - b) * (mean_sq / len(cs))
        v_hat = v / (1.0 - b**t)
        s = math.pow(v_hat, -0.5) if v_hat > 0.0 else 0.0
        out.append([c * s for c in cs])
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(finite, min_size=1, max_size=12), min_size=1, max_size=6).filter(
    lambda steps: len({len(s) for s in steps}) == 1))
def test_the_scale_is_the_float_formula_bit_for_bit(steps):
    scale = QuotientScale()
    got = [scale(torch.tensor(cs, dtype=torch.float64)).tolist() for cs in steps]
    assert got == reference(steps)


def test_all_zero_quotients_stay_zero_and_do_not_poison_the_state():
    scale = QuotientScale()
    assert scale(torch.zeros(4, dtype=torch.float64)).tolist() == [0.0] * 4
    got = scale(torch.tensor([3.0, -4.0, 0.0, 1.0], dtype=torch.float64)).tolist()
    assert got == reference([[0.0] * 4, [3.0, -4.0, 0.0, 1.0]])[1]
    assert all(math.isfinite(x) for x in got)


def test_the_scale_of_a_constant_stream_tends_to_unit_rms():
    """v_hat is the bias-corrected mean of c^2: for a stream of the same quotients it is exactly
    their mean square at every t, so the scaled quotients have unit root mean square."""
    scale = QuotientScale()
    cs = torch.tensor([2.0, -6.0], dtype=torch.float64)
    for _ in range(5):
        out = scale(cs)
    assert float((out * out).mean()) == pytest.approx(1.0, rel=1e-12)
