"""Cell diagnostics (``diagnostics=true``, pinnbench/cells/diagnostics.py) and the ``tf32`` switch:
neither changes the ids of existing cells; diagnostics leave training, step times and peaks
alone, record what they measured or why not; tf32 is refused on CPU and recorded on CUDA."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from cuda_sim import simulated_cuda
from pinnbench.cells import diagnostics
from pinnbench.solvers import _zo_diagnostics as zo_diagnostics
from pinnbench.cells.cellspec import IDENTITY_KEYS, CellSpec, cell_id
from pinnbench.cli import main
from pinnbench.cells.measurement import execute
from pinnbench.cells.store import load_results

#: a tiny, fast cell (the scaled problem the ablation runs on)
TINY = {"problem": "poisson-2body-scaled-v1", "dim": 20, "steps": 6, "width": 8, "depth": 2,
        "threads": 1, "warmup": 1}
#: the identity of every cell stored before tf32 and diagnostics existed
OLD_IDENTITY_KEYS = ("problem", "dim", "solver", "seed", "steps", "time_budget_s", "width",
                     "depth", "device", "dtype", "warmup")


def _spec(solver: str, **extra) -> dict:
    return CellSpec.from_dict({**TINY, "solver": solver, **extra}).to_dict()


def _old_cell_id(spec: dict) -> str:
    """The cell id as it was computed before these fields existed (recomputed here)."""
    identity = {k: spec[k] for k in OLD_IDENTITY_KEYS}
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("extra", [{}, {"seed": 3, "steps": None, "time_budget_s": 2.5},
                                   {"dtype": "float64", "warmup": 0, "floors": False}])
@pytest.mark.parametrize("solver", ["sdze", "zo[crns=true]", "bp"])
def test_existing_cell_ids_are_unchanged_and_diagnostics_is_not_identity(solver, extra):
    assert IDENTITY_KEYS == OLD_IDENTITY_KEYS
    spec = _spec(solver, **extra)
    assert spec["diagnostics"] is False and spec["tf32"] is False
    assert cell_id(spec) == _old_cell_id(spec)
    assert cell_id({**spec, "diagnostics": True}) == _old_cell_id(spec)
    # a spec written before the fields existed (a stored plan) has the same id
    legacy = {k: v for k, v in spec.items() if k not in ("diagnostics", "tf32")}
    assert cell_id(legacy) == _old_cell_id(spec)


def test_tf32_is_identity_only_when_true_and_cuda_only():
    spec = _spec("sdze")
    cuda = {**spec, "device": "cuda"}
    assert cell_id({**cuda, "tf32": True}) != cell_id(cuda) == _old_cell_id(cuda)
    with pytest.raises(ValueError, match="tf32 works for CUDA cells only"):
        CellSpec.from_dict({**TINY, "solver": "sdze", "tf32": True})
    for key in ("tf32", "diagnostics"):
        with pytest.raises(ValueError, match=f"{key} must be true or false"):
            CellSpec.from_dict({**TINY, "solver": "sdze", key: "yes"})


def test_tf32_cell_on_simulated_cuda_sets_and_records_it():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        rows = {}
        for tf32 in (False, True):
            with simulated_cuda() as sim:
                spec = CellSpec.from_dict({**TINY, "solver": "sdze", "device": "cuda",
                                           "tf32": tf32}).to_dict()
                rows[tf32] = execute(spec)
            assert sim.errors == []
            assert rows[tf32]["status"] == "ok", rows[tf32]["message"]
        assert rows[True]["provenance"]["tf32"] is True
        assert rows[False]["provenance"]["tf32"] is False
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert rows[True]["cell_id"] != rows[False]["cell_id"]
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    cpu = execute(_spec("sdze"))
    assert cpu["provenance"]["tf32"] is False


@pytest.mark.parametrize("solver", ["sdze[q=2]", "zo[q=2]"])
def test_diagnostics_leave_training_alone_and_measure_the_estimator(solver):
    plain, diag = execute(_spec(solver)), execute(_spec(solver, diagnostics=True))
    assert plain["status"] == diag["status"] == "ok"
    assert plain["diagnostics"] is None
    for key in ("final_rel_l2", "final_loss", "steps_done", "cell_id"):
        assert diag[key] == plain[key], key
    assert [c["rel_l2"] for c in diag["curve"]] == [c["rel_l2"] for c in plain["curve"]]
    d = diag["diagnostics"]
    assert "error" not in d and d["time_s"] > 0
    gv = d["gradient_variance"]
    for at in ("initial", "final"):
        assert gv[at]["n_params"] == diag["n_params"]
        for key in ("ratio_step", "ratio_window", "ratio_held", "cos_held"):
            assert math.isfinite(gv[at][key]), (at, key)
    if solver.startswith("zo"):
        # full Gaussian z: E||g_hat - G||^2 / ||G||^2 = (P + 1) / q (Isserlis); 200 draws
        expect = (diag["n_params"] + 1) / 2
        assert 0.7 * expect < gv["final"]["ratio_step"] < 1.3 * expect
        assert gv["final"]["cos_held"] == pytest.approx(1.0)
    q = {(e["eps"], e["crns"]): e for e in d[zo_diagnostics.QUOTIENT_KEY]}
    assert set(q) == {(e, c) for e in zo_diagnostics.EPS_GRID for c in (True, False)}
    assert all(e["samples"] == zo_diagnostics.QUOTIENT_SAMPLES for e in q.values())
    small = min(zo_diagnostics.EPS_GRID)
    # without CRNS the quotient carries Var_omega[L] / (2 eps^2): far above CRNS at small eps
    assert q[(small, False)]["variance"] > 100 * q[(small, True)]["variance"]
    assert d["zo_quotient_theta"] == "final"


def test_initial_model_is_the_model_the_cell_started_from():
    from pinnbench.judge.metrics import evaluate
    from pinnbench.maths.problem_registry import make_problem

    spec = _spec("sdze")
    row = execute(spec)
    problem = make_problem(spec["problem"], dim=spec["dim"], seed=spec["seed"],
                           dtype=spec["dtype"], device=spec["device"])
    model = diagnostics.initial_model(problem, spec)
    assert float(evaluate(model, problem)["rel_l2"]) == row["curve"][0]["rel_l2"]


def test_bp_diagnostics_say_not_applicable():
    d = execute(_spec("bp", diagnostics=True))["diagnostics"]
    assert d["not_applicable"] == "bp declares no diagnostics (Solver.diagnostics)"
    assert zo_diagnostics.QUOTIENT_KEY not in d and "gradient_variance" not in d


def test_a_large_model_is_skipped_with_the_reason(monkeypatch):
    monkeypatch.setattr(zo_diagnostics, "MAX_PARAMS", 10)
    row = execute(_spec("sdze", diagnostics=True))
    gv = row["diagnostics"]["gradient_variance"]
    assert "initial" not in gv and f"> {10:,}" in gv["skipped"]
    assert f"P = {row['n_params']:,}" in gv["skipped"]


def test_the_quotient_draws_stop_at_the_time_cap(monkeypatch):
    monkeypatch.setattr(zo_diagnostics, "QUOTIENT_TIME_S", 0.0)
    d = execute(_spec("sdze", diagnostics=True))["diagnostics"]
    # one round of draws is always taken: one sample each, too few for a variance: said so
    assert d[zo_diagnostics.QUOTIENT_KEY] == []
    assert "fewer than 2 finite draws" in d["zo_quotient_skipped"]


def test_a_failing_diagnostic_is_recorded_and_the_cell_stays_ok(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("planted")

    monkeypatch.setattr(zo_diagnostics, "gradient_estimate_variance", boom)
    row = execute(_spec("sdze", diagnostics=True))
    assert row["status"] == "ok"
    assert row["diagnostics"]["gradient_variance"] == {"error": "RuntimeError: planted"}
    assert row["diagnostics"][zo_diagnostics.QUOTIENT_KEY]  # the other diagnostic still ran


def test_diagnostics_are_outside_the_peaks(monkeypatch):
    """A diagnostic that allocates 400 MB does not show in the cell's peak memory."""
    from pinnbench import memory

    if not memory.cpu_peak_resettable():
        pytest.skip("the CPU peak cannot be reset on this system")
    big = 400 * 2**20

    def hog(solver, problem, model, spec):
        x = torch.ones(big // 4)
        return {"sum": float(x.sum())}

    monkeypatch.setattr(diagnostics, "collect_diagnostics", hog)
    row = execute(_spec("sdze", diagnostics=True))
    assert row["diagnostics"] == {"sum": big // 4}
    assert row["peak_cpu_bytes"] < row["baseline_cpu_bytes"] + big // 2


def test_run_and_ablate_diagnostics_reach_the_store(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    common = ["--problems", TINY["problem"], "--dims", "20", "--steps", "3", "--width", "8",
              "--depth", "2", "--threads", "1", "--no-floors", "--no-report", "--quiet",
              "--store", str(store)]
    assert main(["run", "--solvers", "sdze[q=1],bp", "--diagnostics", *common]) == 0, \
        capsys.readouterr().err
    rows = {r["solver_name"]: r for r in load_results(store).to_dict("records")}
    assert rows["sdze"]["diagnostics"][zo_diagnostics.QUOTIENT_KEY]
    assert "not_applicable" in rows["bp"]["diagnostics"]
    assert main(["run", "--solvers", "sdze[q=1]", *common]) == 0
    df = load_results(store)
    assert df["diagnostics"].isna().sum() == 1  # the run without --diagnostics
    # ablate passes the option through to run
    from pinnbench.cli import ablate_argv
    assert "--diagnostics" in ablate_argv("sdze", ["--diagnostics"])


def test_tf32_on_cpu_is_a_usage_error(tmp_path, capsys):
    code = main(["run", "--problems", TINY["problem"], "--dims", "20", "--solvers", "sdze",
                 "--device", "cpu", "--tf32", "--store", str(tmp_path / "s.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--tf32" in err and "CUDA cells only" in err, err
    assert not (tmp_path / "s.sqlite").exists()


def test_a_store_without_the_column_gets_it_and_decodes_it(tmp_path, monkeypatch):
    """A store written before ``diagnostics`` existed: old rows read as null, a new row's dict
    is stored as JSON and read back as the same dict."""
    import pinnbench.cells.store as store_mod
    from pinnbench.cells.schema import COLUMNS
    from pinnbench.cells.store import Store

    path = tmp_path / "old.sqlite"
    row = execute(_spec("sdze[q=1]", diagnostics=True))
    monkeypatch.setattr(store_mod, "COLUMNS", {k: v for k, v in COLUMNS.items()
                                               if k != "diagnostics"})
    st = Store(path)
    st.begin_run("r1", "pinnbench run", "2024-01-01T00:00:00+00:00", [], {})
    st.write_row({**{k: v for k, v in row.items() if k != "diagnostics"}, "run_id": "r1",
                  "cell_id": "old"})
    st.close()
    monkeypatch.setattr(store_mod, "COLUMNS", COLUMNS)
    st = Store(path)
    st.write_row({**row, "run_id": "r1", "cell_id": "new"})
    st.close()
    df = load_results(path).set_index("cell_id")
    assert df.loc["old", "diagnostics"] is None
    assert df.loc["new", "diagnostics"] == json.loads(json.dumps(row["diagnostics"]))
