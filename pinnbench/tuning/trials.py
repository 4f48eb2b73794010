"""Run the tuning protocol (:mod:`pinnbench.tuning.study`): open or resume the studies, ask their
trials, and tell each trial its objective as its last seed finishes (:class:`TrialRecorder`);
the trials' seeds run as isolated cells of one run of the results store, through the run's
lifecycle (:func:`pinnbench.commands.run_lifecycle.record_run`, as ``pinnbench run``'s cells).

:func:`prepare` validates everything and writes nothing; :func:`open_studies` creates or
resumes the studies (the first write); :func:`trial_cells` lists the cells still to run, in an
order that interleaves the studies (trial 0 of every study, then trial 1, ...), so that machine
load falls on every solver alike (docs/domain.md §9). A cell whose spec two trials share (same
parameters) runs once and serves both. An interrupted tune resumes with the same command: the
asked trials keep their parameters, and a trial's seeds that finished are not run again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pinnbench.cells.cellspec import CellSpec
from pinnbench.tuning.study import (Protocol, TuningError, ask_trials, base_spec, make_sampler,
                              objective, require_optuna, search_space, study_name, trial_spec)


@dataclass
class StudyPlan:
    """One (solver spec, problem, d) to tune."""

    spec: str  # canonical base spec (fixed parameters only)
    problem: str
    dim: int
    space: dict[str, Any]
    name: str


@dataclass
class TunePlan:
    protocol: Protocol
    studies: list[StudyPlan]
    cell_options: dict[str, Any] = field(default_factory=dict)


def prepare(solvers: list[str], problems: list[str], dims: list[int], protocol: Protocol,
            cell_options: dict[str, Any] | None = None) -> TunePlan:
    """Validate the request (every spec, its search space, every problem and d as a cell) and
    return the plan; writes nothing. ``cell_options``: further cell spec keys (timeout_s,
    threads, imports, warmup)."""
    options = dict(cell_options or {})
    studies = []
    for spec in solvers:
        try:
            canonical = base_spec(spec)[2]
        except (ValueError, TypeError) as exc:
            raise TuningError(str(exc)) from None
        space = search_space(spec)
        for problem in problems:
            for dim in dims:
                try:  # the solver at its defaults, as a cell: problem, d, model, device
                    _cell(canonical, problem, dim, protocol.seeds[0], protocol, options, None)
                except (ValueError, TypeError) as exc:
                    raise TuningError(str(exc)) from None
                studies.append(StudyPlan(canonical, problem, dim, space,
                                         study_name(canonical, problem, dim, protocol)))
    names = [s.name for s in studies]
    if len(set(names)) != len(names):
        raise TuningError("the same (solver, problem, d) is listed twice")
    return TunePlan(protocol, studies, options)


def _cell(spec: str, problem: str, dim: int, seed: int, protocol: Protocol,
          options: dict[str, Any], mark: str | None) -> dict[str, Any]:
    return CellSpec.from_dict({
        "problem": problem, "dim": dim, "solver": spec, "seed": seed, "steps": protocol.steps,
        "width": protocol.width, "depth": protocol.depth, "dtype": protocol.dtype,
        "device": protocol.device, "validation": True, "floors": False, "tuning_trial": mark,
        **options}).to_dict()


def check_existing(storage, plan: TunePlan) -> None:
    """TuningError when a study of the plan exists under another protocol or another search
    space (the declarations it recorded when created), or already has more trials than asked
    (reads only)."""
    optuna = require_optuna()
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, False)}
    want = plan.protocol.fixed()
    for sp in plan.studies:
        s = existing.get(sp.name)
        if s is None:
            continue
        have = s.user_attrs.get("protocol")
        if have != want:
            raise TuningError(f"study {sp.name!r} exists with another protocol (differing: "
                              f"{', '.join(_differing(have or {}, want))}); use another "
                              "--study-store")
        space = {k: v.describe() for k, v in sp.space.items()}
        recorded = s.user_attrs.get("space")
        if recorded is not None and recorded != space:
            diff = _differing(recorded, space)
            raise TuningError(
                f"study {sp.name!r} exists with another search space ("
                + "; ".join(f"{k}: {recorded.get(k, 'not searched')} recorded, "
                            f"{space.get(k, 'not searched')} now" for k in diff)
                + "); its trials were drawn from the old one: use another --study-store")
        if s.n_trials > plan.protocol.trials:
            raise TuningError(f"study {sp.name!r} already has {s.n_trials} trials, more than "
                              f"--trials {plan.protocol.trials}; give --trials {s.n_trials} or "
                              "more")


def _differing(a: dict, b: dict) -> list[str]:
    """The keys whose values differ between ``a`` and ``b`` (a missing key counts), sorted."""
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def open_studies(storage, plan: TunePlan) -> dict[str, Any]:
    """Create or load every study and ask its trials up to the protocol's count (writes)."""
    optuna = require_optuna()
    out = {}
    for sp in plan.studies:
        study = optuna.create_study(study_name=sp.name, storage=storage, direction="minimize",
                                    sampler=make_sampler(plan.protocol.sampler,
                                                         plan.protocol.sampler_seed),
                                    load_if_exists=True)
        if "protocol" not in study.user_attrs:
            study.set_user_attr("protocol", plan.protocol.fixed())
            study.set_user_attr("solver", sp.spec)
            study.set_user_attr("problem", sp.problem)
            study.set_user_attr("dim", sp.dim)
            study.set_user_attr("space", {k: v.describe() for k, v in sp.space.items()})
        ask_trials(study, sp.space, plan.protocol.trials)
        out[sp.name] = study
    return out


@dataclass
class PendingCell:
    spec: dict[str, Any]
    #: (study name, trial number, seed) that this cell serves
    uses: list[tuple[str, int, int]]


def trial_cells(plan: TunePlan, studies: dict[str, Any]) -> list[PendingCell]:
    """The cells still to run, interleaved across studies; a trial whose parameters give an
    invalid spec is told +inf now (its message recorded), not run."""
    by_id: dict[str, PendingCell] = {}
    order: list[tuple[int, int, int, str]] = []
    p = plan.protocol
    for k, sp in enumerate(plan.studies):
        study = studies[sp.name]
        for t in study.get_trials(deepcopy=False):
            if t.state.name != "RUNNING":
                continue
            done = t.user_attrs.get("seeds", {})
            try:
                spec = trial_spec(sp.spec, t.user_attrs["params"], p.steps)
                cells = {seed: _cell(spec, sp.problem, sp.dim, seed, p, plan.cell_options,
                                     f"{sp.name}#{t.number}")
                         for seed in p.seeds if str(seed) not in done}
            except (ValueError, TypeError) as exc:
                _set_attr(study, t, "invalid", str(exc)[:300])
                study.tell(t.number, math.inf)
                continue
            for seed, cell in cells.items():
                cid = CellSpec.from_dict(cell).cell_id
                if cid not in by_id:
                    by_id[cid] = PendingCell(cell, [])
                    order.append((t.number, seed, k, cid))
                by_id[cid].uses.append((sp.name, t.number, seed))
    return [by_id[cid] for *_, cid in sorted(order)]


def _set_attr(study, trial, key: str, value: Any) -> None:
    """A user attribute on a trial that may have been asked by another process."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


class TrialRecorder:
    """Records each finished cell on the trials it serves and tells a trial its objective once
    all its seeds are in (called in the planner's thread, the only writer of both stores, as
    each row of the run is written: :func:`pinnbench.commands.run_lifecycle.record_run`'s
    ``on_result``)."""

    def __init__(self, plan: TunePlan, studies: dict[str, Any], cells: list[PendingCell]) -> None:
        self.plan, self.studies = plan, studies
        self.uses = {CellSpec.from_dict(c.spec).cell_id: c.uses for c in cells}
        self.told: list[tuple[str, int, float]] = []

    def __call__(self, row: dict[str, Any]) -> None:
        for name, number, seed in self.uses.get(row["cell_id"], []):
            study = self.studies[name]
            trial = study.get_trials(deepcopy=False)[number]
            seeds = dict(trial.user_attrs.get("seeds", {}))
            val = row.get("final_val_rel_l2")
            seeds[str(seed)] = {"cell_id": row["cell_id"], "run_id": row.get("run_id"),
                                "status": row["status"],
                                "final_val_rel_l2": val if val is None or math.isfinite(val)
                                else None,
                                "message": (row.get("message") or "")[:200]}
            _set_attr(study, trial, "seeds", seeds)
            if all(str(s) in seeds for s in self.plan.protocol.seeds):
                value = objective((seeds[str(s)]["status"], seeds[str(s)]["final_val_rel_l2"])
                                  for s in self.plan.protocol.seeds)
                study.tell(number, value)
                self.told.append((name, number, value))
