"""The CUDA path on a real GPU (marker ``gpu``; skipped without one). ``scripts/gpu-validate`` runs
this file as its smoke stage before the headline sweep.

- every solver x spatial estimator x problem family trains a few steps on CUDA: finite losses,
  parameters changed and still on the device, a finite error on the test set;
- the same seed twice gives the same numbers (and says so when CUDA kernels are not
  deterministic);
- an isolated cell is ``ok`` with GPU peaks and a GPU baseline, and the test set is not in them;
- an isolated cell whose parameters cannot fit on the GPU is ``oom``, not ``error``.
"""

from __future__ import annotations

import math

import pytest
import torch

import pinnbench
from pinnbench.cells.cell import run_cell
from pinnbench.judge.metrics import evaluate
from pinnbench.maths.problem_registry import problem_class
from pinnbench.solver import SOLVERS, solver_from_spec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DIM = 24
MODEL = {"width": 32, "depth": 2}
SMALL = "points=16,probes=4"


def _one_problem_per_family() -> list[str]:
    seen: dict[str, str] = {}
    for pid in pinnbench.list_problems():
        seen.setdefault(problem_class(pid).family, pid)
    return sorted(seen.values())


def _solver_specs() -> list[str]:
    """Each registered solver at its defaults, and each other value of its estimator, crns,
    subspace and loss switches (probe distributions: covered by the CPU suite)."""
    specs = []
    for name in pinnbench.list_solvers():
        cls = SOLVERS.get(name)
        params = cls.all_parameters()
        specs.append(f"{name}[{SMALL}]")
        for key in ("estimator", "crns", "subspace", "loss"):
            if key not in params:
                continue
            values = params[key].choices or ((True, False) if params[key].kind is bool else ())
            for v in values:
                if v != params[key].default:
                    specs.append(f"{name}[{SMALL},{key}={str(v).lower()}]")
    return specs


@pytest.mark.parametrize("pid", _one_problem_per_family())
@pytest.mark.parametrize("spec", _solver_specs())
def test_every_solver_estimator_and_family_trains_on_cuda(spec, pid):
    dev = torch.device("cuda")
    problem = pinnbench.make_problem(pid, dim=DIM, seed=0, device=dev)
    solver = solver_from_spec(spec)
    skip, reason = solver.skip(problem)
    if skip:
        pytest.skip(f"{spec} on {pid}: {reason}")
    g = torch.Generator(device=dev).manual_seed(0)
    model = pinnbench.make_model(problem, generator=g, **MODEL)
    before = [p.detach().clone() for p in model.params]
    solver.setup(problem, model, torch.Generator(device=dev).manual_seed(1))
    losses = [float(solver.step()) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses), losses
    assert all(p.device.type == "cuda" for p in model.params)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.params)), "nothing trained"
    errors = evaluate(model, problem)
    assert math.isfinite(errors["rel_l2"]), errors


def test_same_seed_gives_the_same_numbers_on_cuda():
    spec = dict(problem="poisson-2body-v1", dim=1000, steps=8, device="cuda", floors=True,
                **MODEL)
    for solver in ("sdze", "bp"):
        a = run_cell({**spec, "solver": solver}, isolated=False)
        b = run_cell({**spec, "solver": solver}, isolated=False)
        assert a["status"] == b["status"] == "ok", (a["message"], b["message"])
        curve = [(c["loss"], c["rel_l2"]) for c in a["curve"]]
        assert curve == [(c["loss"], c["rel_l2"]) for c in b["curve"]], solver
        assert a["floor_const_rel_l2"] == b["floor_const_rel_l2"]


def test_floors_are_the_same_on_cpu_and_cuda():
    """Floors are fitted on points from a CPU generator: the device does not change them beyond
    rounding (the GPU's reductions are ordered differently)."""
    from pinnbench.judge.floors import floors

    cpu = floors(pinnbench.make_problem("poisson-2body-v1", dim=200, seed=0))
    gpu = floors(pinnbench.make_problem("poisson-2body-v1", dim=200, seed=0, device="cuda"))
    for key in ("floor_const_rel_l2", "floor_affine_rel_l2"):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-4), key


def test_isolated_cell_is_ok_with_gpu_peaks_that_exclude_the_test_set():
    row = run_cell(dict(problem="poisson-2body-v1", dim=1000, solver="sdze", steps=5,
                        device="cuda", timeout_s=300))
    assert row["status"] == "ok", row["message"]
    base, peak = row["baseline_gpu_allocated_bytes"], row["peak_gpu_allocated_bytes"]
    assert base is not None and peak is not None and row["peak_gpu_reserved_bytes"] >= peak
    assert row["param_bytes"] <= base <= peak
    # the 20,000 x 1000 test set (80 MB) stays in host memory: not in the baseline
    assert base - row["param_bytes"] < 64 * 2**20, (base, row["param_bytes"])
    assert row["provenance"]["cuda_init_time_s"] > 0


def test_isolated_cell_whose_parameters_cannot_fit_is_oom():
    total = torch.cuda.get_device_properties(0).total_memory
    dim = int(2 * total / (128 * 4))  # the first layer alone is twice the GPU's memory
    row = run_cell(dict(problem="poisson-2body-v1", dim=dim, solver="sdze", steps=2,
                        device="cuda", floors=False, timeout_s=300))
    assert row["status"] == "oom", (row["status"], row["message"])
