"""Shared step data (issue 13 items 1-2): a step's points, source values and probes are drawn
once, through ``Solver.draw``, timed apart; sdze's evaluations share them by identity (no
value comparisons of probe matrices, no redrawn probes); the cell reports the data time and the
solver's own time beside the step time."""

import pytest
import torch

import pinnbench.maths.step_data as step_data
from pinnbench import make_model, make_problem, make_solver
from pinnbench.cells.cellspec import normalize_spec
from pinnbench.cells.measurement import execute

pytestmark = pytest.mark.usefixtures("one_thread")


def _solver(spec: str, dim: int = 8, seed: int = 0):
    problem = make_problem("poisson-2body-v1", dim=dim, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    model = make_model(problem, width=10, depth=2, generator=g)
    return make_solver(spec, problem, model, generator=g)


def _count_draws(monkeypatch) -> list[int]:
    calls = [0]
    real = step_data.draw_step_data

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(step_data, "draw_step_data", counting)
    return calls


@pytest.mark.parametrize("spec, per_step", [
    ("sdze[q=3]", 1), ("sdze[q=3,loss=unbiased]", 1), ("zo[q=3,crns=true]", 1),
    ("bp", 1), ("bp[loss=unbiased]", 1),
    ("sdze[q=3,crns=false]", 6), ("zo[q=3,crns=false]", 6)])
def test_a_step_draws_its_data_once_per_independent_sample(monkeypatch, spec, per_step):
    """With common random numbers the 2q evaluations share one sample; without, each draws its
    own (2q); bp draws one."""
    s = _solver(spec)
    calls = _count_draws(monkeypatch)
    s.step()
    s.step()
    assert calls[0] == 2 * per_step


def test_unbiased_loss_draws_two_independent_probe_sets():
    s = _solver("bp[loss=unbiased]")
    data = s.draw()
    assert len(data.probes) == 2
    a, b = (p.groups["rademacher"].dirs.v for p in data.probes)
    assert not torch.equal(a, b)
    assert len(_solver("bp").draw().probes) == 1


@pytest.mark.parametrize("spec", ["sdze[q=4]", "sdze[q=4,dist=coordinate]",
                                  "sdze[q=2,loss=unbiased]"])
def test_sdze_step_compares_no_probe_values_and_computes_each_product_once(monkeypatch, spec):
    """The first-layer products of the step's probes are computed once and then found by
    identity: ``torch.equal`` (the old value lookup, O(V d) per evaluation) is never called, and
    W0 v is formed once per probe set per step."""
    from pinnbench.maths.directions import CoordinateDirections, DenseDirections

    s = _solver(spec)
    s.step()

    def no_equal(*args, **kwargs):
        raise AssertionError("torch.equal called in the step")

    applied = [0]
    for cls in (DenseDirections, CoordinateDirections):
        real = cls.apply_weight

        def counting(self, weight, real=real):
            applied[0] += 1
            return real(self, weight)

        monkeypatch.setattr(cls, "apply_weight", counting)
    monkeypatch.setattr(torch, "equal", no_equal)
    s.step()
    assert applied[0] == (2 if "unbiased" in spec else 1)


def test_draw_time_is_counted_apart_and_only_for_drawing(monkeypatch):
    s = _solver("sdze[q=2]")
    assert s.data_time_s == 0.0
    real = step_data.draw_step_data

    def slow(*args, **kwargs):
        import time
        time.sleep(0.05)
        return real(*args, **kwargs)

    monkeypatch.setattr(step_data, "draw_step_data", slow)
    s.step()
    assert 0.05 <= s.data_time_s < 1.0


def test_cell_reports_data_and_solver_time_per_step(monkeypatch):
    """data_time_per_step_s is the median of the steps' draw times and solver_time_per_step_s
    the median of (step - draw): recomputed here from a draw that takes a known 30 ms."""
    real = step_data.draw_step_data

    def slow(*args, **kwargs):
        import time
        time.sleep(0.03)
        return real(*args, **kwargs)

    monkeypatch.setattr(step_data, "draw_step_data", slow)
    spec = normalize_spec({"problem": "poisson-2body-v1", "dim": 6, "solver": "bp",
                           "steps": 5, "warmup": 1, "width": 8, "depth": 1, "floors": False})
    row = execute(spec)
    assert row["status"] == "ok"
    assert 0.03 <= row["data_time_per_step_s"] < 0.2
    assert row["solver_time_per_step_s"] >= 0
    assert row["data_time_per_step_s"] + row["solver_time_per_step_s"] == pytest.approx(
        row["time_per_step_s"], rel=0.5)


def test_a_solver_that_does_not_draw_through_the_base_reports_no_data_time():
    spec = normalize_spec({"problem": "poisson-2body-v1", "dim": 6, "solver": "fake-ok",
                           "steps": 3, "width": 8, "depth": 1, "floors": False,
                           "imports": ["tests/fake_solvers.py"]})
    row = execute(spec)
    assert row["status"] == "ok"
    assert row["data_time_per_step_s"] is None and row["solver_time_per_step_s"] is None


@pytest.mark.parametrize("spec", ["sdze[q=4,momentum=0]", "sdze[q=4,momentum=0,refresh=3]",
                                  "sdze[q=2,crns=false,momentum=0]"])
def test_sdze_regenerates_each_basis_once_per_step(monkeypatch, spec):
    """V (n x r) is regenerated once per basis and step, for the products of the points, of
    the probes and for the update, not once for each (issue 13 item 2); nothing is held after
    the step."""
    from pinnbench.solvers._zo_perturbations import SubspaceBasis

    s = _solver(spec, dim=40)
    s.step()
    counts: dict[int, int] = {}
    real = SubspaceBasis._regenerate

    def counting(self, *args):
        counts[id(self)] = counts.get(id(self), 0) + 1
        return real(self, *args)

    monkeypatch.setattr(SubspaceBasis, "_regenerate", counting)
    s.step()
    bases = [b for b in s.bases() if b is not None]
    assert len(bases) == 2 and len(counts) == 2  # W0 (10 x 40) and W1 (10 x 10); not the output
    assert set(counts.values()) == {1}, counts
    assert all(b._kept_v is None for b in bases)
