"""pinnbench.cells.isolation: every way a child process can end is told apart, the same way for the
cell runner and the bench scripts."""

import signal

from pinnbench.cells.isolation import Isolated, measure_isolated, run_isolated

T = "isolation_targets:"


def test_a_returned_result_comes_back_and_the_folder_is_removed():
    run = Isolated(T + "returns", {"x": 21})
    ended = run.wait()
    assert (ended.how, ended.result) == ("returned", {"status": "ok", "echo": 42})
    assert not run.dir.exists()


def test_timeout_keeps_the_last_progress():
    # 10 s: the child must start Python and import torch before it reports; under a load of 6
    # on 2 cores that took more than 4 s once, and the cell was killed before its first report
    ended = run_isolated(T + "reports_then_sleeps", {"seconds": 60}, timeout_s=10)
    assert ended.how == "timeout" and ended.progress == {"step": 2}
    assert 10 <= ended.elapsed_s < 25 and "timeout of 10 s" in ended.message


def test_an_exception_is_an_outcome_and_an_allocation_past_the_cap_is_oom():
    assert measure_isolated(T + "raises", {}) == {
        "status": "error", "message": "ValueError: bad things (at isolation_targets.py:20)"}
    out = measure_isolated(T + "allocates", {"numbers": 2**29}, memory_limit_bytes=2**30)
    assert out["status"] == "oom" and "allocate" in out["message"], out


def test_signals_and_exit_codes_are_told_apart_with_the_log_tail():
    killed = run_isolated(T + "kills_itself", {"signal": int(signal.SIGKILL)})
    assert killed.how == "killed" and "SIGKILL" in killed.message and "last words" in killed.message
    aborted = run_isolated(T + "kills_itself", {"signal": int(signal.SIGABRT)})
    assert aborted.how == "signal" and "SIGABRT" in aborted.message
    assert "last words" in aborted.message
    assert measure_isolated(T + "kills_itself", {"signal": int(signal.SIGKILL)})["status"] == "oom"
    ended = run_isolated(T + "exits", {})
    assert ended.how == "exit" and "code 7" in ended.message and "on purpose" in ended.message
