"""The tuning protocol (docs/tuning.md): search spaces declared beside the parameters, the
fixed-in-spec rule, reproducible trials, selection on validation (never test), one protocol for
every study (a planted extra trial is caught), and `pinnbench tune` / `show --studies` /
`run --tuned` end to end, with bad input refused (exit 2, nothing written)."""

import math
import sys

import optuna
import pytest

from pinnbench.cells.cellspec import CellSpec
from pinnbench.cli import main
from pinnbench.solver import SOLVERS, Param, Solver
from pinnbench.cells.store import load_results
from pinnbench.tuning.study import (TUNE_TIMEOUT_S, Protocol, TuningError, ask_trials, check_equal_protocol,
                              make_sampler, objective, protocol_differences, search_space,
                              select, storage_url, summarize, trial_spec)
from pinnbench.tuning.trials import TrialRecorder, check_existing, open_studies, prepare, trial_cells
from pinnbench.search_space import BUDGET, Choice, IntLogUniform, LogUniform, resolve

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = Protocol(steps=3, seeds=(0, 1), trials=4, width=8, depth=1)


# -- search spaces ---------------------------------------------------------------------------------
def test_builtin_solvers_declare_their_spaces():
    assert SOLVERS.get("bp").search_space() == {"lr": LogUniform(1e-4, 3e-2),
                                                "decay_steps": Choice(0, BUDGET)}
    zo = SOLVERS.get("zo").search_space()
    assert set(zo) == {"lr", "eps", "q", "momentum", "decay_steps"}
    assert zo["q"] == IntLogUniform(1, 16) and zo["momentum"] == Choice(0.0, 0.9)
    assert set(SOLVERS.get("sdze").search_space()) == set(zo) | {"rank"}


def test_a_parameter_fixed_in_the_spec_is_not_searched():
    assert set(search_space("bp[estimator=hte,lr=1e-3]")) == {"decay_steps"}
    assert set(search_space("zo[crns=true,q=4]")) == {"lr", "eps", "momentum", "decay_steps"}
    with pytest.raises(TuningError, match="every searched parameter .* is fixed"):
        search_space("bp[lr=1e-3,decay_steps=0]")
    with pytest.raises(ValueError, match="unknown parameter"):
        search_space("bp[nope=1]")


def test_a_third_party_solver_declares_its_own_space():
    class Toy(Solver):
        name = "toy"
        parameters = {"alpha": Param(0.5, search=LogUniform(0.1, 1.0)),
                      "k": Param(3, search=IntLogUniform(1, 8)), "flag": Param(True)}

    assert Toy.search_space() == {"alpha": LogUniform(0.1, 1.0), "k": IntLogUniform(1, 8)}
    assert Toy.search_space(fixed=("alpha",)) == {"k": IntLogUniform(1, 8)}


@pytest.mark.parametrize("make", [
    lambda: Param(3, search=LogUniform(0.5, 2.0)),      # an int parameter with float bounds
    lambda: Param(0.1, choices=(0.1, 0.2), search=Choice(0.1, 0.3)),  # 0.3 not allowed
    lambda: Param(1.0, search=LogUniform(0.0, 1.0)),
    lambda: Param(1, search=IntLogUniform(4, 2)),
    lambda: Param(1.0, search=Choice(1.0)),
    lambda: Param(1.0, search=(1e-3, 1e-1)),            # not a declaration
])
def test_bad_declarations_are_refused(make):
    with pytest.raises((ValueError, TypeError)):
        make()


def test_trial_spec_resolves_the_budget():
    spec = trial_spec("bp[estimator=hte]", {"lr": 0.00123, "decay_steps": BUDGET}, steps=500)
    assert spec == "bp[decay_steps=500,estimator=hte,lr=0.00123]"
    assert trial_spec("bp", {"lr": 0.01, "decay_steps": 0}, steps=None) == \
        "bp[decay_steps=0,lr=0.01]"
    with pytest.raises(ValueError, match="needs a budget in steps"):
        resolve({"decay_steps": BUDGET}, None)


# -- trials ----------------------------------------------------------------------------------------
def _asked(sampler: str, seed: int, n: int, storage=None, name="s") -> list[dict]:
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize",
                                sampler=make_sampler(sampler, seed), load_if_exists=True)
    ask_trials(study, search_space("sdze"), n)
    return [t.user_attrs["params"] for t in study.get_trials(deepcopy=False)]


@pytest.mark.parametrize("sampler", ["qmc", "random"])
def test_same_seed_same_trials(sampler):
    a, b = _asked(sampler, 0, 8), _asked(sampler, 0, 8)
    assert a == b and len({str(p) for p in a}) == 8
    assert _asked(sampler, 1, 8) != a
    space = search_space("sdze")
    for p in a:  # every value inside its declaration
        assert space["lr"].low <= p["lr"] <= space["lr"].high
        assert 1 <= p["q"] <= 16 and p["momentum"] in (0.0, 0.9)
        assert p["decay_steps"] in (0, BUDGET)


def test_a_resumed_study_asks_the_same_trials(tmp_path):
    url = storage_url(tmp_path / "s.sqlite")
    _asked("qmc", 0, 3, storage=url)
    resumed = _asked("qmc", 0, 8, storage=url)  # a new sampler object, as a new process
    assert resumed == _asked("qmc", 0, 8)


# -- objective and selection -----------------------------------------------------------------------
def test_objective_is_the_median_and_a_failed_seed_is_inf():
    assert objective([("ok", 0.2), ("ok", 0.4)]) == pytest.approx(0.3)
    assert objective([("ok", 0.2), ("diverged", 0.1)]) == math.inf
    assert objective([("ok", 0.2), ("ok", None)]) == math.inf
    assert objective([("ok", 0.2), ("ok", 0.3), ("timeout", None)]) == pytest.approx(0.3)
    assert select([{"number": 0, "value": math.inf}]) is None
    assert select([{"number": 1, "value": 0.5}, {"number": 0, "value": 0.5}])["number"] == 0


def _plan(tmp_path, solvers=("bp",), protocol=TINY):
    plan = prepare(list(solvers), ["poisson-2body-v1"], [3], protocol)
    url = storage_url(tmp_path / "studies.sqlite")
    return plan, url, open_studies(url, plan)


def test_selection_is_on_validation_not_test(tmp_path):
    """Trial 0 is better on the test set, trial 1 on the validation set: trial 1 is chosen."""
    plan, url, studies = _plan(tmp_path, protocol=Protocol(steps=3, seeds=(0, 1), trials=2,
                                                           width=8, depth=1))
    cells = trial_cells(plan, studies)
    assert len(cells) == 4 and all(c.spec["validation"] for c in cells)
    record = TrialRecorder(plan, studies, cells)
    errors = {0: {"test": 0.1, "val": 0.6}, 1: {"test": 0.9, "val": 0.3}}
    for c in cells:
        (_, number, seed), = c.uses
        e = errors[number]
        record({"cell_id": CellSpec.from_dict(c.spec).cell_id, "status": "ok",
                "final_rel_l2": e["test"], "final_val_rel_l2": e["val"] + 0.01 * seed})
    (s,) = summarize(url)
    assert s.n_complete == 2
    assert s.best["number"] == 1 and s.best["value"] == pytest.approx(0.305)
    assert s.chosen_spec(steps=3) == trial_spec("bp", s.trials[1]["params"], 3)


# -- one protocol for every solver -----------------------------------------------------------------
def _finish_all(url):
    for s in optuna.get_all_study_summaries(url, include_best_trial=False):
        study = optuna.load_study(study_name=s.study_name, storage=url)
        for t in study.get_trials(deepcopy=False):
            if t.state.name == "RUNNING":
                study.tell(t.number, 0.5)


def test_equal_trials_check_catches_a_planted_extra_trial(tmp_path):
    plan, url, studies = _plan(tmp_path, solvers=("bp", "zo"))
    _finish_all(url)
    summaries = summarize(url)
    assert len(summaries) == 2 and protocol_differences(summaries) == []
    check_equal_protocol(summaries)
    # one extra trial for one solver
    zo = studies[[sp.name for sp in plan.studies if sp.spec == "zo"][0]]
    zo.tell(zo.ask(), 0.1)
    diffs = protocol_differences(summarize(url))
    assert any(d.startswith("trials differ") for d in diffs)
    with pytest.raises(TuningError, match="not tuned alike"):
        check_equal_protocol(summarize(url))


def test_equal_protocol_check_catches_another_budget(tmp_path):
    _plan(tmp_path, solvers=("bp",))
    plan = prepare(["zo"], ["poisson-2body-v1"], [3],
                   Protocol(steps=4, seeds=(0, 1), trials=4, width=8, depth=1))
    open_studies(storage_url(tmp_path / "studies.sqlite"), plan)
    _finish_all(storage_url(tmp_path / "studies.sqlite"))
    diffs = protocol_differences(summarize(storage_url(tmp_path / "studies.sqlite")))
    assert [d for d in diffs if d.startswith("steps differ")]


# -- the command line, end to end ------------------------------------------------------------------
TUNE = ["tune", "--solvers", "bp", "--problems", "poisson-2body-v1", "--dims", "3",
        "--seeds", "0..1", "--steps", "2", "--trials", "2", "--width", "8", "--depth", "1",
        "--threads", "1", "--quiet"]


def test_tune_then_run_tuned(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(TUNE) == 0
    df = load_results("results/pinnbench.sqlite")
    assert len(df) == 4 and set(df["status"]) == {"ok"}
    assert df["final_val_rel_l2"].notna().all()
    assert all("#" in p["tuning_trial"] for p in df["provenance"])
    (study,) = summarize(storage_url("results/pinnbench.optuna.sqlite"))
    assert study.n_complete == study.n_trials == 2
    assert study.name == "bp:poisson-2body-v1:d=3:steps=2:seeds=0,1:qmc:mlp=8x1"
    # the objective is the median of the stored validation errors of the trial's cells
    best = study.best
    mine = df[[p["tuning_trial"] == f"{study.name}#{best['number']}" for p in df["provenance"]]]
    assert best["value"] == pytest.approx(mine["final_val_rel_l2"].median())
    # rerunning the same command resumes: nothing left to run, nothing added
    assert main(TUNE) == 0
    assert len(load_results("results/pinnbench.sqlite")) == 4
    capsys.readouterr()
    assert main(["show", "--studies"]) == 0
    out = capsys.readouterr().out
    assert study.name in out and f"best: trial {best['number']}" in out
    from pinnbench.tuning.page import page

    text = page(tmp_path / "results/pinnbench.optuna.sqlite", tmp_path / "results/pinnbench.sqlite")
    assert "One protocol for every study: **yes**" in text
    assert f"(#{best['number']}) |" in text and "| finished | 4 |" in text
    # the state: 2 of 2 trials, 4 of 4 planned cells (2 trials x 2 seeds), counted by status
    assert "| 3 | 1 | 2/2 | 4/4 | 4 ok |" in text
    from pinnbench.tuning.page import main as page_main

    (tmp_path / "preface.md").write_text("**In progress.** What ran.\n")
    assert page_main(["--study-store", "results/pinnbench.optuna.sqlite", "--out", "p/README.md",
                      "--preface", "preface.md", "--title", "T"]) == 0
    assert (tmp_path / "p/README.md").read_text().startswith("# T\n\n**In progress.** What ran.\n")
    assert page_main(["--study-store", "results/pinnbench.optuna.sqlite", "--out", "q.md",
                      "--preface", "nope.md"]) == 2
    assert not (tmp_path / "q.md").exists()

    capsys.readouterr()
    assert main(["run", "--tuned", "results/pinnbench.optuna.sqlite", "--seeds", "5",
                 "--steps", "2", "--threads", "1", "--no-report", "--quiet"]) == 0
    assert "chose at" not in capsys.readouterr().err  # the studies' own budget: no warning
    runs = load_results("results/pinnbench.sqlite")
    tuned = runs[[p.get("tuned_study") == study.name for p in runs["provenance"]]]
    assert len(tuned) == 1
    row = tuned.iloc[0]
    assert row["seed"] == 5 and row["width"] == 8 and row["depth"] == 1
    # the chosen trial's parameters (the budget resolved to this run's steps), all else default
    assert row["solver"] == SOLVERS.get("bp")(**resolve(best["params"], 2)).spec
    # at another budget the run says that the choice was made for the studies' (the ablation
    # re-run's lrs, chosen at 500 steps, ran 5000: reports/ablation-sdze)
    assert main(["run", "--tuned", "results/pinnbench.optuna.sqlite", "--seeds", "6",
                 "--steps", "4", "--threads", "1", "--no-report", "--quiet"]) == 0
    assert "warning: --tuned: the studies chose at 2 steps and this run takes 4" in \
        capsys.readouterr().err


def _untouched(tmp_path):
    return not (tmp_path / "results").exists()


@pytest.mark.parametrize("argv,message", [
    (TUNE[:-1] + ["--seeds", "0"], "at least 2 seeds"),
    (TUNE + ["--trials", "0"], "--trials must be an integer >= 1"),
    (TUNE + ["--sampler", "tpe"], "invalid choice"),
    (TUNE + ["--solvers", "bp[lr=1e-3,decay_steps=0]"], "nothing to tune"),
    (TUNE + ["--solvers", "bpp"], "did you mean 'bp'"),
    (TUNE + ["--dims", "1"], "needs d >= 2"),
    (TUNE + ["--problems", "nope-v1"], "unknown problem"),
    (TUNE + ["--solvers", "bp,bp"], "listed twice"),
    (["show", "--studies"], "no study store"),
    (["run", "--tuned", "nope"], "neither a study store nor a study"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert _untouched(tmp_path)


@pytest.mark.parametrize("extra,limit", [([], TUNE_TIMEOUT_S), (["--timeout", "30"], 30.0)])
def test_a_trial_cells_wall_clock_limit_is_only_a_hang_guard(tmp_path, monkeypatch, extra, limit):
    """The budget is in steps: by default a trial cell may run far past the run's limit (a slow
    configuration on a loaded machine is not a failed one); --timeout still sets it."""
    from pinnbench.commands.run_options import DEFAULT_RUN
    from pinnbench.tuning import trials

    seen = {}

    def stop(solvers, problems, dims, protocol, options):
        seen.update(options)
        raise TuningError("stopped by the test")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trials, "prepare", stop)
    assert main(TUNE + extra) == 2
    assert seen["timeout_s"] == limit
    assert TUNE_TIMEOUT_S >= 6 * DEFAULT_RUN["timeout"]


def test_a_study_store_that_is_not_one_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    from pinnbench.cells.store import Store

    Store(tmp_path / "r.sqlite").close()
    before = (tmp_path / "r.sqlite").read_bytes()
    assert main(TUNE + ["--study-store", "r.sqlite"]) == 2
    assert "not an Optuna study store" in capsys.readouterr().err
    assert (tmp_path / "r.sqlite").read_bytes() == before


def test_run_tuned_without_a_study_for_the_plan(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    plan, url, _ = _plan(tmp_path / "results", solvers=("bp",))
    _finish_all(url)
    n = len(summarize(url))
    assert main(["run", "--tuned", str(tmp_path / "results" / "studies.sqlite"), "--solvers",
                 "zo", "--steps", "2", "--no-report"]) == 2
    assert "no study for zo on poisson-2body-v1 at d = 3" in capsys.readouterr().err
    assert not (tmp_path / "results" / "pinnbench.sqlite").exists()
    assert len(summarize(url)) == n


def test_missing_optuna_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    assert main(TUNE) == 2
    assert "pip install 'pinnbench[tune]'" in capsys.readouterr().err
    assert _untouched(tmp_path)


def test_an_interrupted_tune_runs_only_the_missing_seeds(tmp_path):
    plan, url, studies = _plan(tmp_path, protocol=Protocol(steps=3, seeds=(0, 1), trials=2,
                                                           width=8, depth=1))
    cells = trial_cells(plan, studies)
    record = TrialRecorder(plan, studies, cells)
    first = cells[0]  # trial 0, seed 0 finished; the tune was then interrupted
    record({"cell_id": CellSpec.from_dict(first.spec).cell_id, "status": "diverged",
            "final_val_rel_l2": None, "message": "loss became nan at step 2"})
    # a new process resumes the same plan
    again = trial_cells(plan, open_studies(url, plan))
    assert [c.uses for c in again] == [c.uses for c in cells[1:]]
    (s,) = summarize(url)
    assert s.n_trials == 2 and s.n_complete == 0
    assert s.trials[0]["seeds"]["0"]["status"] == "diverged"


# -- a search space that follows the spec ----------------------------------------------------------
def test_raw_quotients_get_an_lr_space_of_their_own():
    """normalize=false steps by lr * c * z with raw quotients c (RMS 290-1000 on
    poisson-2body-scaled-v1, ~1e6 on the unscaled problem): the normalized space 1e-4..1e-1
    holds no lr that trains it (all 64 trials of the ablation re-run diverged), so a spec that
    fixes normalize=false searches lr on its own range; every other declaration is unchanged."""
    for name in ("sdze", "zo"):
        cls = SOLVERS.get(name)
        base, raw = cls.search_space(), cls.search_space({"normalize": False})
        assert base["lr"] == LogUniform(1e-4, 1e-1)
        assert raw["lr"] == LogUniform(1e-10, 1e-3)
        assert {k: v for k, v in raw.items() if k != "lr"} == \
            {k: v for k, v in base.items() if k != "lr"}
        assert cls.search_space({"normalize": True}) == base
    assert search_space("sdze[normalize=false,q=8]")["lr"] == LogUniform(1e-10, 1e-3)
    assert "lr" not in search_space("sdze[normalize=false,lr=1e-6]")


def test_a_variant_search_entry_is_checked_like_a_declaration():
    class Bad(Solver):
        name = "bad-variant-search"
        parameters = {"k": Param(3, search=IntLogUniform(1, 8)), "flag": Param(True)}
        variant_search = {"flag=false": {"k": LogUniform(0.5, 2.0)}}  # floats for an int

    with pytest.raises(TypeError, match="variant_search"):
        Bad.search_space({"flag": False})
    Bad.variant_search = {"flag=false": {"nope": LogUniform(0.5, 2.0)}}
    with pytest.raises(TypeError, match="variant_search.*nope"):
        Bad.search_space()


def test_a_study_resumed_under_another_search_space_is_refused(tmp_path, monkeypatch):
    """A study records the space its trials were drawn from; resuming it after the declaration
    changed would mix two distributions in one study (and select across them)."""
    plan, url, _ = _plan(tmp_path)
    check_existing(url, plan)  # the same space: fine
    widened = prepare(["bp"], ["poisson-2body-v1"], [3], TINY)
    widened.studies[0].space = {**widened.studies[0].space, "lr": LogUniform(1e-6, 3e-2)}
    with pytest.raises(TuningError, match="another search space"):
        check_existing(url, widened)


def _tell_all(url, value):
    for s in optuna.get_all_study_summaries(url, include_best_trial=False):
        study = optuna.load_study(study_name=s.study_name, storage=url)
        for t in study.get_trials(deepcopy=False):
            if t.state.name == "RUNNING":
                study.tell(t.number, value)


def test_run_tuned_records_a_study_that_found_nothing_as_skipped_cells(tmp_path, monkeypatch,
                                                                       capsys):
    """A study none of whose trials trained on every seed is a result of the protocol ("no
    configuration in the space trained"): each of its cells is recorded as skipped with the
    reason, the other studies' cells run, and the command succeeds (before: exit 2 for the
    whole command, which stopped the ablation re-run's run stage at its first variant)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    url = storage_url(tmp_path / "results" / "studies.sqlite")
    open_studies(url, prepare(["bp"], ["poisson-2body-v1"], [3], TINY))
    _tell_all(url, 0.5)
    open_studies(url, prepare(["zo"], ["poisson-2body-v1"], [3], TINY))
    _tell_all(url, math.inf)  # every zo trial diverged on some seed
    assert main(["run", "--tuned", str(tmp_path / "results" / "studies.sqlite"), "--seeds",
                 "0..1", "--steps", "2", "--threads", "1", "--no-report", "--quiet"]) == 0
    assert "no trial with a finite objective" in capsys.readouterr().err
    df = load_results("results/pinnbench.sqlite")
    assert sorted(df["solver_name"]) == ["bp", "bp", "zo", "zo"]
    zo = df[df["solver_name"] == "zo"]
    assert set(zo["status"]) == {"skipped"} and (zo["steps_done"] == 0).all()
    assert all("no trial with a finite objective" in m and "not run" in m for m in zo["message"])
    assert all(p["tuned_study"].startswith("zo:") for p in zo["provenance"])
    assert all(p["untuned"] == m[len("plan: "):] for p, m in zip(zo["provenance"], zo["message"]))
    assert set(df[df["solver_name"] == "bp"]["status"]) == {"ok"}
    # the same command resuming its run: every cell is done, skipped ones included
    assert main(["run", "--tuned", str(tmp_path / "results" / "studies.sqlite"), "--seeds",
                 "0..1", "--steps", "2", "--threads", "1", "--no-report", "--quiet",
                 "--resume", "latest"]) == 0
    assert len(load_results("results/pinnbench.sqlite")) == 4


def test_a_cell_its_study_could_not_tune_shows_no_tuned_value():
    """The report's design view reads a run --tuned cell's tuned values off its spec; a cell
    stored unrun because its study chose nothing holds the solver's defaults, which must not
    read as a choice ("tuned lr=0.00138" in a dry run of the ablation page)."""
    import pandas as pd

    from pinnbench.report.ablation import design_view

    study = "sdze[normalize=false]:poisson-2body-v1:d=3:steps=3:seeds=0,1:qmc:mlp=8x1"
    why = f"not run: study {study!r} has no trial"
    rows = [{"solver": "sdze[lr=0.00138,normalize=false]", "solver_name": "sdze",
             "solver_params": {"lr": 0.00138, "normalize": False}, "status": status,
             "message": message, "provenance": provenance}
            for status, message, provenance in (
                ("skipped", f"plan: {why}", {"tuned_study": study, "untuned": why}),
                ("ok", "", {"tuned_study": study}))]
    view = design_view(pd.DataFrame(rows))
    assert list(view["tuned_params"]) == [{}, {"lr": 0.00138}]
    assert set(view["solver"]) == {"sdze[normalize=false]"}
