"""Estimator diagnostics of a finished cell (``pinnbench run --diagnostics``; issue 11).

What the cell stores in its ``diagnostics`` JSON column, computed after training, outside the
step times and the peaks (:func:`pinnbench.measurement.execute`), on a fresh solver of the same
spec set up from the cell's seed (stream ``"diagnostics"``), so the trained solver, its
generator and the training trajectory are untouched.

For a zeroth-order solver (zo, sdze; :class:`pinnbench.solvers._common.ZerothOrderSolver`):

- ``gradient_variance``: {``initial``: ..., ``final``: ...}, the ratios of
  :func:`pinnbench.solvers._common.gradient_estimate_variance` at the initial theta (the model
  rebuilt from the cell's seed, as the cell built it) and at the final theta. With one spatial
  sample omega held fixed and G = grad_theta L_hat(theta; omega) from autograd, and the
  solver's directions z_k (its q, rank, refresh):

      ratio_step   = E ||g_hat - G||^2 / ||G||^2,  g_hat = (1/q) sum_k (z_k . G) z_k
      ratio_window = E ||g_bar - G||^2 / ||G||^2,  g_bar the mean of WINDOW consecutive steps
      ratio_held   = E ||g_hat - S||^2 / ||S||^2,  S = E_Xi[g_hat] for the held basis
                     ((U U^T / r) G (V V^T / r) for a low-rank matrix, G elsewhere)
      cos_held     = mean cos(S, G);  n_params = P

  For a full Gaussian z, E ||g_hat - G||^2 = (P + 1) ||G||^2 / q (Isserlis), so ratio_step ~ P/q;
  the subspace's claim (docs/domain.md §3, §7) is that ratio_held is O(r^2) per matrix.
  It materialises z (P numbers) per direction: above :data:`MAX_PARAMS` it is not computed and
  ``gradient_variance`` says why (``{"skipped": reason}``).
- ``zo_quotient_variance``: [{eps, crns, variance, samples}, ...] at the final theta: the sample
  variance, over ``samples`` independent draws of the step's randomness (directions, points,
  probes), of the first difference quotient c = [L(theta + eps z) - L(theta - eps z)] / (2 eps)
  for every eps of :data:`EPS_GRID` with common random numbers on and off (the solver's other
  parameters as in the cell). Without CRNS, c carries [L(theta; omega_1) - L(theta;
  omega_2)] / (2 eps), so its variance grows like Var_omega[L] / (2 eps^2); with CRNS
  c = z . grad L_hat(theta; omega) + O(eps^2) and the variance is flat in eps (docs/domain.md §3).
  Draws are taken round robin over the settings until :data:`QUOTIENT_SAMPLES` each or
  :data:`QUOTIENT_TIME_S` seconds, whichever comes first, so a cut leaves every setting with
  (nearly) the same count; ``samples`` says how many each got (settings with < 2 are left out,
  and ``skipped`` says so).

For a backprop solver (bp) there is no zeroth-order quotient or direction: the column holds
``{"not_applicable": reason, "time_s": ...}`` and neither entry.

Every entry records its cost (``time_s``); a failure inside the diagnostics is recorded as
``error`` and never changes the cell's status.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

#: P above which the direction-variance ratios (P-sized vectors per direction) are not computed
MAX_PARAMS = 5_000_000
#: gradient_estimate_variance's window (steps averaged) and number of windows sampled
WINDOW = 10
WINDOWS = 20
#: eps values of the quotient variance, and draws per (eps, crns) setting
EPS_GRID = (1e-4, 1e-3, 1e-2, 1e-1)
QUOTIENT_SAMPLES = 16
#: wall-clock cap of the quotient-variance draws (all settings together)
QUOTIENT_TIME_S = 30.0


def collect(solver, problem, model, spec: dict[str, Any]) -> dict[str, Any]:
    """The diagnostics of a finished cell (see the module docstring); never raises."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    try:
        from pinnbench.solvers._common import ZerothOrderSolver

        if not isinstance(solver, ZerothOrderSolver):
            reason = (f"{solver.name} takes autograd gradients: no zeroth-order direction or "
                      "difference quotient to measure")
            out["not_applicable"] = reason
        else:
            out["gradient_variance"] = _guarded(_gradient_variance, solver, problem, model, spec)
            out.update(_guarded(_quotient_variance, solver, problem, model, spec))
    except Exception as exc:  # noqa: BLE001 - a diagnostic never fails the cell
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    out["time_s"] = time.perf_counter() - t0
    return out


#: the key the report's variance-vs-eps figure reads (pinnbench.report.figures.VARIANCE_KEY)
QUOTIENT_KEY = "zo_quotient_variance"


def _guarded(fn, *args) -> dict[str, Any]:
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - one failed diagnostic leaves the others
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def diagnostics_generator(spec: dict[str, Any], device) -> torch.Generator:
    from pinnbench.measurement import derive_seed

    return torch.Generator(device=device).manual_seed(derive_seed(spec["seed"], "diagnostics"))


def initial_model(problem, spec: dict[str, Any]):
    """The model as the cell built it before its first step (same seed stream, "model")."""
    from pinnbench.measurement import derive_seed
    from pinnbench.model import make_model

    g = torch.Generator(device=problem.device).manual_seed(derive_seed(spec["seed"], "model"))
    return make_model(problem, width=spec["width"], depth=spec["depth"], generator=g)


def fresh_solver(spec_text: str, problem, model, spec: dict[str, Any], **override):
    """A solver of ``spec_text`` (parameters ``override``-n) set up on ``model`` from the
    diagnostics' own seed stream."""
    from pinnbench.solver import solver_from_spec

    base = solver_from_spec(spec_text)
    solver = type(base)(**{**base.params, **override})
    solver.setup(problem, model, diagnostics_generator(spec, problem.device))
    return solver


def _gradient_variance(solver, problem, model, spec) -> dict[str, Any]:
    from pinnbench.measurement import derive_seed
    from pinnbench.solvers._common import gradient_estimate_variance

    n_params = sum(p.numel() for p in model.params)
    if n_params > MAX_PARAMS:
        return {"skipped": f"P = {n_params:,} > {MAX_PARAMS:,}: the ratios materialise P-sized "
                           "vectors per direction (pinnbench.diagnostics.MAX_PARAMS)"}
    t = time.perf_counter()
    seed = derive_seed(spec["seed"], "diagnostics-step")
    out: dict[str, Any] = {"window": WINDOW, "windows": WINDOWS}
    for at, m in (("initial", initial_model(problem, spec)), ("final", model)):
        s = fresh_solver(solver.spec, problem, m, spec)
        out[at] = gradient_estimate_variance(s, seed=seed, window=WINDOW, windows=WINDOWS)
    out["time_s"] = time.perf_counter() - t
    return out


def _quotient_variance(solver, problem, model, spec) -> dict[str, Any]:
    t = time.perf_counter()
    settings = [(eps, crns) for eps in EPS_GRID for crns in (True, False)]
    # q = 1: the first quotient of a step does not depend on q (its seeds do not)
    solvers = {k: fresh_solver(solver.spec, problem, model, spec, eps=k[0], crns=k[1], q=1)
               for k in settings}
    gens = {k: diagnostics_generator(spec, problem.device) for k in settings}  # same draws
    draws: dict[tuple, list[float]] = {k: [] for k in settings}
    for _ in range(QUOTIENT_SAMPLES):
        if time.perf_counter() - t > QUOTIENT_TIME_S:
            break
        for k in settings:
            draws[k].append(solvers[k].difference_quotients(gens[k])[0])
    entries, short = [], []
    for (eps, crns), qs in draws.items():
        finite = [q for q in qs if math.isfinite(q)]
        if len(finite) < 2:
            short.append(f"eps={eps:g},crns={str(crns).lower()}")
            continue
        entries.append({"eps": eps, "crns": crns, "variance": statistics.variance(finite),
                        "samples": len(finite)})
    out: dict[str, Any] = {QUOTIENT_KEY: entries, "zo_quotient_theta": "final",
                           "zo_quotient_time_s": time.perf_counter() - t}
    if short:
        out["zo_quotient_skipped"] = (f"fewer than 2 finite draws within {QUOTIENT_TIME_S:g} s "
                                      f"for {', '.join(short)}")
    return out
