"""The step data's passes over d-sized tensors that were saved without changing a number
(docs/roofline.md, issue 22 item 2): s = ||x||^2 computed once per batch for the source and the
ansatz, and the Rademacher probes' ||v||^2 known without a pass over them."""

import torch

from pinnbench.maths.estimators.probes import dense_probes
from pinnbench.problems import _chunked
from pinnbench.problems._chunked import sqnorm


def test_sqnorm_of_the_same_batch_is_computed_once(gen, monkeypatch):
    x = torch.randn(5, 300, generator=gen)
    calls = []
    row_sum = _chunked.row_sum
    monkeypatch.setattr(_chunked, "row_sum", lambda *a: calls.append(1) or row_sum(*a))
    s = sqnorm(x)
    assert torch.allclose(s, (x * x).sum(dim=1))
    assert sqnorm(x) is s and sqnorm(x, 300) is s  # all columns, named or not
    assert len(calls) == 1
    assert sqnorm(x, 299) is not s  # other columns: its own sum
    assert torch.allclose(sqnorm(x, 299), (x[:, :299] ** 2).sum(dim=1))
    s = sqnorm(x)
    x.mul_(2.0)  # changed in place: computed afresh
    assert torch.allclose(sqnorm(x), 4 * s)
    y = x.clone()  # equal values, another tensor
    n = len(calls)
    sqnorm(y)
    assert len(calls) == n + 1


def test_sqnorm_is_not_reused_where_it_is_differentiated(gen):
    x = torch.randn(4, 50, generator=gen, dtype=torch.float64).requires_grad_()
    with torch.no_grad():
        s0 = sqnorm(x)  # as the source is computed
    s = sqnorm(x)
    assert s is not s0 and s.requires_grad
    (g,) = torch.autograd.grad(s.sum(), x)
    torch.testing.assert_close(g, 2 * x.detach())


def test_a_kept_sqnorm_changed_in_place_is_not_returned(gen):
    x = torch.randn(3, 40, generator=gen)
    s = sqnorm(x)
    expected = s.clone()
    s.add_(1.0)
    assert torch.equal(sqnorm(x), expected)


def test_sqnorm_and_a_forward_pass_work_under_inference_mode(gen):
    """Inference tensors keep no version counter: the kept sum is not consulted for them (a
    model evaluated under ``torch.inference_mode`` raised a RuntimeError)."""
    import pinnbench

    x = torch.randn(3, 40, generator=gen)
    plain = (x * x).sum(dim=1)
    with torch.inference_mode():
        xi = x.clone()
        torch.testing.assert_close(sqnorm(xi), plain)
        torch.testing.assert_close(sqnorm(x), plain)
    torch.testing.assert_close(sqnorm(xi), plain)  # an inference tensor, outside the mode
    problem = pinnbench.make_problem("poisson-2body-v1", dim=5, seed=0)
    model = pinnbench.make_model(problem, width=8, depth=1, generator=torch.Generator().manual_seed(0))
    pts = problem.sample_interior(4, torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(pts)
    with torch.inference_mode():
        torch.testing.assert_close(model(pts.clone()), expected)


def test_rademacher_probes_know_their_squared_norms(gen):
    for dtype in (torch.float32, torch.float64):
        for time_row, input_dim in ((False, 300), (True, 301), (False, 301)):
            dirs = dense_probes("rademacher", 7, 300, input_dim, gen, dtype, torch.device("cpu"),
                                time_row=time_row)
            assert dirs._sqnorm is not None
            assert torch.equal(dirs.sqnorm(), (dirs.v * dirs.v).sum(dim=1))
            assert set(dirs.v[:7, :300].unique().tolist()) == {-1.0, 1.0}
            assert dirs.v[:7, 300:].eq(0).all()
    gauss = dense_probes("gaussian", 7, 300, 300, gen, torch.float32, torch.device("cpu"))
    assert gauss._sqnorm is None
    assert torch.equal(gauss.sqnorm(), (gauss.v * gauss.v).sum(dim=1))
