"""The asv suite's own hygiene (asv runs it, CI runs the fast profile once): every benchmark that
builds a solver gives its memory back before the next one is built, so the full profile never
holds two d = 10^7 solvers (5-30 GB each on a GPU) at once."""

import gc
import importlib
import sys
import weakref
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def bench(monkeypatch):
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the profile sets it globally
    monkeypatch.setenv("PINNBENCH_ASV_PROFILE", "fast")
    monkeypatch.syspath_prepend(str(REPO))
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    return importlib.import_module("benchmarks.bench_solvers")


@pytest.mark.usefixtures("one_thread")
def test_time_step_teardown_frees_the_solver(bench):
    b = bench.TimeStep()
    b.setup(bench.PROBLEM, "sdze", 100)
    b.time_step(bench.PROBLEM, "sdze", 100)
    model = weakref.ref(b.solver.model)
    b.teardown(bench.PROBLEM, "sdze", 100)
    gc.collect()
    assert not hasattr(b, "solver") and model() is None


def test_full_profile_trains_only_where_it_stays_within_minutes(monkeypatch):
    monkeypatch.setenv("PINNBENCH_ASV_PROFILE", "full")
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.delitem(sys.modules, "benchmarks.profiles", raising=False)
    profiles = importlib.import_module("benchmarks.profiles")
    assert max(profiles.DIMS) == 10**7 and max(profiles.ERROR_DIMS) <= 10**5
    assert profiles.TRAIN_STEPS * len(profiles.ERROR_DIMS) * len(profiles.SOLVERS) <= 3000


def test_step_time_split_tracks_the_cells_data_and_solver_times(bench, monkeypatch):
    """The asv split benchmark reports exactly the cell's two columns, for every (solver, d)."""
    calls = []

    def fake_run_cell(spec):
        calls.append(spec)
        return {"status": "ok", "message": "", "data_time_per_step_s": 0.25 + spec["dim"],
                "solver_time_per_step_s": 0.5 + spec["dim"]}

    monkeypatch.setattr(bench, "run_cell", fake_run_cell)
    b = bench.StepTimeSplit()
    times = b.setup_cache()
    assert len(calls) == len(bench.SOLVERS) * len(bench.DIMS)
    for solver in bench.SOLVERS:
        for dim in bench.DIMS:
            assert b.track_data_time_per_step(times, bench.PROBLEM, solver, dim) == 0.25 + dim
            assert b.track_solver_time_per_step(times, bench.PROBLEM, solver, dim) == 0.5 + dim


@pytest.mark.usefixtures("one_thread")
def test_every_benchmark_names_its_problem_and_errors_have_3_significant_digits(bench):
    for cls in (bench.TimeStep, bench.PeakMemory, bench.StepTimeSplit, bench.RelativeError):
        assert cls.param_names[0] == "problem" and cls.params[0] == [bench.PROBLEM]
    errors = {("sdze", 100): 0.96612345, ("bp", 100): 1.0}
    assert bench.RelativeError().track_rel_l2(errors, bench.PROBLEM, "sdze", 100) == 0.966
    assert bench.sig3(0.000123456) == 0.000123 and bench.sig3(12345.0) == 12300.0


def test_step_time_split_of_a_real_cell_is_positive(bench, monkeypatch):
    monkeypatch.setattr(bench, "SOLVERS", ["sdze"])
    monkeypatch.setattr(bench, "DIMS", [100])
    monkeypatch.setattr(bench, "SPLIT_STEPS", 4)
    data, solver = bench.split_times()[("sdze", 100)]
    assert 0 < data < 1 and 0 < solver < 5
