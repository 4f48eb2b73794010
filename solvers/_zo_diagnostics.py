"""The zeroth-order family's diagnostics (zo, sdze; :class:`pinnbench.solvers._common.ZerothOrderSolver`
declares them through :meth:`pinnbench.solver.Solver.diagnostics`; ``pinnbench run --diagnostics``).

What the cell's ``diagnostics`` column then holds:

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

Everything is computed on fresh solvers of the cell's spec (:func:`pinnbench.diagnostics.fresh_solver`),
so the trained solver and the trajectory are untouched.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from pinnbench.diagnostics import diagnostics_generator, fresh_solver, guarded, initial_model
from pinnbench.seeds import cell_stream_seed

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


def zeroth_order_diagnostics(solver, problem, model, spec: dict[str, Any]) -> dict[str, Any]:
    """``gradient_variance`` and the quotient variance of a finished zeroth-order cell (the
    module docstring); each failure is recorded apart."""
    out = {"gradient_variance": guarded(_gradient_variance, solver, problem, model, spec)}
    out.update(guarded(_quotient_variance, solver, problem, model, spec))
    return out


#: the key the report's variance-vs-eps figure reads (pinnbench.report.figures.VARIANCE_KEY)
QUOTIENT_KEY = "zo_quotient_variance"


def _gradient_variance(solver, problem, model, spec) -> dict[str, Any]:
    from pinnbench.solvers._common import gradient_estimate_variance

    n_params = sum(p.numel() for p in model.params)
    if n_params > MAX_PARAMS:
        return {"skipped": f"P = {n_params:,} > {MAX_PARAMS:,}: the ratios materialise P-sized "
                           "vectors per direction (pinnbench.solvers._zo_diagnostics.MAX_PARAMS)"}
    t = time.perf_counter()
    seed = cell_stream_seed(spec["seed"], "diagnostics-step")
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
