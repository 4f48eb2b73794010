"""Estimator diagnostics of a finished cell (``pinnbench run --diagnostics``): the harness's side.

After training, outside the step times and the peaks (:func:`pinnbench.cells.measurement.execute`),
the cell asks its solver for its diagnostics (:meth:`pinnbench.solver.Solver.diagnostics`) and
stores what it returns in the ``diagnostics`` JSON column, with their cost ``time_s``. A solver
that declares none gets ``{"not_applicable": reason}``; a failure inside the diagnostics is
recorded as ``error`` and never changes the cell's status. The harness names no solver: the
zeroth-order family's diagnostics (gradient-estimate and quotient variances) are declared by
that family (:mod:`pinnbench.solvers._zo_diagnostics`), and a third-party solver declares its
own the same way.

The tools here let a solver's diagnostics work on a **fresh** solver of the same spec, set up
from the cell's seed (stream ``"diagnostics"``), so the trained solver, its generator and the
training trajectory are untouched.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from pinnbench.seeds import cell_generator


def collect_diagnostics(solver, problem, model, spec: dict[str, Any]) -> dict[str, Any]:
    """The diagnostics of a finished cell: what ``solver.diagnostics`` returns, timed; never
    raises."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    try:
        found = solver.diagnostics(problem, model, spec)
        out.update(found if found is not None else {
            "not_applicable": f"{solver.name} declares no diagnostics (Solver.diagnostics)"})
    except Exception as exc:  # noqa: BLE001 - a diagnostic never fails the cell
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    out["time_s"] = time.perf_counter() - t0
    return out


def guarded(fn, *args) -> dict[str, Any]:
    """``fn(*args)``, or ``{"error": ...}`` when it raises: one failed diagnostic leaves the
    others."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - one failed diagnostic leaves the others
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def diagnostics_generator(spec: dict[str, Any], device) -> torch.Generator:
    """A generator of the cell's own ``"diagnostics"`` stream (the same draws every call)."""
    return cell_generator(spec["seed"], "diagnostics", device)


def initial_model(problem, spec: dict[str, Any]):
    """The model as the cell built it before its first step (same seed stream, "model")."""
    from pinnbench.maths.model import make_model

    return make_model(problem, width=spec["width"], depth=spec["depth"],
                      generator=cell_generator(spec["seed"], "model", problem.device))


def fresh_solver(spec_text: str, problem, model, spec: dict[str, Any], **override):
    """A solver of ``spec_text`` (parameters ``override``-n) set up on ``model`` from the
    diagnostics' own seed stream."""
    from pinnbench.solver import solver_from_spec

    base = solver_from_spec(spec_text)
    solver = type(base)(**{**base.params, **override})
    solver.setup(problem, model, diagnostics_generator(spec, problem.device))
    return solver
