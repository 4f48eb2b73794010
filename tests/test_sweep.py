"""Planning, pruning after an OOM, and a sweep that survives SIGKILL and resumes."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pinnbench.cells.machine_load import default_threads
from pinnbench.cells.store import Store, load_results
from pinnbench.commands.axes import split_top_level
from pinnbench.cells.sweep import SweepConfig, execute_sweep, plan, with_points

FAKES = str(Path(__file__).with_name("fake_solvers.py"))
REPO = Path(__file__).resolve().parent.parent


def test_split_top_level_keeps_bracketed_commas():
    assert split_top_level("sdze[rank=4,eps=1e-3],bp[estimator=hte],zo") == \
        ["sdze[rank=4,eps=1e-3]", "bp[estimator=hte]", "zo"]
    for bad in ("a[b=1", "a]", "a,,b", ""):
        with pytest.raises(ValueError):
            split_top_level(bad)


def test_with_points_sets_only_missing_points():
    assert with_points("fake-ok[lr=0.1]", 7) == "fake-ok[lr=0.1,points=7]"
    assert with_points("fake-ok[points=3]", 7) == "fake-ok[points=3]"
    assert with_points("fake-ok", None) == "fake-ok"


def test_plan_orders_by_dimension_and_validates(monkeypatch):
    import fake_solvers  # noqa: F401 - registers the fakes here
    from pinnbench.cells import machine_load

    monkeypatch.setattr(machine_load, "load_average", lambda: 0.0)

    cells = plan(SweepConfig(problems=["fake-affine-v1"], solvers=["fake-ok", "fake-nan"],
                             dims=[10, 3], seeds=[0, 1], steps=5, imports=[FAKES], jobs=2))
    assert [c["dim"] for c in cells] == [3] * 4 + [10] * 4
    assert len({c["solver"] for c in cells}) == 2 and {c["seed"] for c in cells} == {0, 1}
    assert all(c["threads"] == default_threads(2) for c in cells)
    with pytest.raises(ValueError, match="did you mean"):
        plan(SweepConfig(problems=["fake-affine-v1"], solvers=["fake-okk"], dims=[3]))


def test_oom_prunes_larger_dims(tmp_path):
    cells = plan(SweepConfig(problems=["fake-affine-v1"], solvers=["fake-oom"], dims=[3, 10, 30],
                             steps=2, width=8, depth=1, imports=[FAKES],
                             memory_limit_bytes=2**30, floors=False))
    st = Store(tmp_path / "s.sqlite")
    st.begin_run("r", "c", "t", cells, {})
    rows = execute_sweep(cells, run_id="r", write=st.write_row)
    st.close()
    assert [r["status"] for r in rows] == ["oom", "skipped", "skipped"]
    assert all("ran out of memory at d = 3" in r["message"] for r in rows[1:])
    df = load_results(tmp_path / "s.sqlite")
    assert list(df["status"]) == ["oom", "skipped", "skipped"] and set(df["run_id"]) == {"r"}


def _rows(store):
    if not Path(store).exists():
        return []
    try:
        con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        try:
            return con.execute("SELECT cell_id, dim, status, finished_at, total_time_s "
                               "FROM results ORDER BY dim").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return []


def test_sigkill_mid_sweep_then_resume_loses_nothing_and_duplicates_nothing(tmp_path):
    store = tmp_path / "s.sqlite"
    args = [sys.executable, "-m", "pinnbench.cli", "run", "--problems", "fake-affine-v1",
            "--solvers", "fake-sleep[seconds=0.2]", "--dims", "3,4,5,6", "--steps", "3",
            "--width", "8", "--depth", "1", "--no-floors", "--import", FAKES,
            "--store", str(store), "--quiet", "--no-report"]
    proc = subprocess.Popen(args, cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 90
    while len(_rows(store)) < 1:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the planner and its cell, as a kill -9 of the group
    proc.wait()
    before = _rows(store)
    assert 1 <= len(before) < 4
    done = subprocess.run(args + ["--resume"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    after = _rows(store)
    assert [r[1] for r in after] == [3, 4, 5, 6]  # every cell once
    assert len({r[0] for r in after}) == 4
    assert all(r[2] == "ok" for r in after)
    assert after[:len(before)] == before  # finished cells were kept, not re-run
    con = sqlite3.connect(store)
    assert con.execute("SELECT COUNT(*), MAX(status) FROM runs").fetchone() == (1, "finished")
    con.close()


def test_the_planner_beats_while_cells_run(tmp_path):
    cells = plan(SweepConfig(problems=["fake-affine-v1"], solvers=["fake-sleep[seconds=0.3]"],
                             dims=[3], steps=3, width=8, depth=1, imports=[FAKES], floors=False))
    beats = []
    rows = execute_sweep(cells, run_id="r", write=lambda row: None,
                         heartbeat=lambda: beats.append(time.monotonic()), heartbeat_s=0.0)
    assert [r["status"] for r in rows] == ["ok"] and len(beats) >= 2


def test_cells_on_other_machines_keep_their_own_thread_default():
    cells = plan(SweepConfig(problems=["fake-affine-v1"], solvers=["fake-ok"], dims=[3],
                             imports=[FAKES], auto_threads=False))
    assert [c["threads"] for c in cells] == [None]


def test_timed_out_and_oom_cells_get_their_keys_floors(tmp_path, monkeypatch):
    """A cell that ends before computing its floors gets them from the planner: from a cell of
    the same (problem, d, seed, dtype) that computed them, else computed once in a process."""
    import pinnbench.cells.isolation as isolation
    from pinnbench.cells.cell import import_plugins
    from pinnbench.judge.floors import floors_for

    import_plugins([FAKES])
    spawned = []
    real = isolation.measure_isolated
    monkeypatch.setattr(isolation, "measure_isolated",
                        lambda *a, **k: spawned.append(a[0]) or real(*a, **k))
    cells = plan(SweepConfig(problems=["fake-affine-v1"], dims=[3, 4], steps=2, width=8, depth=1,
                             solvers=["fake-ok", "fake-sleep[seconds=60]"], imports=[FAKES],
                             timeout_s=30))  # fake-ok must finish: its start-up took > 8 s at load 6
    rows = execute_sweep(cells, run_id="r", write=lambda row: None)
    by = {(r["dim"], r["solver_name"]): r for r in rows}
    assert {r["status"] for r in rows} == {"ok", "timeout"}
    for dim in (3, 4):
        ok, late = by[(dim, "fake-ok")], by[(dim, "fake-sleep")]
        assert late["status"] == "timeout" and ok["floor_const_rel_l2"] is not None
        assert late["floor_const_rel_l2"] == ok["floor_const_rel_l2"]
    assert spawned == []  # every timed-out cell's key had an ok cell first
    alone = plan(SweepConfig(problems=["fake-affine-v1"], dims=[5], steps=2, width=8, depth=1,
                             solvers=["fake-sleep[seconds=60]"], imports=[FAKES], timeout_s=8))
    (row,) = execute_sweep(alone, run_id="r2", write=lambda row: None)
    assert row["status"] == "timeout" and spawned == ["pinnbench.cells.sweep:_floors_in_child"]
    assert row["floor_const_rel_l2"] == floors_for("fake-affine-v1", 5, 0)["floor_const_rel_l2"]


def test_each_cell_is_validated_once_by_the_plan_and_the_cli_only_maps(monkeypatch):
    """Issue 15 item 1: the command line is mapped onto a SweepConfig without looking up
    problems or solvers; ``plan`` validates each cell once (CellSpec.from_dict); its cells
    carry the per-cell switches (diagnostics, tf32) from the config."""
    import pinnbench.cells.cellspec as cellspec
    import pinnbench.maths.problem_registry as registry
    import pinnbench.solver as solver_mod
    from pinnbench import cli
    from pinnbench.commands import run_options

    def forbidden(*a, **k):
        raise AssertionError("the CLI validated a cell itself")

    args = cli.build_parser().parse_args(
        ["run", "--problems", "poisson-2body-v1", "--solvers", "sdze,bp", "--dims", "10,20",
         "--seeds", "0,1", "--diagnostics"])
    with monkeypatch.context() as m:
        m.setattr(registry, "problem_class", forbidden)
        m.setattr(solver_mod, "solver_from_spec", forbidden)
        config = run_options.sweep_config(args)
    calls = []
    real = cellspec.normalize_spec
    monkeypatch.setattr(cellspec, "normalize_spec", lambda s: calls.append(1) or real(s))
    cells = plan(config)
    assert len(cells) == len(calls) == 2 * 2 * 2
    assert all(c["diagnostics"] is True and c["tf32"] is False for c in cells)


def test_a_bad_cell_in_the_plan_is_a_usage_error_naming_it(tmp_path):
    from pinnbench import cli
    from pinnbench.commands import run as run_cli

    code = cli.main(["run", "--problems", "poisson-2body-v1", "--solvers", "sdze[rank=0]",
                     "--dims", "10", "--store", str(tmp_path / "s.sqlite"), "--quiet"])
    assert code == 2
    assert not (tmp_path / "s.sqlite").exists() or load_results(str(tmp_path / "s.sqlite")).empty
