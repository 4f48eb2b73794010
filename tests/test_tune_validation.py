"""The validation set that tuning selects on (docs/tuning.md): its own random stream, never a row
of the test set; evaluated on request after training (``final_val_rel_l2``), outside the cell's
identity; and the CPU time beside the wall time of every curve point."""

import math
import sqlite3

import pytest
import torch

import pinnbench
from pinnbench.cells.cellspec import CellSpec
from pinnbench.judge.metrics import evaluate
from pinnbench.maths.problem import TEST_STREAM, VALIDATION_STREAM
from pinnbench.cells.store import Store, load_results


def _rows(chunks) -> tuple[set[bytes], int]:
    rows, n = set(), 0
    for x, _ in chunks:
        for r in x.cpu().numpy():
            rows.add(r.tobytes())
            n += 1
    return rows, n


@pytest.mark.parametrize("problem,dim", [("poisson-2body-v1", 4), ("heat-v1", 3)])
def test_validation_points_share_no_row_with_the_test_set(problem, dim):
    p = pinnbench.make_problem(problem, dim=dim, seed=0)
    test, n_test = _rows(p.test_chunks())
    val, n_val = _rows(p.validation_chunks())
    assert n_test == p.n_test and n_val == p.n_validation == n_test
    assert len(val) == n_val  # no repeated row either
    assert test.isdisjoint(val)  # exact comparison, every coordinate
    # the same points on every call (a fixed set)
    assert _rows(p.validation_chunks())[0] == val


def test_validation_stream_is_no_seeds_test_stream():
    """The seed of a cell's validation generator is never the test-set generator of any seed
    (a shared seed would give the same points whatever the stream's name)."""
    seeds = range(0, 3000)
    p = {s: pinnbench.make_problem("poisson-2body-v1", dim=2, seed=s) for s in (0, 1)}
    assert p[0].cpu_generator(VALIDATION_STREAM).initial_seed() != \
        p[0].cpu_generator(TEST_STREAM).initial_seed()

    def seed_of(seed, stream):
        h = int.from_bytes(stream.encode(), "little") % (2**31)
        return (seed * 1_000_003 + h) % (2**63 - 1)

    assert seed_of(1, VALIDATION_STREAM) == p[1].cpu_generator(VALIDATION_STREAM).initial_seed()
    test_seeds = {seed_of(s, TEST_STREAM) for s in seeds}
    assert not test_seeds & {seed_of(s, VALIDATION_STREAM) for s in seeds}


def test_evaluate_on_the_validation_split():
    p = pinnbench.make_problem("poisson-2body-v1", dim=3, seed=1)
    model = pinnbench.make_model(p, width=8, depth=1, generator=torch.Generator().manual_seed(0))
    on_test, on_val = evaluate(model, p), evaluate(model, p, split="validation")
    # by hand, from the validation chunks
    num = den = 0.0
    for x, u in p.validation_chunks():
        with torch.no_grad():
            num += float(((model(x) - u) ** 2).sum())
        den += float((u * u).sum())
    assert on_val["rel_l2"] == pytest.approx(math.sqrt(num / den), rel=1e-6)
    assert on_val["rel_l2"] != on_test["rel_l2"]
    assert on_val["rel_l2_lo"] < on_val["rel_l2"] < on_val["rel_l2_hi"]
    with pytest.raises(ValueError, match="unknown split"):
        evaluate(model, p, split="train")


CELL = {"problem": "poisson-2body-v1", "dim": 3, "solver": "bp", "steps": 5, "width": 8,
        "depth": 1, "floors": False, "threads": 1}


def test_a_cell_records_its_validation_error_only_when_asked():
    plain = pinnbench.run_cell(CELL, isolated=False)
    asked = pinnbench.run_cell({**CELL, "validation": True, "tuning_trial": "s#3"},
                               isolated=False)
    assert CellSpec.from_dict(CELL).cell_id == CellSpec.from_dict(
        {**CELL, "validation": True, "tuning_trial": "s#3"}).cell_id  # not the identity
    assert plain["final_val_rel_l2"] is None
    assert asked["final_rel_l2"] == plain["final_rel_l2"]  # same training
    p = pinnbench.make_problem("poisson-2body-v1", dim=3, seed=0)
    assert asked["final_val_rel_l2"] != asked["final_rel_l2"]
    assert asked["final_val_rel_l2_lo"] < asked["final_val_rel_l2"] < asked["final_val_rel_l2_hi"]
    assert asked["provenance"]["tuning_trial"] == "s#3"
    assert "tuning_trial" not in plain["provenance"]
    assert p.n_validation == p.n_test


def test_every_curve_point_has_its_cpu_time():
    row = pinnbench.run_cell(CELL, isolated=False)
    cpu = [c["cpu_time_s"] for c in row["curve"]]
    wall = [c["time_s"] for c in row["curve"]]
    assert cpu[0] == 0.0 and cpu[-1] > 0.0
    assert all(b >= a for a, b in zip(cpu, cpu[1:]))
    # one thread: the process's CPU time in the steps cannot much exceed their wall time
    assert cpu[-1] <= 1.5 * wall[-1] + 0.05


def test_a_store_without_the_validation_columns_still_loads(tmp_path):
    path = tmp_path / "old.sqlite"
    Store(path).close()
    con = sqlite3.connect(path)
    for col in ("final_val_rel_l2", "final_val_rel_l2_lo", "final_val_rel_l2_hi"):
        con.execute(f'ALTER TABLE results DROP COLUMN "{col}"')
    con.execute("INSERT INTO results (run_id, cell_id, status) VALUES ('r', 'c', 'ok')")
    con.commit()
    con.close()
    df = load_results(path)
    assert len(df) == 1 and math.isnan(df["final_val_rel_l2"].iloc[0])
    Store(path).close()  # opening it for writing adds the columns
    assert "final_val_rel_l2" in {r[1] for r in sqlite3.connect(path).execute(
        "PRAGMA table_info(results)")}
