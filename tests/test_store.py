"""The SQLite store: schema round trip, resume bookkeeping, recognising bad files."""

import math
import sqlite3
from pathlib import Path

import pytest

from pinnbench.cells.schema import COLUMNS
from pinnbench.cells.store import Store, StoreError, check_store, list_runs, load_results


def _row(run_id, cell_id, status="ok", **kw):
    row = {k: None for k in COLUMNS}
    row.update(run_id=run_id, cell_id=cell_id, problem="p-v1", dim=10, solver="s[a=1]",
               solver_name="s", solver_params={"a": 1}, seed=0, steps=5, status=status,
               message="", curve=[{"step": 1, "rel_l2": 0.5}], provenance={"host": "h"},
               time_per_step_s=0.25, final_rel_l2=float("nan"), n_params=7)
    row.update(kw)
    return row


def test_round_trip_has_exactly_the_schema_columns(tmp_path):
    path = tmp_path / "s.sqlite"
    st = Store(path)
    st.begin_run("r1", "pinnbench run", "2024-01-01T00:00:00+00:00", [{"x": 1}], {})
    st.write_row(_row("r1", "c1"))
    st.write_row(_row("r1", "c2", status="error", dim=100))
    st.finish_run("r1", "2024-01-01T00:01:00+00:00", "finished")
    st.close()
    df = load_results(path)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 2
    r = df.iloc[0]
    assert r["solver_params"] == {"a": 1}
    assert r["curve"] == [{"step": 1, "rel_l2": 0.5}]
    assert r["time_per_step_s"] == 0.25 and r["n_params"] == 7
    assert math.isnan(r["final_rel_l2"])  # NaN/None -> NaN
    assert str(df["dim"].dtype) == "Int64" and list(df["dim"]) == [10, 100]
    assert list(load_results(path, run_id="nope")["cell_id"]) == []
    runs = list_runs(path)
    assert runs[0]["run_id"] == "r1" and runs[0]["n_cells"] == 2 and runs[0]["status"] == "finished"


def test_done_cells_excludes_errors_and_rewrite_replaces(tmp_path):
    st = Store(tmp_path / "s.sqlite")
    st.begin_run("r1", "c", "t", [], {})
    for i, status in enumerate(("ok", "oom", "timeout", "diverged", "skipped", "error")):
        st.write_row(_row("r1", f"c{i}", status=status))
    assert st.done_cells("r1") == {"c0", "c1", "c2", "c3", "c4"}
    st.write_row(_row("r1", "c5", status="ok"))  # the errored cell re-run
    assert st.done_cells("r1") == {f"c{i}" for i in range(6)}
    assert st.con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 6
    assert st.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    st.close()


def test_check_store_rejects_bad_files_without_writing(tmp_path):
    garbage = tmp_path / "g.sqlite"
    garbage.write_bytes(b"this is not a database at all" * 10)
    other = tmp_path / "o.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="not a SQLite database"):
        check_store(garbage)
    with pytest.raises(StoreError, match="not a pinnbench store"):
        check_store(other)
    with pytest.raises(StoreError, match="is a directory"):
        check_store(tmp_path)
    with pytest.raises(StoreError, match="no store"):
        check_store(tmp_path / "missing.sqlite", must_exist=True)
    assert other.read_bytes() == before
    with pytest.raises(StoreError, match="does not exist; create it, or add --mkdir"):
        check_store(tmp_path / "new" / "deeper" / "s.sqlite")  # no folders unless asked
    check_store(tmp_path / "new" / "deeper" / "s.sqlite", mkdir=True)  # creatable: fine
    assert not (tmp_path / "new").exists()


def test_a_store_at_rest_is_one_file_and_readers_leave_none(tmp_path):
    """Closed, a store is one file; reading it (in WAL or rollback-journal mode) creates no
    -wal/-shm; and a reader still sees rows a live writer has committed to its WAL and not yet
    checkpointed (the immutable shortcut is never taken while a -wal exists)."""
    path = tmp_path / "s.sqlite"
    st = Store(path)
    st.begin_run("r1", "pinnbench run", "2024-01-01T00:00:00+00:00", [], {})
    st.write_row(_row("r1", "c1"))
    assert Path(f"{path}-wal").exists()  # while open: WAL
    assert list(load_results(path)["cell_id"]) == ["c1"]  # committed, in the WAL only
    st.write_row(_row("r1", "c2"))
    assert list(load_results(path)["cell_id"]) == ["c1", "c2"]
    st.close()
    for mode in ("wal", "delete"):
        con = sqlite3.connect(path)
        assert con.execute(f"PRAGMA journal_mode={mode}").fetchone() == (mode,)
        con.close()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"]
        assert list_runs(path)[0]["n_cells"] == 2 and len(load_results(path)) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.sqlite"], mode


def test_a_store_from_an_older_schema_is_read_and_extended(tmp_path, monkeypatch):
    """A store written before a column existed: load_results gives it as empty, and writing a
    new row adds the column instead of failing (no stored result is lost)."""
    import pinnbench.cells.store as store_mod

    path = tmp_path / "old.sqlite"
    newest = "baseline_gpu_allocated_bytes"
    assert newest in COLUMNS
    old_columns = {k: v for k, v in COLUMNS.items() if k != newest}
    monkeypatch.setattr(store_mod, "COLUMNS", old_columns)
    st = Store(path)
    st.begin_run("r1", "pinnbench run", "2024-01-01T00:00:00+00:00", [], {})
    st.write_row({k: v for k, v in _row("r1", "old").items() if k != newest})
    st.close()
    monkeypatch.setattr(store_mod, "COLUMNS", COLUMNS)
    df = load_results(path)
    assert list(df.columns) == list(COLUMNS) and df[newest].isna().all()
    st = Store(path)
    st.write_row(_row("r1", "new", **{newest: 123}))
    st.close()
    df = load_results(path)
    assert list(df["cell_id"]) == ["old", "new"]
    assert df[newest].isna().tolist() == [True, False] and int(df[newest].iloc[1]) == 123
