"""The Dask executor: the same cells, statuses and errors as the local pool; a worker killed mid-cell
still ends the sweep with every cell accounted for; the CLI's --executor dask options, usage errors
and --resume. Needs dask[distributed] (pip install 'pinnbench[dask]'); worker processes and cell
processes are spawned, so the file takes ~1 minute on two loaded cores."""

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip(
    "distributed", reason="dask[distributed] is not installed (pip install 'pinnbench[dask]')")

from pinnbench.cells import executors  # noqa: E402
from pinnbench.cells.cell import cell_id  # noqa: E402
from pinnbench.cli import main  # noqa: E402
from pinnbench.cells.executors import DaskExecutor, LocalExecutor, local_cluster  # noqa: E402
from pinnbench.cells.store import Store, load_results  # noqa: E402
from pinnbench.cells.sweep import SweepConfig, execute_sweep, plan  # noqa: E402

FAKES = str(Path(__file__).with_name("fake_solvers.py"))


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, one thread each (what `--local-workers 2` starts)."""
    c = local_cluster(2)
    yield c
    c.close()


def _sweep(executor, cells, store):
    st = Store(store)
    st.begin_run("r", "test", "t", cells, {})
    try:
        return execute_sweep(cells, run_id="r", write=st.write_row, executor=executor)
    finally:
        st.close()


def test_dask_gives_the_same_cells_statuses_and_errors_as_the_local_pool(cluster, tmp_path):
    cells = plan(SweepConfig(problems=["fake-affine-v1"], dims=[4], steps=6, width=8, depth=1,
                             solvers=["fake-ok[lr=0.1]", "fake-nan", "fake-crash", "fake-skip"],
                             imports=[FAKES], floors=False))
    with LocalExecutor(2) as ex:
        local = _sweep(ex, cells, tmp_path / "local.sqlite")
    client = distributed.Client(cluster, set_as_default=False)
    with DaskExecutor(client) as ex:
        assert ex.capacity(cells[0]) == 2  # two workers x one thread
        remote = _sweep(ex, cells, tmp_path / "dask.sqlite")
        worker_pids = set(client.run(os.getpid).values())
        worker_addresses = set(ex.workers())

    by_id = {r["cell_id"]: r for r in local}
    assert {r["cell_id"] for r in remote} == set(by_id) == {cell_id(c) for c in cells}
    assert sorted(r["status"] for r in remote) == ["diverged", "error", "ok", "skipped"]
    for r in remote:
        ref = by_id[r["cell_id"]]
        assert r["status"] == ref["status"], r["solver"]
        assert r["message"] == ref["message"]
        assert r["steps_done"] == ref["steps_done"]
        assert r["final_rel_l2"] == ref["final_rel_l2"]  # deterministic on CPU, bit for bit
        assert [c["rel_l2"] for c in r["curve"]] == [c["rel_l2"] for c in ref["curve"]]
        # torch's default threads, as locally: not the nanny's OMP_NUM_THREADS=1
        assert r["provenance"]["threads"] == ref["provenance"]["threads"]
        # each cell ran in its own process on a worker, not in the worker itself
        assert r["provenance"]["pid"] not in worker_pids
        assert r["provenance"]["dask_worker"] in worker_addresses
    ok = next(r for r in remote if r["status"] == "ok")
    assert ok["final_rel_l2"] < 0.9 * ok["curve"][0]["rel_l2"]  # it trained
    # the planner wrote every row, once
    df = load_results(tmp_path / "dask.sqlite")
    assert sorted(df["cell_id"]) == sorted(by_id) and set(df["run_id"]) == {"r"}


def _store_rows(store):
    con = sqlite3.connect(store)
    try:
        return con.execute("SELECT cell_id, solver_name, status, finished_at FROM results "
                           "ORDER BY solver_name").fetchall()
    finally:
        con.close()


def test_cli_on_a_running_scheduler_and_resume(cluster, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    args = ["run", "--problems", "fake-affine-v1", "--solvers", "fake-ok,fake-crash", "--dims", "3",
            "--steps", "3", "--width", "8", "--depth", "1", "--no-floors", "--import", FAKES,
            "--store", str(store), "--no-report", "--quiet",
            "--executor", "dask", "--scheduler", cluster.scheduler_address]
    assert main(args) == 1  # fake-crash is an error
    first = _store_rows(store)
    assert [(r[1], r[2]) for r in first] == [("fake-crash", "error"), ("fake-ok", "ok")]
    con = sqlite3.connect(store)
    prov = con.execute("SELECT provenance FROM runs").fetchone()[0]
    con.close()
    assert f"dask {cluster.scheduler_address}" in prov
    time.sleep(1.1)  # finished_at has a resolution of one second
    assert main(args + ["--resume"]) == 1  # only the error cell is run again
    second = _store_rows(store)
    assert second[1] == first[1]  # the ok cell was kept, not re-run
    assert second[0][:3] == first[0][:3] and second[0][3] > first[0][3]
    assert "fake-crash: boom" in capsys.readouterr().err


def test_a_worker_killed_mid_cell_gives_an_error_row_and_the_sweep_ends(tmp_path):
    cells = plan(SweepConfig(problems=["fake-affine-v1"], solvers=["fake-sleep[seconds=0.5]"],
                             dims=[3, 4, 5], steps=6, width=8, depth=1, imports=[FAKES],
                             threads=1, floors=False))
    c = local_cluster(2, retries=0)  # no retry: the first death of its worker fails the cell
    client = distributed.Client(c, set_as_default=False)
    killed: dict = {}

    def kill_the_worker_of_d3():
        pids = client.run(os.getpid)
        import psutil

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for addr, keys in client.processing().items():
                if any("-d3-" in str(k) for k in keys):
                    cell_procs = psutil.Process(pids[addr]).children(recursive=True)
                    if cell_procs:  # the cell process is running on it: kill the worker
                        killed.update(addr=addr, cells=[p.pid for p in cell_procs])
                        os.kill(pids[addr], signal.SIGKILL)
                        return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_worker_of_d3, daemon=True)
    killer.start()
    t0 = time.monotonic()
    try:
        with DaskExecutor(client, c) as ex:
            rows = _sweep(ex, cells, tmp_path / "s.sqlite")
    finally:
        killer.join(5)
    assert killed, "the worker was not killed: the test did not test anything"
    assert time.monotonic() - t0 < 80
    assert sorted(r["dim"] for r in rows) == [3, 4, 5]  # every cell accounted for, once
    status = {r["dim"]: r for r in rows}
    assert status[3]["status"] == "error" and "worker running this cell died" in \
        status[3]["message"], status[3]["message"]
    assert status[4]["status"] == status[5]["status"] == "ok"
    assert sorted(load_results(tmp_path / "s.sqlite")["dim"]) == [3, 4, 5]
    # the cell process died with its worker (PR_SET_PDEATHSIG): no orphan left running
    import psutil

    time.sleep(0.5)
    assert not [p for p in killed["cells"] if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_cells_fail_instead_of_waiting_forever_on_a_cluster_without_workers(tmp_path):
    cells = plan(SweepConfig(problems=["fake-affine-v1"], solvers=["fake-ok"], dims=[3], steps=2,
                             width=8, depth=1, imports=[FAKES], floors=False))
    c = distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=":0")
    client = distributed.Client(c, set_as_default=False)
    with DaskExecutor(client, c, no_worker_timeout_s=1.0, info_every_s=0.2) as ex:
        t0 = time.monotonic()
        rows = _sweep(ex, cells, tmp_path / "s.sqlite")
        assert time.monotonic() - t0 < 10
    assert [r["status"] for r in rows] == ["error"]
    assert "no Dask worker" in rows[0]["message"]


COMMON = ["run", "--problems", "fake-affine-v1", "--solvers", "fake-ok", "--dims", "3",
          "--steps", "2", "--import", FAKES, "--no-report"]


@pytest.mark.parametrize("extra,message", [
    (["--executor", "dask"], "needs either --scheduler ADDRESS"),
    (["--executor", "dask", "--scheduler", "tcp://a:1", "--local-workers", "2"], "needs either"),
    (["--local-workers", "2"], "--local-workers needs --executor dask"),
    (["--executor", "dask", "--local-workers", "2", "--jobs", "2"], "--jobs is for the local"),
    (["--executor", "dask", "--scheduler", "localhost"], "bad scheduler address 'localhost'"),
    (["--executor", "dask", "--scheduler", "http://x:1"], "unknown protocol 'http'"),
    (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler"),
    (["--executor", "ray"], "invalid choice: 'ray'"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_executor_usage_errors_exit_2_with_one_line(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(executors, "CONNECT_TIMEOUT_S", 1.0)
    store = tmp_path / "s.sqlite"
    assert main(COMMON + extra + ["--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not store.exists()


def test_missing_dask_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(executors, "dask_available", lambda: False)
    assert main(COMMON + ["--executor", "dask", "--local-workers", "1",
                          "--store", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'pinnbench[dask]'" in err, err


def test_cells_on_a_default_nanny_get_torch_default_threads(monkeypatch):
    """A remote worker's nanny sets OMP_NUM_THREADS=1; the cell process must not inherit it (a
    value the user chose, different from the nanny's, is kept)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    executors._undo_nanny_thread_limits()
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "3"
