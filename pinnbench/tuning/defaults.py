"""One configuration per solver spec from its studies on several (problem, d): the rule that
turns the defaults study (scripts/study_defaults, docs/tuning.md) into each solver's defaults.

A solver spec is tuned in one study per (problem, d), and every study asks the same trials: the
seeded sampler over the same search space gives trial k the same parameters in each (trials are
matched on their parameters here, not on their numbers, so a mismatch cannot pair two different
configurations). A configuration's **score** is the geometric mean, over the studies, of its
objective divided by that study's best objective (1 = best everywhere; 1.2 = 20 % above the best
on average, in log space). Every study counts alike whatever its error scale, which a mean of
raw errors would not do (a d = 1000 study with errors near 1 would outweigh a d = 100 one near
0.1). A configuration that failed on any seed of any study (objective +inf) or is not yet done
in every study has no score. The default is the lowest score, ties to the configuration asked
first. Ours: AlgoPerf scores a submission on several workloads by performance profiles of
ratios to the best, the same normalisation (Dahl et al. 2023).

:func:`differences` holds a choice against the defaults the solver declares today (its
``variant_defaults`` included, :meth:`pinnbench.solver.Solver.defaults_for`): the defaults come
from the committed study when it finds none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from pinnbench.solver import SOLVERS, parse_spec
from pinnbench.tuning.study import StudySummary, select


@dataclass(frozen=True)
class Choice:
    """The configuration a solver spec's studies choose."""

    solver: str
    params: dict[str, Any]
    #: geometric mean over the studies of objective / study's best (None: no configuration
    #: finished with a finite objective in every study)
    score: float | None
    #: the studies it is scored over; and how many of them have every trial done
    studies: int
    complete: int

    @property
    def provisional(self) -> bool:
        """Not every study has finished its trials: the choice may still change."""
        return self.complete < self.studies


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def choose(studies: Iterable[StudySummary]) -> list[Choice]:
    """One :class:`Choice` per solver spec among ``studies``, in spec order (module docstring)."""
    by_solver: dict[str, list[StudySummary]] = {}
    for s in studies:
        by_solver.setdefault(s.solver, []).append(s)
    out = []
    for solver in sorted(by_solver):
        group = by_solver[solver]
        ratios: dict[tuple, list[float]] = {}
        first: dict[tuple, tuple[int, dict[str, Any]]] = {}
        for s in group:
            best = select(s.trials)
            for t in s.trials:
                if t.get("state") != "COMPLETE":
                    continue
                k = _key(t["params"])
                if k not in first or t["number"] < first[k][0]:
                    first[k] = (t["number"], t["params"])
                v = t.get("value")
                ok = best is not None and v is not None and math.isfinite(v) and best["value"] > 0
                ratios.setdefault(k, []).append(v / best["value"] if ok else math.inf)
        scored = [(math.exp(sum(math.log(r) for r in rs) / len(rs)), first[k][0], k)
                  for k, rs in ratios.items()
                  if len(rs) == len(group) and all(math.isfinite(r) for r in rs)]
        complete = sum(s.n_complete == s.n_trials and s.n_trials > 0 for s in group)
        if not scored:
            out.append(Choice(solver, {}, None, len(group), complete))
            continue
        score, _, k = min(scored)
        out.append(Choice(solver, dict(first[k][1]), score, len(group), complete))
    return out


def declared(solver: str, names: Iterable[str]) -> dict[str, Any]:
    """The defaults the solver spec ``solver`` (``zo[crns=true]``) has today for ``names``."""
    name, fixed = parse_spec(solver)
    cls = SOLVERS.get(name)
    allowed = cls.all_parameters()
    defaults = cls.defaults_for({k: allowed[k].coerce(k, v) for k, v in fixed.items()})
    return {k: defaults[k] for k in names}


def differences(choice: Choice) -> dict[str, tuple[Any, Any]]:
    """{parameter: (declared default, chosen)} where the solver's declared defaults are not
    ``choice``'s configuration (empty: they are; a choice without a score has nothing to hold)."""
    if choice.score is None:
        return {}
    allowed = SOLVERS.get(parse_spec(choice.solver)[0]).all_parameters()
    now = declared(choice.solver, choice.params)
    return {k: (now[k], v) for k, v in sorted(choice.params.items())
            if now[k] != allowed[k].coerce(k, v)}
