"""zo on the streamed path (issue 16 item 2): the naive zeroth-order baseline with streamed step
data against the materialised path of the same streamed sample (float64, every ball family),
with and without common random numbers; a pass over the blocks per evaluation (zo perturbs W0
in place, so its first-layer products change between evaluations); what is refused."""

import pytest
import torch

import pinnbench.maths.streaming as streaming
from pinnbench import make_problem
from pinnbench.judge.metrics import evaluate

from test_streaming import FAMILIES, _rel, small_blocks  # noqa: F401 (a fixture)
from test_streaming import _pair as streamed_pair

pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(family: str, spec: str):
    return streamed_pair(family, spec, name="zo")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", ["q=2", "q=2,crns=true,loss=unbiased"])
def test_streamed_zo_quotients_steps_and_errors_equal_the_materialised_ones(small_blocks, family,
                                                                           spec):
    p, s, m = _pair(family, spec)
    qa = s.difference_quotients(torch.Generator().manual_seed(5))
    qb = m.difference_quotients(torch.Generator().manual_seed(5))
    scale = max(abs(q) for q in qb)
    assert max(abs(a - b) for a, b in zip(qa, qb)) < 1e-9 * scale, (qa, qb)
    start = [w.clone() for w in m.model.params]
    for _ in range(3):
        assert _rel(s.step(), m.step()) < 1e-9
    # the quotients agree to 1e-9 of their scale, so the steps do to 1e-9 of theirs (not of the
    # weights': a weight near 0 after a large step would hold its difference to ulps of the step)
    for wa, wb, w0 in zip(s.model.params, m.model.params, start):
        moved = (wb - w0).abs().max().item()
        assert (wa - wb).abs().max().item() <= 1e-9 * moved + 1e-15, (wa - wb, moved)
    assert _rel(evaluate(s.model, p)["rel_l2"], evaluate(m.model, p)["rel_l2"]) < 1e-9
    assert s.data_time_s > 0.0


def test_each_evaluation_streams_a_pass_with_the_perturbed_first_layer(small_blocks, monkeypatch):
    """With common random numbers the sample is shared, yet every one of the 2q evaluations runs
    its own pass (W0 differs between them); products from another W0 would make the quotients
    of the previous test wrong."""
    p, s, _ = _pair("poisson-2body", "q=3,crns=true")
    passes = []
    real = streaming.reduce
    monkeypatch.setattr(streaming, "reduce", lambda *a, **k: passes.append(1) or real(*a, **k))
    s.step()
    assert len(passes) == 2 * 3


@pytest.mark.parametrize("spec, what", [("zo[stream=true,estimator=fd]", "estimator=fd"),
                                        ("zo[stream=true,loss=gpinn]", "loss=gpinn")])
def test_unsupported_streamed_zo_specs_are_refused(spec, what):
    from pinnbench.solver import solver_from_spec

    with pytest.raises(ValueError, match=what):
        solver_from_spec(spec)
    skip, why = solver_from_spec("zo[stream=true]").skip(make_problem("heat-v1", dim=4))
    assert skip and "ball problems" in why
