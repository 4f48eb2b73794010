"""The plan a run prints before any cell starts (pinnbench/commands/plan.py): the estimate's arithmetic
checked by hand, the mark on a cell that cannot fit, --dry-run leaving the store untouched, the
ETA, and the scale preset against the committed page's command."""

import json
import re
import shlex
from pathlib import Path

import pytest

from pinnbench.commands import plan as plan_mod
from pinnbench.cli import main
from pinnbench.cells.store import Store, load_results

FAKES = str(Path(__file__).with_name("fake_solvers.py"))
REPO = Path(__file__).resolve().parent.parent
FAKE_RUN = ["run", "--problems", "fake-affine-v1", "--solvers", "fake-ok", "--dims", "3",
            "--steps", "3", "--width", "8", "--depth", "1", "--import", FAKES, "--no-report"]
GiB = 2**30


def _spec(solver, dim=10**7, **kw):
    from pinnbench.cells.cellspec import normalize_spec

    return normalize_spec({"problem": "poisson-2body-scaled-v1", "dim": dim, "solver": solver,
                           **kw})


# -- the estimate's arithmetic, by hand --------------------------------------------------------------
def test_memory_model_at_1e7_by_hand():
    # P = D h + h + (L - 1)(h^2 + h) + h + 1 = 1e7 * 128 + 128 + 2 * 16,512 + 129
    p = 1_280_000_000 + 128 + 33_024 + 129
    assert plan_mod.n_params(10**7, 128, 3) == p == 1_280_033_281
    batch = (100 + 16) * 10**7 * 4  # points + probes, float32
    assert plan_mod.memory_parts(_spec("bp"), baseline_bytes=300) == {
        "baseline": 300, "params": 4 * p, "state": 3 * 4 * p, "batch": batch}  # grad + Adam
    # the momentum update's block: 44 live terms x r = 7 rows x 2^22 // 7 columns, float32
    block = 44 * 7 * 599_186 * 4
    assert plan_mod.memory_parts(_spec("sdze"), 0) == {
        "baseline": 0, "params": 4 * p, "state": 10**7 * 7 * 4 + block,  # held V, r = 7
        "batch": batch}
    assert plan_mod.memory_parts(_spec("sdze[stream=true]"), 0) == {
        "baseline": 0, "params": 4 * p, "state": block, "batch": 0}
    assert plan_mod.memory_parts(_spec("sdze[momentum=0]"), 0)["state"] == 10**7 * 7 * 4
    assert plan_mod.memory_parts(_spec("zo"), 0)["state"] == 0  # tuned: no momentum, seeds
    assert plan_mod.memory_parts(_spec("zo[momentum=0.9]"), 0)["state"] == 4 * p  # dense
    assert plan_mod.memory_parts(_spec("bp[loss=unbiased]", dtype="float64"), 0)["batch"] \
        == (100 + 2 * 16) * 10**7 * 8
    # bp does not fit the 20 GiB cap of reports/cpu-1e3-1e7 (it asked for 5.1 GB more at 19.07)
    assert sum(plan_mod.memory_parts(_spec("bp"), 0).values()) / GiB == pytest.approx(23.4, abs=0.05)


def test_time_from_two_calibration_points_by_hand():
    setup = plan_mod.Line.through([(1000, 0.5), (10000, 1.4)])  # 0.4 + 1e-4 d
    step = plan_mod.Line.through([(1000, 0.1), (10000, 0.19)])  # 0.09 + 1e-5 d
    assert (setup.a, setup.b) == pytest.approx((0.4, 1e-4))
    assert (step.a, step.b) == pytest.approx((0.09, 1e-5))
    cal = plan_mod.Calibration((1000, 10000), setup, step)
    spec = _spec("sdze", steps=10, timeout_s=3000.0)
    est = plan_mod.estimate(spec, cal, None, baseline_bytes=0)
    assert est.time_s == pytest.approx((0.4 + 1000) + 10 * (0.09 + 100))  # 1,001.3 + 1,000.9
    assert "calibration at d = 1000 and 10000, extrapolated" in est.time_source
    # a time budget caps the training part; a slope that falls with d is noise, not a trend
    budget = _spec("sdze", steps=10, time_budget_s=5.0)
    assert plan_mod.estimate(budget, cal, None, 0).time_s == pytest.approx(1000.4 + 5.0)
    assert plan_mod.Line.through([(10, 2.0), (100, 1.0)]) == plan_mod.Line(1.0, 0.0)


def test_history_of_the_same_spec_and_machine_wins():
    spec = _spec("sdze", dim=1000, steps=500, threads=1)
    row = {**spec, "time_per_step_s": 0.1, "setup_time_s": 2.0, "steps_done": 10,
           "total_time_s": 2.0 + 10 * 0.1 + 3.0, "peak_cpu_bytes": 5 * GiB,
           "provenance": {"host": "h", "cpu": "c", "torch_threads": 1}}
    other_machine = {**row, "provenance": {"host": "g", "cpu": "c", "torch_threads": 1}}
    plan = plan_mod.make_plan([spec], free_bytes=None, baseline_bytes=0,
                              stored_rows=[row, other_machine], machine=("h", "c"),
                              calibrations={})
    est = plan.cells[0].estimate
    assert est.time_s == pytest.approx(2.0 + 500 * 0.1 + 3.0)  # set-up + steps x step + rest
    assert est.time_source == "history (1 cell on this machine)"
    assert (est.peak_bytes, est.memory_source) == (5 * GiB, "history")


# -- what the plan does with a cell that cannot fit or finish -----------------------------------------
def test_cells_that_cannot_fit_or_finish_are_marked():
    est = plan_mod.Estimate(100.0, "t", 24 * GiB, "model")
    bp = _spec("bp", timeout_s=600.0)
    action, why = plan_mod.decide(bp, est, free_bytes=21 * GiB, baseline_bytes=GiB // 4)
    assert action == "skip" and "estimated peak 24 GiB > 21 GiB free memory" in why
    capped = _spec("bp", timeout_s=600.0, memory_limit_bytes=20 * GiB)
    action, why = plan_mod.decide(capped, est, free_bytes=21 * GiB, baseline_bytes=GiB // 4)
    assert action == "oom" and "--memory-limit 20 GiB" in why
    above = _spec("bp", timeout_s=600.0, memory_limit_bytes=22 * GiB)  # a cap above the free
    assert plan_mod.decide(above, est, 21 * GiB, GiB // 4)[0] == "skip"
    slow = plan_mod.Estimate(601.0, "t", GiB, "model")
    action, why = plan_mod.decide(bp, slow, 21 * GiB, 0)
    assert action == "timeout" and "10 min" in why
    assert plan_mod.decide(bp, plan_mod.Estimate(599.0, "t", GiB, "model"), 21 * GiB, 0) \
        == ("run", "")
    plan = plan_mod.Plan([plan_mod.PlannedCell(bp, slow, "timeout"),
                          plan_mod.PlannedCell(bp, est, "skip")], 21 * GiB, None, 600.0)
    assert plan.expected_s() == 600.0  # capped at the timeout; the skipped cell costs nothing


def test_a_cell_that_cannot_fit_is_stored_skipped_with_the_reason(tmp_path, monkeypatch, capsys):
    from pinnbench import memory

    monkeypatch.setattr(memory, "available_host_bytes", lambda: 1000)  # 1000 bytes free
    store = tmp_path / "s.sqlite"
    assert main(FAKE_RUN + ["--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "SKIP" in out and "free memory (no --memory-limit)" in out, out
    (row,) = load_results(store).to_dict("records")
    assert row["status"] == "skipped" and row["message"].startswith("plan: estimated peak"), row


# -- --dry-run ------------------------------------------------------------------------------------
def test_dry_run_prints_the_plan_and_leaves_the_store_untouched(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    st = Store(store)
    st.begin_run("r0", "pinnbench run", "2024-01-01T00:00:00+00:00", [], {})
    st.close()
    before = store.read_bytes()
    assert main(FAKE_RUN + ["--dims", "3,30", "--store", str(store), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "plan: 2 cells" in out and "calibration at d = 3 and 30" in out, out
    assert "dry run: nothing run" in out
    assert store.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"]
    fresh = tmp_path / "new" / "s.sqlite"  # nor is a store or its folder created
    assert main(FAKE_RUN + ["--store", str(fresh), "--mkdir", "--dry-run", "--json"]) == 0
    event = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert event["event"] == "plan" and event["cells"][0]["action"] == "run"
    assert event["cells"][0]["time_s"] > 0 and event["cells"][0]["peak_bytes"] > 0
    assert not fresh.parent.exists()


# -- the ETA --------------------------------------------------------------------------------------
def test_eta_scales_the_estimates_left_by_how_the_finished_ones_fared():
    from pinnbench.report.console import Eta

    eta = Eta({"a": 10.0, "b": 20.0, "c": None})  # c counts as the mean of the others, 15
    assert eta.remaining_s() == pytest.approx(45.0)
    eta.finished("a", 20.0)  # took twice its estimate
    assert eta.remaining_s() == pytest.approx(2 * (20.0 + 15.0))
    assert eta.text() == "ETA 1 min"
    eta.finished("b", 10.0)  # (20 + 10) / (10 + 20) = 1
    assert eta.remaining_s() == pytest.approx(15.0)
    assert Eta({"a": None}).remaining_s() is None


# -- the scale preset -------------------------------------------------------------------------------
def test_the_scale_preset_is_the_committed_pages_command():
    from pinnbench.cli import build_parser
    from pinnbench.commands.run_options import apply_preset as _apply_preset
    from pinnbench.commands.presets import PRESETS

    text = (REPO / "reports" / "cpu-1e3-1e7" / "README.md").read_text()
    command = re.search(r"```\n(pinnbench run .*?)\n```", text, re.S).group(1)
    words = shlex.split(command.replace("\\\n", " "))[2:]
    flags = dict(zip(words[::2], words[1::2]))
    for where in ("--store", "--report-dir"):
        flags.pop(where)
    assert dict(zip(PRESETS["scale"][::2], PRESETS["scale"][1::2])) == flags
    parser = build_parser()
    args = parser.parse_args(["run", "--preset", "scale", "--steps", "5"])
    _apply_preset(args, lambda options: parser.parse_args(["run", *options]))
    assert args.steps == 5  # what the command line gives wins
    assert (args.dims, args.threads, args.memory_limit, args.timeout) == \
        ("1e3..1e7", 1, 20 * GiB, 3000.0)
