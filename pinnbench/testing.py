"""The solver conformance suite: ``check_solver(spec_or_class)``, like scikit-learn's
``check_estimator`` (sklearn/utils/estimator_checks.py): one set of checks that every registered
solver passes on tiny problems, so a new solver is tested the day it is added.

Checks (each raises AssertionError naming the solver, the problem and what differed):

- ``parameters``: unknown parameter names and bad values raise ValueError, and the message lists
  what is allowed; the canonical spec round-trips through ``solver_from_spec``;
- ``deterministic``: the same seed gives the same trajectory (bit-identical losses and params);
- ``finite``: every loss is finite;
- ``changes``: the parameters actually change;
- ``evaluation``: ``pinnbench.judge.metrics.evaluate`` does not alter the training state (a step after
  an evaluation equals a step without it, bit for bit);
- ``descent`` (on :data:`DESCENT_PROBLEM` only, a problem every solver must fit a little): after
  :data:`DESCENT_STEPS` steps the loss on a FIXED sample is lower than before, in the median
  over :data:`DESCENT_SEEDS` seeds (the check's seed and the next ones: each its own instance,
  initialisation and run). The sample is :data:`DESCENT_POINTS` points drawn once, and the
  operator is the exact one (autodiff, no probes), so before and after see the same points and
  the same (no) probes and the change is the parameters' alone. It catches a solver that climbs
  (a flipped sign) or that only wanders. One seed is not enough for a noisy step (ours, measured
  on seeds 0-11 when the perturbations' draws changed: zo at its defaults climbed on 2 of 12,
  sdze[crns=false] on 6 of 12, each at seed 0 among them; both had passed at seed 0 before,
  by the luck of the draws).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch

from pinnbench.solver import SOLVERS, Param, Solver, parse_spec, solver_from_spec

#: (problem id, dim): a second-order, a time-dependent and a (well-posed) fourth-order problem,
#: all tiny
TINY_PROBLEMS: tuple[tuple[str, int], ...] = (
    ("poisson-2body-v1", 6),
    ("heat-v1", 4),
    ("biharmonic-clamped-3body-v1", 5),
)
TINY_MODEL = {"width": 8, "depth": 2}
#: small batches for speed, unless the spec sets them
TINY_PARAMS = {"points": 8, "probes": 4}
#: the descent check: its problem (one of TINY_PROBLEMS), steps, and fixed sample's size
DESCENT_PROBLEM = ("poisson-2body-v1", 6)
DESCENT_STEPS = 10
DESCENT_POINTS = 64
DESCENT_SEEDS = 5


def shipped_solvers() -> list[str]:
    """The solvers pinnbench ships (solvers/), without the test-only or third-party plugins that
    other code may have registered in this process."""
    return [n for n in SOLVERS.names() if SOLVERS.get(n).__module__.startswith("pinnbench.solvers.")]


def shipped_problems() -> list[str]:
    """The problem ids pinnbench ships (problems/), likewise."""
    from pinnbench.maths.problem_registry import list_problems, problem_class

    return [p for p in list_problems()
            if problem_class(p).__module__.startswith("pinnbench.problems.")]


def _resolve(spec_or_class: str | type[Solver]) -> tuple[type[Solver], dict[str, Any]]:
    if isinstance(spec_or_class, str):
        name, params = parse_spec(spec_or_class)
        return SOLVERS.get(name), params
    if isinstance(spec_or_class, type) and issubclass(spec_or_class, Solver):
        return spec_or_class, {}
    raise TypeError(f"check_solver takes a spec string or a Solver subclass, got {spec_or_class!r}")


def _bad_values(param: Param) -> list[Any]:
    """Values that ``param`` must refuse."""
    kind = param.kind
    if kind is bool:
        return ["maybe", 2]
    if param.choices is not None:
        return ["no-such-choice-xyz"]
    if kind is int:
        out = ["abc", 1.5, float("nan")]
    elif kind is float:
        out = ["abc", float("inf"), float("nan")]
    else:
        return []
    if param.check is not None:
        for v in (-1, 0, 10**9):
            try:
                ok = param.check(v)
            except Exception:  # noqa: BLE001 - a check that cannot take v refuses it
                ok = False
            if not ok:
                out.append(v)
    return out


def check_parameters(cls: type[Solver]) -> None:
    allowed = cls.all_parameters()
    try:
        cls(no_such_parameter_xyz=1)
    except ValueError as e:
        missing = [k for k in allowed if k not in str(e)]
        assert not missing, f"{cls.name}: unknown-parameter error does not list {missing}: {e}"
    else:
        raise AssertionError(f"{cls.name}: an unknown parameter name was accepted")
    for name, param in allowed.items():
        assert param.kind in (bool, int, float, str), f"{cls.name}.{name}: bad type {param.kind}"
        for bad in _bad_values(param):
            try:
                cls(**{name: bad})
            except ValueError as e:
                assert param.describe() in str(e), (
                    f"{cls.name}: error for {name}={bad!r} does not say what is allowed "
                    f"({param.describe()!r}): {e}")
            else:
                raise AssertionError(f"{cls.name}: bad value {name}={bad!r} was accepted")
    solver = cls()
    again = solver_from_spec(solver.spec)
    assert again.params == solver.params, f"{cls.name}: spec {solver.spec} does not round-trip"


@functools.lru_cache(maxsize=64)
def _tiny_run(cls, params: tuple, problem_id: str, dim: int, seed: int, steps: int,
              evaluate_at: int | None = None, repeat: int = 0) -> tuple[list[float],
                                                                   list[torch.Tensor],
                                                                   list[torch.Tensor]]:
    """Losses, initial and final parameters of ``steps`` steps on a tiny problem (cached, so the
    checks of one solver share their runs; ``repeat`` makes an independent second run)."""
    from pinnbench.judge.metrics import evaluate
    from pinnbench.maths.model import make_model
    from pinnbench.maths.problem_registry import make_problem

    problem = make_problem(problem_id, dim=dim, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    model = make_model(problem, generator=gen, **TINY_MODEL)
    initial = [p.detach().clone() for p in model.params]
    solver = cls(**dict(params))
    solver.setup(problem, model, gen)
    losses = []
    for i in range(steps):
        if evaluate_at is not None and i == evaluate_at:
            evaluate(model, problem)
        losses.append(float(solver.step()))  # a float or a 0-d tensor
    return losses, initial, [p.detach().clone() for p in model.params]


def fixed_sample_loss(problem, params: list[torch.Tensor], x: torch.Tensor) -> float:
    """mean_x (L u_theta - f)^2 at the points ``x`` with the exact operator (autodiff in x, no
    probes): a deterministic function of the parameters for a fixed sample."""
    from pinnbench.maths.estimators import estimate_terms
    from pinnbench.maths.model import PINN

    model = PINN(problem, [p.detach() for p in params])
    with torch.enable_grad():
        u, terms = estimate_terms(model, x, method="exact", generator=None, probes=1)
        r = problem.residual(terms, u, x)
    return float((r * r).mean().detach())


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def solver_checks(spec_or_class: str | type[Solver], problems=TINY_PROBLEMS, steps: int = 3,
                  seed: int = 0) -> list[tuple[str, Callable[[], None]]]:
    """Every check of the suite as ``(name, run)``: ``parameters``, then ``deterministic``,
    ``finite``, ``changes`` and ``evaluation`` on each tiny problem the solver does not skip
    (names like ``finite:poisson-2body-v1``), and ``descent`` on :data:`DESCENT_PROBLEM`. ``run()`` raises AssertionError naming the solver,
    the problem and what differed. For one test per check (like scikit-learn's
    ``parametrize_with_checks``): ``pytest.mark.parametrize("name, run", solver_checks(...))``."""
    from pinnbench.maths.problem_registry import list_problems, make_problem

    cls, spec_params = _resolve(spec_or_class)
    params = {**{k: v for k, v in TINY_PARAMS.items() if k in cls.all_parameters()}, **spec_params}
    solver = cls(**params)
    key = tuple(sorted(params.items()))
    checks: list[tuple[str, Callable[[], None]]] = [("parameters", lambda: check_parameters(cls))]
    for problem_id, dim in problems:
        if problem_id not in list_problems():
            continue
        if solver.skip(make_problem(problem_id, dim=dim, seed=seed))[0]:
            continue
        where = f"{solver.spec} on {problem_id} (dim {dim})"

        def run(evaluate_at=None, repeat=0, problem_id=problem_id, dim=dim):
            return _tiny_run(cls, key, problem_id, dim, seed, steps, evaluate_at, repeat)

        def deterministic(run=run, where=where):
            (losses, _, final), (losses2, _, final2) = run(), run(repeat=1)
            assert losses == losses2 and _same(final, final2), (
                f"{where}: two runs with the same seed differ (losses {losses} vs {losses2})")

        def finite(run=run, where=where):
            losses = run()[0]
            assert all(math.isfinite(v) for v in losses), f"{where}: non-finite loss {losses}"

        def changes(run=run, where=where):
            _, initial, final = run()
            assert not _same(initial, final), f"{where}: the parameters did not change"

        def evaluation(run=run, where=where):
            losses, _, final = run()
            losses3, _, final3 = run(evaluate_at=steps - 1)
            assert losses3 == losses and _same(final3, final), (
                f"{where}: evaluating the model changed the training trajectory "
                f"(losses {losses3} vs {losses})")

        def descent(problem_id=problem_id, dim=dim, where=where):
            ratios = []
            for s in range(seed, seed + DESCENT_SEEDS):
                problem = make_problem(problem_id, dim=dim, seed=s)
                x = problem.sample_interior(DESCENT_POINTS, torch.Generator().manual_seed(s))
                _, initial, final = _tiny_run(cls, key, problem_id, dim, s, DESCENT_STEPS)
                ratios.append(fixed_sample_loss(problem, final, x)
                              / fixed_sample_loss(problem, initial, x))
            median = sorted(ratios)[len(ratios) // 2]
            assert median < 1.0, (
                f"{where}: {DESCENT_STEPS} steps did not lower the loss on a fixed sample of "
                f"{DESCENT_POINTS} points (exact operator) in the median over seeds "
                f"{seed}..{seed + DESCENT_SEEDS - 1}: after / before "
                + ", ".join(f"{r:.4g}" for r in ratios))

        for check in (deterministic, finite, changes, evaluation):
            checks.append((f"{check.__name__}:{problem_id}", check))
        if (problem_id, dim) == DESCENT_PROBLEM:
            checks.append((f"descent:{problem_id}", descent))
    assert len(checks) > 1, f"{solver.spec}: no tiny problem to check on (all skipped or missing)"
    return checks


def check_solver(spec_or_class: str | type[Solver], problems=TINY_PROBLEMS, steps: int = 3,
                 seed: int = 0) -> list[str]:
    """Run every check of :func:`solver_checks` on ``spec_or_class`` (``"sdze[rank=2]"`` or a
    Solver subclass); returns the names of the checks that ran, raises AssertionError on the
    first failure."""
    done = []
    for name, run in solver_checks(spec_or_class, problems, steps, seed):
        run()
        done.append(name)
    return done
