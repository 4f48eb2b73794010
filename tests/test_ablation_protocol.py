"""scripts/ablation_protocol.py (issue 21 item 6): every row tunes lr alone under one protocol,
every variant changes exactly one factor of a base on its problem, and the run stage gives
every row its seeds at equal steps."""

import importlib.util
import sys
from pathlib import Path

import pytest

from pinnbench.tuning.study import search_space

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ablation_protocol.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("ablation_protocol", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def test_every_row_searches_lr_alone(script):
    for row in script.rows():
        assert set(search_space(row.spec)) == {"lr"}, row.spec


def test_every_variant_changes_one_factor_of_a_base(script):
    rows = script.rows()
    bases = [r for r in rows if r.factor is None]
    for row in rows:
        if row.factor is None:
            continue
        found = [b for b in bases if b.problem == row.problem
                 and script.changed(row.spec, b.spec) == {row.factor}]
        assert found, row
    factors = {r.factor for r in rows}
    assert {"crns", "subspace", "momentum", "normalize", "rank", "refresh", "basis"} <= factors
    refresh = {r.spec.split("refresh=")[1].split(",")[0].rstrip("]") for r in rows
               if r.factor == "refresh"}
    assert refresh == {"10", "100", "1000"}  # and 1, the base
    # CRNS on the fourth-order problem and with the unbiased loss
    assert any(r.problem == script.FOURTH_ORDER and r.factor == "crns" for r in rows)
    assert any(r.factor == "crns" and "loss=unbiased" in r.spec for r in rows)


def test_one_tuning_protocol_and_every_rows_seeds_at_equal_steps(script, capsys):
    assert script.main(["--dry-run", "--steps-100", "5000", "--steps-1000", "2000"]) == 0
    lines = [l.split() for l in capsys.readouterr().out.splitlines()
             if l.split()[0].endswith("pinnbench")]
    tunes = [l for l in lines if l[1] == "tune"]
    runs = [l for l in lines if l[1] == "run"]

    def opt(line, name):
        return line[line.index(name) + 1]

    protocol = {tuple(opt(l, k) for k in ("--trials", "--seeds", "--steps", "--sampler",
                                          "--width")) for l in tunes}
    assert len(protocol) == 1  # the same trials, seeds, budget and sampler for every row
    tuned = {s for l in tunes for s in script_split(opt(l, "--solvers"))}
    assert tuned == {r.spec for r in script.rows()}
    cells: dict[tuple, int] = {}
    for l in runs:
        lo, hi = map(int, opt(l, "--seeds").split(".."))
        for spec in script_split(opt(l, "--solvers")):
            key = (spec, opt(l, "--problems"), opt(l, "--dims"))
            cells[key] = cells.get(key, 0) + hi - lo + 1
        assert opt(l, "--steps") == {"100": "5000", "1000": "2000"}[opt(l, "--dims")]
    for row in script.rows():
        assert cells[(row.spec, row.problem, "100")] == row.seeds_100
        if row.problem == script.PROBLEM:
            assert cells[(row.spec, row.problem, "1000")] == 3


def script_split(text):
    from pinnbench.commands.axes import split_top_level

    return split_top_level(text)


def test_a_rerun_resumes_each_run_command_instead_of_starting_it_again(script, tmp_path):
    """The run stage spans sessions: rerunning the script must skip a run command whose run
    finished and resume (``--resume RUN_ID``) one that was interrupted, not start a new run of
    every cell again (before, each rerun re-ran all finished 5000-step cells as a new run)."""
    from pinnbench.cells.store import Store

    store = tmp_path / "ablation.sqlite"
    cmd = ["/venv/bin/pinnbench", "run", "--tuned", "x.sqlite", "--solvers", "sdze[q=8]",
           "--seeds", "0..2"]
    other = cmd[:-1] + ["3..4"]
    assert script.resumed(cmd, str(store)) == cmd  # no store yet: run it
    st = Store(store, mkdir=True)
    recorded = "pinnbench run --tuned x.sqlite --solvers 'sdze[q=8]' --seeds 0..2"
    st.begin_run("R1", recorded, "2026-12-04T00:00:00+00:00", [], {}, planner="p")
    st.close()
    assert script.resumed(cmd, str(store)) == cmd + ["--resume", "R1"]
    assert script.resumed(other, str(store)) == other
    st = Store(store)
    st.finish_run("R1", "2026-12-04T01:00:00+00:00", "finished")
    st.close()
    assert script.resumed(cmd, str(store)) is None  # done: nothing to run


def test_a_run_cells_wall_clock_limit_is_only_a_hang_guard(script, capsys):
    """The budget is in steps: run's 600 s default killed a 5000-step cell of the re-run at
    load 8 after 2048 steps (recorded `timeout`, a row at unequal steps); every run command
    now sets --timeout to the script's hang guard."""
    assert script.main(["--dry-run"]) == 0
    runs = [l.split() for l in capsys.readouterr().out.splitlines()
            if len(l.split()) > 1 and l.split()[1] == "run"]
    assert runs and all(l[l.index("--timeout") + 1] == str(script.RUN_TIMEOUT_S) for l in runs)
    assert script.RUN_TIMEOUT_S >= 5000 * 1.4
