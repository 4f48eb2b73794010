"""The tuning protocol: one search, budget and selection rule for every solver (docs/tuning.md).

For each (solver spec, problem, d) one Optuna *study*:

- the search space is what the solver declares beside its parameters
  (:meth:`pinnbench.solver.Solver.search_space`), minus the parameters the spec fixes;
- ``trials`` trials (default 16) drawn by Optuna's seeded, scrambled Sobol sampler
  (``QMCSampler``; its first trial comes from its seeded random sampler, as Optuna does it) or
  by its seeded random sampler (``sampler="random"``), all asked before any cell runs, so that
  the points do not depend on the results (same seed, same trials);
- each trial is one isolated cell per seed (at least :data:`MIN_SEEDS`), at a budget in steps,
  run through the sweep machinery (:func:`pinnbench.cells.sweep.execute_sweep`) into the results
  store as a run, each cell evaluated after training on the validation set
  (:meth:`pinnbench.maths.problem.Problem.validation_chunks`, a stream the test set never uses);
- the objective (:func:`objective`) is the median over seeds of ``final_val_rel_l2``; a seed that
  is not ``ok`` (diverged, oom, timeout, error, skipped) or has no finite validation error counts
  as +inf, and its status is recorded on the trial;
- selection (:func:`select`): the lowest objective, ties to the lower trial number. The test
  error never enters.

Studies live in Optuna's RDB storage, a SQLite file beside the results store
(:func:`default_study_store`); a study's name says what it is (:func:`study_name`) and its user
attributes hold the protocol, the search space and the solver it tunes. Every trial records its
(symbolic) parameters and, per seed, the cell that ran it. :func:`protocol_differences` checks
that a set of studies ran under one protocol (equal trials, budget, seeds, sampler, rule, model).
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pinnbench.solver import SOLVERS, format_spec, parse_spec
from pinnbench.search_space import resolve, round_value, to_distribution

DEFAULT_TRIALS = 16
#: a trial cell's default wall-clock limit (ours). A trial's budget is in steps, so the limit only
#: guards against a hang: at the run's 600 s, a slow configuration on a loaded machine timed out
#: (the defaults study: MeZO at q = 16, 256 of 500 steps in 600 s at load 6.5), and a timeout
#: counts as +inf, so the machine's load, not the method, would have decided the trial.
TUNE_TIMEOUT_S = 3600.0
DEFAULT_SEEDS = (0, 1)
#: the objective is a median over seeds: at least this many (docs/domain.md §9)
MIN_SEEDS = 2
SAMPLERS = ("qmc", "random")
#: the samplers' seed (ours: one fixed seed for every study, recorded in its protocol)
SAMPLER_SEED = 0
#: the objective's column in the results store
OBJECTIVE = "final_val_rel_l2"
RULE = ("median over seeds of final_val_rel_l2 (validation set); a seed not ok or without a "
        "finite validation error counts +inf; the lowest wins, ties to the lower trial number")
MISSING_OPTUNA = ("pinnbench tune needs Optuna and SciPy: pip install 'pinnbench[tune]' "
                  "(docs/extras.md)")


class TuningError(ValueError):
    """Bad input for the protocol (the CLI shows it as one line, exit 2)."""


def require_optuna():
    """The optuna module, quiet (warnings and INFO lines off), or TuningError naming the extra."""
    try:
        import optuna
        import scipy  # noqa: F401 - what the QMC sampler draws its Sobol points with
    except ImportError:
        raise TuningError(MISSING_OPTUNA) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_study_store(results_store: str | Path) -> Path:
    """``results/pinnbench.sqlite`` -> ``results/pinnbench.optuna.sqlite``."""
    p = Path(results_store)
    return p.with_name(p.stem + ".optuna.sqlite")


def storage_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


# -- what a study is -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """Everything a study's trials share; equal for every solver of a comparison."""

    steps: int
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    trials: int = DEFAULT_TRIALS
    sampler: str = "qmc"
    sampler_seed: int = SAMPLER_SEED
    width: int = 128
    depth: int = 3
    dtype: str = "float32"
    device: str = "cpu"
    rule: str = RULE

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise TuningError(f"unknown sampler {self.sampler!r}; expected one of "
                              f"{', '.join(SAMPLERS)}")
        if len(set(self.seeds)) < MIN_SEEDS:
            raise TuningError(f"the protocol takes the median over at least {MIN_SEEDS} seeds; "
                              f"got {len(set(self.seeds))} (e.g. --seeds 0..1)")
        if self.trials < 1 or self.steps < 1:
            raise TuningError("trials and steps must be >= 1")

    def fixed(self) -> dict[str, Any]:
        """What an existing study must share to be resumed (the trial count may grow)."""
        d = asdict(self)
        d.pop("trials")
        d["seeds"] = list(self.seeds)
        return d


def base_spec(text: str) -> tuple[str, dict[str, Any], str]:
    """``"bp[estimator=hte]"`` -> (``"bp"``, the fixed parameters coerced, the canonical spec
    of only those: ``"bp[estimator=hte]"``). ValueError for a bad spec."""
    name, raw = parse_spec(text)
    solver = SOLVERS.get(name)(**raw)  # validates names and values
    fixed = {k: solver.params[k] for k in raw}
    return name, fixed, format_spec(name, fixed)


def search_space(text: str) -> dict[str, Any]:
    """The declarations searched for this spec (TuningError when nothing is left to search)."""
    name, fixed, canonical = base_spec(text)
    space = SOLVERS.get(name).search_space(fixed)
    if not space:
        declared = SOLVERS.get(name).search_space()
        why = ("every searched parameter (" + ", ".join(declared) + ") is fixed in the spec"
               if declared else "the solver declares no search space (Param(..., search=...))")
        raise TuningError(f"nothing to tune for {canonical}: {why}")
    return space


def _seeds_text(seeds: Iterable[int]) -> str:
    s = sorted(seeds)
    if len(s) > 2 and s == list(range(s[0], s[-1] + 1)):
        return f"{s[0]}..{s[-1]}"
    return ",".join(map(str, s))


def study_name(spec: str, problem: str, dim: int, protocol: Protocol) -> str:
    """What the study is, in its name: the canonical spec (fixed parameters only), the problem,
    d, the budget, the seeds, the sampler and the model, e.g.
    ``sdze:poisson-2body-v1:d=100:steps=500:seeds=0,1:qmc:mlp=128x3``."""
    return (f"{base_spec(spec)[2]}:{problem}:d={dim}:steps={protocol.steps}:"
            f"seeds={_seeds_text(protocol.seeds)}:{protocol.sampler}:"
            f"mlp={protocol.width}x{protocol.depth}")


def study_protocol(name: str) -> tuple[str, str] | None:
    """(the spec, the protocol: "steps=500, seeds=0,1, qmc, mlp=32x3") of a :func:`study_name`,
    the parts that must agree for two tuned contestants to be compared; None for a name of
    another form."""
    parts = name.split(":")
    if len(parts) != 7 or not parts[2].startswith("d=") or not parts[3].startswith("steps="):
        return None
    return parts[0], ", ".join(parts[3:])


def tuned_spec(name: str) -> str:
    """The canonical spec a study tuned (its fixed parameters only), from the study's name
    (:func:`study_name` begins with it; solver names and spec values hold no ':')."""
    return name.split(":", 1)[0]


def make_sampler(kind: str, seed: int = SAMPLER_SEED):
    optuna = require_optuna()
    with warnings.catch_warnings():  # QMCSampler is marked experimental
        warnings.simplefilter("ignore")
        if kind == "qmc":
            return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                              warn_independent_sampling=False)
        return optuna.samplers.RandomSampler(seed=seed)


def distributions(space: dict[str, Any]) -> dict[str, Any]:
    return {k: to_distribution(v) for k, v in space.items()}


def ask_trials(study, space: dict[str, Any], n_total: int) -> list:
    """Ask trials until the study has ``n_total``; each records its parameters (floats rounded,
    :func:`pinnbench.search_space.round_value`) as the user attribute ``params``."""
    dists = distributions(space)
    asked = []
    while len(study.get_trials(deepcopy=False)) < n_total:
        trial = study.ask(dists)
        trial.set_user_attr("params", {k: round_value(v) for k, v in trial.params.items()})
        asked.append(trial)
    return asked


def trial_spec(base: str, params: dict[str, Any], steps: int | None) -> str:
    """The full solver spec of a trial's parameters at a budget of ``steps``."""
    name, fixed, _ = base_spec(base)
    solver = SOLVERS.get(name)(**{**fixed, **resolve(params, steps)})
    return format_spec(name, {k: solver.params[k] for k in sorted({**fixed, **params})})


# -- objective and selection -----------------------------------------------------------------------
def seed_value(status: str | None, val: float | None) -> float:
    """One seed's contribution: its validation error when ok and finite, else +inf."""
    if status == "ok" and val is not None and math.isfinite(val):
        return float(val)
    return math.inf


def objective(per_seed: Iterable[tuple[str | None, float | None]]) -> float:
    """The median over seeds of :func:`seed_value` (an empty list is +inf)."""
    values = [seed_value(s, v) for s, v in per_seed]
    return statistics.median(values) if values else math.inf


def select(trials: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The chosen trial among ``{"number", "value", ...}`` dicts: the lowest finite value, ties
    to the lower number; None when no trial has a finite value."""
    finite = [t for t in trials if t.get("value") is not None and math.isfinite(t["value"])]
    return min(finite, key=lambda t: (t["value"], t["number"])) if finite else None


# -- studies as the harness reads them --------------------------------------------------------------
@dataclass
class StudySummary:
    name: str
    solver: str
    problem: str
    dim: int
    protocol: dict[str, Any]
    space: dict[str, str]
    n_trials: int
    n_complete: int
    trials: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> dict[str, Any] | None:
        return select(self.trials)

    @property
    def no_choice(self) -> str | None:
        """Why the study chose no trial (None when it chose one)."""
        if self.best is not None:
            return None
        return (f"study {self.name!r} has no trial with a finite objective ({self.n_complete} of "
                f"{self.n_trials} trials done, none ok on every seed)")

    def chosen_spec(self, steps: int | None) -> str:
        if self.no_choice:
            raise TuningError(f"{self.no_choice}; nothing to run")
        return trial_spec(self.solver, self.best["params"], steps)


def summarize(storage) -> list[StudySummary]:
    """Every pinnbench study of an Optuna storage (a URL or a storage object), in name order."""
    optuna = require_optuna()
    out = []
    for s in sorted(optuna.get_all_study_summaries(storage, include_best_trial=False),
                    key=lambda s: s.study_name):
        attrs = s.user_attrs
        if "protocol" not in attrs:
            continue  # not a pinnbench study
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        trials = [{"number": t.number, "state": t.state.name, "value": t.value,
                   "params": t.user_attrs.get("params", dict(t.params)),
                   "seeds": t.user_attrs.get("seeds", {})}
                  for t in study.get_trials(deepcopy=False)]
        out.append(StudySummary(
            name=s.study_name, solver=attrs["solver"], problem=attrs["problem"],
            dim=int(attrs["dim"]), protocol=attrs["protocol"], space=attrs.get("space", {}),
            n_trials=len(trials), n_complete=sum(t["state"] == "COMPLETE" for t in trials),
            trials=trials))
    return out


def protocol_differences(studies: list[StudySummary]) -> list[str]:
    """How a set of studies differs in what must be equal for a fair comparison: the number of
    trials (asked and completed), and every field of the protocol (budget, seeds, sampler and
    its seed, selection rule, model, dtype, device). An empty list: one protocol for all."""
    out = []

    def compare(label: str, value_of) -> None:
        values: dict[str, list[str]] = {}
        for s in studies:
            values.setdefault(repr(value_of(s)), []).append(s.name)
        if len(values) > 1:
            parts = [f"{v} in {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                     for v, names in sorted(values.items(), key=lambda kv: -len(kv[1]))]
            out.append(f"{label} differ: " + "; ".join(parts))

    compare("trials", lambda s: s.n_trials)
    compare("completed trials", lambda s: s.n_complete)
    for key in sorted({k for s in studies for k in s.protocol}):
        compare(key, lambda s, k=key: s.protocol.get(k))
    return out


def check_equal_protocol(studies: list[StudySummary]) -> None:
    """Raise TuningError when the studies did not all run under one protocol."""
    diffs = protocol_differences(studies)
    if diffs:
        raise TuningError("the studies were not tuned alike: " + " | ".join(diffs))
