"""The defaults rule (pinnbench/tuning/defaults.py): one configuration per solver spec from its
studies, by the geometric mean of objective / study best, recomputed here by hand."""

import math

from pinnbench.tuning.defaults import choose
from pinnbench.tuning.study import StudySummary

A, B, C = {"lr": 0.01, "q": 4}, {"lr": 0.001, "q": 2}, {"lr": 0.1, "q": 8}


def study(solver, dim, values, done=None, params=(A, B, C)):
    trials = [{"number": i, "state": "COMPLETE" if (done is None or i < done) else "RUNNING",
               "value": v if (done is None or i < done) else None, "params": p, "seeds": {}}
              for i, (p, v) in enumerate(zip(params, values))]
    return StudySummary(name=f"{solver}:P:d={dim}", solver=solver, problem="P", dim=dim,
                        protocol={}, space={}, n_trials=len(trials),
                        n_complete=sum(t["state"] == "COMPLETE" for t in trials), trials=trials)


def test_the_geometric_mean_of_ratios_to_each_best_picks_the_default():
    # A is best at d=100 (0.1 vs B 0.12), B best at d=1000 (0.5 vs A 0.9): ratios A (1, 1.8),
    # B (1.2, 1): geometric means sqrt(1.8) = 1.342 and sqrt(1.2) = 1.095 -> B
    (c,) = choose([study("s", 100, [0.1, 0.12, 0.3]), study("s", 1000, [0.9, 0.5, 0.7])])
    assert c.params == B and math.isclose(c.score, math.sqrt(1.2))
    assert (c.studies, c.complete, c.provisional) == (2, 2, False)


def test_a_raw_mean_would_choose_otherwise():
    """The normalisation matters: the raw mean of errors prefers C here, the ratios prefer A."""
    s1, s2 = study("s", 100, [0.01, 0.05, 0.03]), study("s", 1000, [0.8, 0.9, 0.7])
    (c,) = choose([s1, s2])
    raw = min((A, B, C), key=lambda p: sum(t["value"] for s in (s1, s2) for t in s.trials
                                            if t["params"] == p))
    assert raw == C and c.params == A  # A: (1, 8/7) vs C: (3, 1)


def test_a_failure_anywhere_excludes_a_configuration():
    (c,) = choose([study("s", 100, [0.1, 0.2, 0.3]), study("s", 1000, [math.inf, 0.5, 0.6])])
    assert c.params == B


def test_unfinished_studies_give_a_provisional_choice_over_the_trials_done_everywhere():
    (c,) = choose([study("s", 100, [0.3, 0.2, 0.1]), study("s", 1000, [0.5, 0.4, 0.1], done=2)])
    assert c.params == B and c.provisional and c.complete == 1  # C is not done at d=1000


def test_trials_are_matched_on_parameters_not_numbers():
    swapped = study("s", 1000, [0.5, 0.9, 0.7], params=(B, A, C))  # B first here
    (c,) = choose([study("s", 100, [0.1, 0.12, 0.3]), swapped])
    assert c.params == B and math.isclose(c.score, math.sqrt(1.2))


def test_one_choice_per_solver_and_none_when_nothing_finished():
    out = choose([study("b", 100, [math.inf] * 3), study("a", 100, [0.3, 0.2, 0.4])])
    assert [c.solver for c in out] == ["a", "b"]
    assert out[0].params == B and out[1].score is None and out[1].params == {}


def test_the_solvers_declared_defaults_are_held_against_a_choice():
    """``differences`` names each parameter where a solver spec's declared defaults (variant
    defaults included) are not its chosen configuration, and nothing where they are."""
    from pinnbench.tuning.defaults import Choice, declared, differences

    names = ("lr", "eps", "q", "momentum", "decay_steps")
    for spec in ("zo", "zo[crns=true]", "sdze", "bp[estimator=hte]"):
        now = declared(spec, [k for k in names if not spec.startswith("bp") or k in
                              ("lr", "decay_steps")])
        held = Choice(spec, dict(now), score=1.0, studies=4, complete=4)
        assert differences(held) == {}, spec
        moved = Choice(spec, {**now, "lr": now["lr"] * 3}, score=1.0, studies=4, complete=4)
        assert differences(moved) == {"lr": (now["lr"], now["lr"] * 3)}, spec
        budget = Choice(spec, {**now, "decay_steps": "budget"}, score=1.0, studies=4, complete=4)
        assert set(differences(budget)) == ({"decay_steps"} if now["decay_steps"] != "budget"
                                            else set()), spec
    assert differences(Choice("zo", {}, None, 4, 0)) == {}  # nothing chosen: nothing to hold
