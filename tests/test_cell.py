"""One measured cell: statuses (ok, oom, timeout, diverged, error, skipped), peak memory,
the error curve, the floors. Isolated cells spawn a Python process (~2-7 s each): few of them."""

import math
from pathlib import Path

import pytest

from pinnbench.cells.cell import cell_id, eval_steps, is_oom, normalize_spec, run_cell

FAKES = str(Path(__file__).with_name("fake_solvers.py"))
BASE = dict(problem="fake-affine-v1", dim=3, steps=20, width=16, depth=2, imports=[FAKES])


def cell(solver, **kw):
    return {**BASE, "solver": solver, **kw}


# -- in-process (fast) ---------------------------------------------------------------------------
def test_ok_cell_trains_and_records_curve_and_floors():
    row = run_cell(cell("fake-ok[lr=0.1]"), isolated=False)
    assert row["status"] == "ok", row["message"]
    assert row["steps_done"] == 20
    assert [c["step"] for c in row["curve"]] == [0, 1, 2, 4, 8, 16, 20]
    assert row["curve"][-1]["final"] and sum(c["final"] for c in row["curve"]) == 1
    assert sum(c["best"] for c in row["curve"]) == 1
    assert row["final_rel_l2"] == row["curve"][-1]["rel_l2"]
    assert row["final_rel_l2"] < 0.5 * row["curve"][0]["rel_l2"]  # training helped
    assert row["best_rel_l2"] == min(c["rel_l2"] for c in row["curve"])
    assert row["n_params"] == (3 * 16 + 16) + (16 * 16 + 16) + (16 + 1)
    assert row["time_per_step_s"] > 0 and row["setup_time_s"] > 0
    assert row["peak_cpu_bytes"] >= row["baseline_cpu_bytes"] > 0
    # u* = A (2 + w.x): the affine floor is exactly 0 up to rounding; the constant one is not
    assert row["floor_affine_rel_l2"] < 1e-5
    assert 0.05 < row["floor_const_rel_l2"] < 0.2
    assert row["provenance"]["torch"] and "git_sha" in row["provenance"]
    # deterministic for a seed
    again = run_cell(cell("fake-ok[lr=0.1]"), isolated=False)
    assert again["final_rel_l2"] == row["final_rel_l2"]


def test_nan_loss_is_diverged_and_crash_is_error_and_skip_is_skipped():
    nan = run_cell(cell("fake-nan"), isolated=False)
    assert nan["status"] == "diverged" and nan["steps_done"] == 3
    assert "nan" in nan["message"]
    crash = run_cell(cell("fake-crash"), isolated=False)
    assert crash["status"] == "error" and "fake-crash: boom" in crash["message"]
    skip = run_cell(cell("fake-skip", dim=5), isolated=False)
    assert skip["status"] == "skipped" and "d <= 3" in skip["message"]
    assert skip["steps_done"] == 0 and skip["n_params"] is None


def test_a_cpu_cell_records_the_tensors_of_one_step_exactly():
    """step_tensor_peak_bytes: one more step after training under the profiler's memory events;
    tensor_peak_above_baseline_bytes: that plus the state built in training. A step that makes
    an 8 MB temporary records exactly 8 MB (where the resident set's peak also holds the heap's
    slack); a step that allocates nothing records 0 for the step however much state it holds,
    and the state (fake-alloc's 100 MB, made at its first step) in the second; a cell that is
    not ok records neither."""
    temp = run_cell(cell("fake-alloc[bytes=8000000,hold=false]"), isolated=False)
    assert temp["status"] == "ok" and temp["step_tensor_peak_bytes"] == 8_000_000
    assert temp["tensor_peak_above_baseline_bytes"] == 8_000_000  # no state built
    held = run_cell(cell("fake-alloc", steps=3), isolated=False)
    assert held["status"] == "ok" and held["step_tensor_peak_bytes"] == 0
    # the 100 MB it keeps from its first step is state: the live tensors' growth
    assert held["tensor_peak_above_baseline_bytes"] == 100_000_000
    nan = run_cell(cell("fake-nan"), isolated=False)
    assert nan.get("step_tensor_peak_bytes") is None
    assert nan.get("tensor_peak_above_baseline_bytes") is None


def test_a_failed_tensor_scan_leaves_the_figure_out_not_the_cell(monkeypatch):
    """The live-tensor scan is a measurement aside: if it raises, the cell is still ok and
    records its step's tensors, without the total it could not form."""
    from pinnbench import memory

    def broken():
        raise RuntimeError("scan failed")

    monkeypatch.setattr(memory, "cpu_tensor_bytes", broken)
    row = run_cell(cell("fake-alloc[bytes=8000000,hold=false]"), isolated=False)
    assert row["status"] == "ok", row["message"]
    assert row["step_tensor_peak_bytes"] == 8_000_000
    assert row.get("tensor_peak_above_baseline_bytes") is None


def test_a_cells_step_tensors_are_the_bench_counts_step_peak():
    """The cell's figure and ``python -m pinnbench.bench ops``'s ``peak MiB`` measure the same
    stationary step (a step's allocations do not depend on the values it computes)."""
    from pinnbench.bench.ops import count_step

    spec = "bp[points=20,probes=4]"
    row = run_cell(dict(problem="poisson-2body-v1", dim=30, steps=4, width=16, depth=2,
                        solver=spec), isolated=False)
    assert row["status"] == "ok", row["message"]
    assert row["step_tensor_peak_bytes"] == count_step(spec, 30, width=16, depth=2).step_peak_bytes


def test_a_tensor_loss_is_read_only_at_the_evaluations():
    """A step may return its loss as a 0-d tensor (no host sync in the step): the runner reads
    it at the evaluation points (1, 2, 4, 8, 16 and the last) and for the final loss, never at
    the steps in between (on the old runner, which read every step's loss, this fails)."""
    from fake_solvers import ReadCountingLoss

    ReadCountingLoss.reads.clear()
    row = run_cell(cell("fake-tensor-loss", steps=20), isolated=False)
    assert row["status"] == "ok" and row["steps_done"] == 20
    assert ReadCountingLoss.reads == [1, 2, 4, 8, 16, 20], ReadCountingLoss.reads  # once each
    # the partial rows sent after each evaluation (what a cell killed on timeout keeps) carry
    # the loss read there
    from pinnbench.cells.measurement import execute

    partial = []
    execute(normalize_spec(cell("fake-tensor-loss", steps=5)),
            report=lambda r: partial.append(r["final_loss"]))
    assert partial == [None, 1.0, 2.0, 4.0, 5.0]
    assert row["final_loss"] == 20.0
    assert [c["loss"] for c in row["curve"][1:]] == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0]


def test_a_nonfinite_tensor_loss_stops_training_at_the_next_evaluation():
    """The divergence check runs on the device (pinnbench/cells/loss_watch.py): a NaN at step 5 is
    found at the evaluation of step 8 and named, even though steps 6..8 were finite again."""
    row = run_cell(cell("fake-tensor-loss[nan_at=5]", steps=20), isolated=False)
    assert row["status"] == "diverged" and row["steps_done"] == 8, row["message"]
    assert "at step 5" in row["message"] and "step 8" in row["message"], row["message"]
    assert [c["step"] for c in row["curve"]] == [0, 1, 2, 4, 8]
    # past the last evaluation: found by the check at the end
    late = run_cell(cell("fake-tensor-loss[nan_at=18]", steps=19), isolated=False)
    assert late["status"] == "diverged" and late["steps_done"] == 19
    assert "at step 18" in late["message"], late["message"]


def test_time_budget_stops_training():
    row = run_cell(cell("fake-sleep[seconds=0.05]", steps=None, time_budget_s=0.3), isolated=False)
    assert row["status"] == "ok" and row["steps"] is None
    assert 4 <= row["steps_done"] <= 8  # 0.3 s / 0.05 s per step (+1 for the check after)


def test_spec_validation_and_cell_id():
    a = normalize_spec(cell("fake-ok"))
    b = normalize_spec(cell("fake-ok[lr=0.05,points=100]", timeout_s=3))
    assert a["solver"] == b["solver"] == "fake-ok[lr=0.05,points=100,probes=16]"
    assert cell_id(a) == cell_id(b)  # defaults written out; run options do not change the id
    assert cell_id(a) != cell_id(normalize_spec(cell("fake-ok", seed=1)))
    for bad, match in ((cell("fake-ok", dim=0), "dim"), (cell("fake-ok", steps=0), "steps"),
                       (cell("fake-ok[lr=-1]"), "lr"), (cell("fake-ok", dtype="half"), "dtype"),
                       (cell("fake-ok", device="tpu"), "device"), ({**cell("fake-ok"), "x": 1}, "x")):
        with pytest.raises(ValueError, match=match):
            normalize_spec(bad)


def test_eval_steps_and_oom_classification():
    assert sorted(eval_steps(20)) == [1, 2, 4, 8, 16, 20]
    assert sorted(eval_steps(1)) == [1]
    assert is_oom(MemoryError()) and is_oom(RuntimeError("CUDA out of memory. Tried ..."))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_oom(RuntimeError("shape mismatch")) and not is_oom(ValueError("out of memory"))


@pytest.mark.parametrize("message", [
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cusolver error: CUSOLVER_STATUS_ALLOC_FAILED, when calling `cusolverDnCreate(&handle)`",
    "NVML_SUCCESS == r INTERNAL ASSERT FAILED at \"/pytorch/c10/cuda/CUDACachingAllocator.cpp\"",
    "CUDA out of memory. Tried to allocate 20.00 GiB",
])
def test_cuda_allocation_failures_are_oom(message):
    assert is_oom(RuntimeError(message))


def test_a_sticky_cuda_error_in_clean_up_keeps_the_cells_own_message(monkeypatch):
    """After a sticky CUDA error every CUDA call raises; the clean-up must not replace the
    message of the failure that caused it."""
    import fake_solvers

    from pinnbench import memory

    broken = []

    def sticky(*args, real):
        if broken:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(*args)

    def crash(self):
        broken.append(True)
        raise RuntimeError("fake-crash: boom")

    for name in ("release_gpu_cache", "peak_gpu_bytes", "reset_peak_gpu"):
        real = getattr(memory, name)
        monkeypatch.setattr(memory, name, lambda *a, real=real: sticky(*a, real=real))
    monkeypatch.setattr(fake_solvers.FakeCrash, "step", crash)
    row = run_cell(cell("fake-crash"), isolated=False)
    assert broken and row["status"] == "error", row
    assert "fake-crash: boom" in row["message"], row["message"]


# -- isolated (spawned processes) ------------------------------------------------------------------
def test_peak_memory_of_a_known_allocation_within_10_percent():
    n = 200_000_000
    row = run_cell(cell(f"fake-alloc[bytes={n}]", steps=3))
    assert row["status"] == "ok", row["message"]
    extra = row["peak_cpu_bytes"] - row["baseline_cpu_bytes"]
    assert abs(extra - n) < 0.1 * n, (extra, n)
    assert row["provenance"]["cpu_peak_resettable"] is True


def test_allocation_past_rlimit_is_oom_and_sigkill_is_oom():
    row = run_cell(cell("fake-oom", memory_limit_bytes=2**30))
    assert row["status"] == "oom", row["message"]
    assert "allocate" in row["message"]
    killed = run_cell(cell("fake-killed"))
    assert killed["status"] == "oom" and "SIGKILL" in killed["message"]
    assert "last words before signal" in killed["message"]  # the log tail is kept


def test_a_cell_killed_by_another_signal_is_an_error_with_its_log_tail():
    import signal

    row = run_cell(cell(f"fake-killed[signal={int(signal.SIGABRT)}]"))
    assert row["status"] == "error" and "SIGABRT" in row["message"]
    assert "last words before signal" in row["message"]


def test_timeout_kills_the_cell():
    row = run_cell(cell("fake-sleep[seconds=60]", timeout_s=8))
    assert row["status"] == "timeout"
    assert "timeout of 8 s" in row["message"]
    assert 8 <= row["total_time_s"] < 20
    if row["curve"]:  # the partial progress reached the parent: the step-0 error is known
        assert row["curve"][0]["step"] == 0 and math.isfinite(row["curve"][0]["rel_l2"])


def test_a_cells_defaults_are_declared_once():
    """CellSpec declares the defaults; the sweep configuration and the CLI's run read them."""
    import dataclasses

    from pinnbench.cells.cellspec import DEFAULTS, CellSpec
    from pinnbench.cells.sweep import SweepConfig

    spec = CellSpec.from_dict({"problem": "poisson-2body-v1", "dim": 10, "solver": "bp"})
    assert spec.cell_id == cell_id(normalize_spec({"problem": "poisson-2body-v1", "dim": 10,
                                                   "solver": "bp"}))
    assert CellSpec.from_dict(spec.to_dict()) == spec  # the plain form round-trips
    config = {f.name: f.default for f in dataclasses.fields(SweepConfig)
              if f.default is not dataclasses.MISSING}
    for key in ("steps", "width", "depth", "device", "dtype", "warmup", "floors"):
        assert config[key] == DEFAULTS[key] == getattr(CellSpec, key), key
    with pytest.raises(ValueError, match="width must be an integer >= 1"):
        CellSpec.from_dict({**spec.to_dict(), "width": 0})
