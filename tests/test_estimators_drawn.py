"""Probes drawn apart (``draw_probes``) and estimates from them: the same numbers as drawing
inside ``estimate_terms`` from a generator in the same state, the generator consumed alike, and
a clear error when the drawn probes belong to another estimate."""

import pytest
import torch

from pinnbench.maths.estimators import draw_probes, estimate_terms

from test_estimators import ToyBall, ToySpaceTime, g

F64 = torch.float64


def _model(cls, dim: int):
    from pinnbench.maths.model import make_model

    problem = cls(dim=dim, seed=0, dtype=F64)
    model = make_model(problem, width=8, depth=2, generator=g(1))
    return model, problem.sample_interior(5, g(2))


@pytest.mark.parametrize("cls", [ToyBall, ToySpaceTime])
@pytest.mark.parametrize("method, opts", [("exact", {}), ("sdgd", {}), ("hte", {}),
                                          ("stde", {}), ("stde", {"dist": "gaussian"}),
                                          ("fd", {})])
def test_drawn_apart_gives_the_same_estimates_and_consumes_the_generator_alike(cls, method, opts):
    model, x = _model(cls, 6)
    gen_inside, gen_apart = g(7), g(7)
    u, inside = estimate_terms(model, x, method, generator=gen_inside, probes=3, **opts)
    drawn = draw_probes(model.problem, method, gen_apart, 3, dtype=F64, **opts)
    u2, apart = estimate_terms(model, x, method, probes=3, drawn=drawn, **opts)
    torch.testing.assert_close(u2, u, rtol=0, atol=0)
    for t in inside:
        torch.testing.assert_close(apart[t], inside[t], rtol=0, atol=0, msg=t)
    # the generator moved on by exactly the same draws
    assert torch.equal(torch.rand(4, generator=gen_inside), torch.rand(4, generator=gen_apart))


def test_the_same_drawn_probes_give_the_same_estimate_twice():
    model, x = _model(ToyBall, 6)
    drawn = draw_probes(model.problem, "stde", g(3), 4, dtype=F64)
    a = estimate_terms(model, x, "stde", probes=4, drawn=drawn)[1]
    b = estimate_terms(model, x, "stde", probes=4, drawn=drawn)[1]
    other = estimate_terms(model, x, "stde", probes=4,
                           drawn=draw_probes(model.problem, "stde", g(4), 4, dtype=F64))[1]
    for t in a:
        assert torch.equal(a[t], b[t]) and not torch.equal(a[t], other[t])


@pytest.mark.parametrize("change", ["method", "probes", "dist", "dim"])
def test_probes_drawn_for_another_estimate_are_refused(change):
    model, x = _model(ToyBall, 6)
    drawn = draw_probes(model.problem, "hte", g(3), 4, dtype=F64)
    kwargs = dict(method="hte", probes=4)
    if change == "method":
        kwargs["method"] = "stde"
    elif change == "probes":
        kwargs["probes"] = 5
    elif change == "dist":
        kwargs["dist"] = "gaussian"
    else:
        model, x = _model(ToyBall, 7)
    with pytest.raises(ValueError, match="do not match"):
        estimate_terms(model, x, drawn=drawn, **kwargs)


def test_draw_probes_checks_its_arguments():
    problem = ToyBall(dim=4, seed=0)
    with pytest.raises(ValueError, match="unknown method"):
        draw_probes(problem, "nope", g(1))
    with pytest.raises(ValueError, match="generator"):
        draw_probes(problem, "stde", None)
    with pytest.raises(ValueError, match="unknown option"):
        draw_probes(problem, "stde", g(1), h=0.1)
