"""The zeroth-order family's diagnostics (zo, sdze;
:class:`pinnbench.solvers._zo_step.ZerothOrderSolver` declares them through
:meth:`pinnbench.solver.Solver.diagnostics`; ``pinnbench run --diagnostics``).

What the cell's ``diagnostics`` column then holds:

- ``gradient_variance``: {``initial``: ..., ``final``: ...}, the ratios of
  :func:`gradient_estimate_variance` (below) at the initial theta (the model
  rebuilt from the cell's seed, as the cell built it) and at the final theta. With one spatial
  sample omega held fixed and G = grad_theta L_hat(theta; omega) from autograd, and the
  solver's perturbations z_k (its q, rank, refresh):

      ratio_step   = E ||g_hat - G||^2 / ||G||^2,  g_hat = (1/q) sum_k (z_k . G) z_k
      ratio_window = E ||g_bar - G||^2 / ||G||^2,  g_bar the mean of WINDOW consecutive steps
      ratio_held   = E ||g_hat - S||^2 / ||S||^2,  S = E_Xi[g_hat] for the held basis
                     ((U U^T / r) G (V V^T / r) for a low-rank matrix, G elsewhere)
      cos_held     = mean cos(S, G);  n_params = P

  For a full Gaussian z, E ||g_hat - G||^2 = (P + 1) ||G||^2 / q (Isserlis), so ratio_step ~ P/q;
  the subspace's claim (docs/domain.md §3, §7) is that ratio_held is O(r^2) per matrix.
  It materialises z (P numbers) per perturbation: above :data:`MAX_PARAMS` it is not computed and
  ``gradient_variance`` says why (``{"skipped": reason}``).
- ``zo_quotient_variance``: [{eps, crns, variance, samples}, ...] at the final theta: the sample
  variance, over ``samples`` independent draws of the step's randomness (perturbations, points,
  probes), of the first difference quotient c = [L(theta + eps z) - L(theta - eps z)] / (2 eps)
  for every eps of :data:`EPS_GRID` with common random numbers on and off (the solver's other
  parameters as in the cell). Without CRNS, c carries [L(theta; omega_1) - L(theta;
  omega_2)] / (2 eps), so its variance grows like Var_omega[L] / (2 eps^2); with CRNS
  c = z . grad L_hat(theta; omega) + O(eps^2) and the variance is flat in eps (docs/domain.md §3).
  Draws are taken round robin over the settings until :data:`QUOTIENT_SAMPLES` each or
  :data:`QUOTIENT_TIME_S` seconds, whichever comes first, so a cut leaves every setting with
  (nearly) the same count; ``samples`` says how many each got (settings with < 2 are left out,
  and ``skipped`` says so).

Everything is computed on fresh solvers of the cell's spec (:func:`pinnbench.cells.diagnostics.fresh_solver`),
so the trained solver and the trajectory are untouched.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch
from torch import Tensor

from pinnbench.cells.diagnostics import diagnostics_generator, fresh_solver, guarded, initial_model
from pinnbench.seeds import cell_stream_seed, derive_seed, generator

#: P above which the gradient-variance ratios (P-sized vectors per perturbation) are not computed
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
    n_params = sum(p.numel() for p in model.params)
    if n_params > MAX_PARAMS:
        return {"skipped": f"P = {n_params:,} > {MAX_PARAMS:,}: the ratios materialise P-sized "
                           "vectors per perturbation "
                           "(pinnbench.solvers._zo_diagnostics.MAX_PARAMS)"}
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


def gradient_estimate_variance(solver, seed: int, window: int = 10,
                               windows: int = 100) -> dict[str, float]:
    """How far the solver's gradient estimates are from the gradient, at the current theta.

    One spatial sample omega (the one the step seed ``seed`` gives) is held fixed, and
    G = grad_theta L_hat(theta; omega) comes from autograd. The quotients are taken as z . G,
    which is what the common-random-numbers quotient is up to O(eps^2) (tests/test_sdze_reference
    checks it), so the figures describe the perturbations alone. The perturbations are drawn
    exactly as the solver (a :class:`pinnbench.solvers._zo_step.ZerothOrderSolver`) draws them
    at steps t0, t0 + 1, ... (its rank, refresh period and q), and:

    - ``ratio_step`` = E ||g_hat - G||^2 / ||G||^2 for one step's g_hat = (1/q) sum_k (z_k.G) z_k;
    - ``ratio_window`` = E ||g_bar - G||^2 / ||G||^2 for the mean g_bar of ``window`` consecutive
      steps (what momentum with beta = 1 - 1/window integrates, at fixed theta); the held bases
      change every ``refresh`` steps inside the window, and every window starts a new basis;
    - ``ratio_held`` = E ||g_hat - S||^2 / ||S||^2 about the mean S = E_Xi[g_hat] for the held
      basis (S = (U U^T / r) G (V V^T / r) for a low-rank matrix, G elsewhere): the exploration
      variance inside the subspace, O(r^2) per matrix instead of O(m n);
    - ``cos_held`` = mean cos(S, G): how well a held basis's mean points along the gradient;
    - ``n_params`` = P.

    A diagnostic for small models: it materialises z (P numbers) per perturbation. Leaves theta,
    the step count and the solver's generator as they were."""
    from pinnbench.maths.model import PINN
    from pinnbench.maths.step_data import draw_step_data

    problem, model, params = solver.problem, solver.model, solver.params

    points_seed, probes_seed = solver.evaluation_seeds(seed, 0, True) if params["crns"] else (
        derive_seed(seed, 2), derive_seed(seed, 3))
    data = draw_step_data(problem, params["points"], generator(points_seed, problem.device),
                          params["estimator"], params["probes"], solver.estimator_options,
                          sets=2 if params["loss"] == "unbiased" else 1,
                          probe_generator=generator(probes_seed, problem.device))
    theta = [w.detach().clone().requires_grad_(True) for w in model.params]
    with torch.enable_grad():
        loss = solver.residual_loss(data, PINN(problem, theta, model.activation))
        grads = [g.detach() for g in torch.autograd.grad(loss, theta)]
    del theta
    g_flat = torch.cat([g.reshape(-1) for g in grads])
    g_sq = float(g_flat @ g_flat)
    t_saved = solver.t
    refresh = params.get("refresh", 1)
    step_err = window_err = held_err = held_norm = cos_sum = 0.0
    n_steps = 0
    try:
        for w in range(windows):
            g_bar = torch.zeros_like(g_flat)
            for j in range(window):
                solver.t = w * window * refresh + j  # every window starts a new basis
                perturbations = solver.perturbations(derive_seed(seed, 7, w, j))
                g_hat = torch.zeros_like(g_flat)
                for pert in perturbations:
                    z = torch.cat([pert.dense(i).reshape(-1) for i in range(len(grads))])
                    g_hat += float(z @ g_flat) * z
                g_hat /= len(perturbations)
                sketch = torch.cat([fixed_basis_mean(b, g).reshape(-1)
                                    for b, g in zip(perturbations[0].bases, grads)])
                step_err += float(((g_hat - g_flat) ** 2).sum())
                held_err += float(((g_hat - sketch) ** 2).sum())
                s_sq = float(sketch @ sketch)
                held_norm += s_sq
                cos_sum += float(sketch @ g_flat) / (s_sq * g_sq) ** 0.5
                n_steps += 1
                g_bar += g_hat
            g_bar /= window
            window_err += float(((g_bar - g_flat) ** 2).sum())
    finally:
        solver.t = t_saved
    return {"ratio_step": step_err / n_steps / g_sq, "ratio_window": window_err / windows / g_sq,
            "ratio_held": held_err / held_norm, "cos_held": cos_sum / n_steps,
            "n_params": float(g_flat.numel())}


def fixed_basis_mean(basis, g: Tensor) -> Tensor:
    """E_Xi[(z . G) z] for z = U Xi V^T / r with the basis held: (U U^T / r) G (V V^T / r)."""
    if basis is None:
        return g
    v = basis.v_dense()
    return (basis.u @ (basis.u.T @ g @ v) @ v.T) / basis.rank**2
