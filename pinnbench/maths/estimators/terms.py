"""``estimate`` and ``estimate_terms``: every linear term of a problem's operator, by any method.

Terms and the estimators behind them (d spatial dimensions, V = ``probes``, v the probes):

- laplacian Δu = tr ∇²u (spatial block):
  ``exact``  Σ_{j<d} ∂²_j u, d reverse-mode passes;
  ``sdgd``   (d/|J|) Σ_{j∈J} ∂²_j u, J ⊂ {0..d-1} uniform without replacement, |J| = min(V, d)
             (Hu et al., "Tackling the curse of dimensionality with physics-informed neural
             networks", Neural Networks 2024);
  ``hte``, ``stde``, ``fd``  (1/V) Σ_k D_{v_k}^2 u with E[v vᵀ] = I (Hutchinson 1990; Hu et al.,
             "Hutchinson trace estimation for high-dimensional and high-order PINNs", CMAME 2024;
             Shi et al., "Stochastic Taylor derivative estimator", NeurIPS 2024); with
             ``dist="coordinate"`` the SDGD estimator above through jets or stencils.
- bilaplacian Δ²u = Σ_i Σ_j ∂²_i ∂²_j u:
  ``exact``  nested: the exact Laplacian of the exact Laplacian (O(d²) passes, small d only);
  ``sdgd``   (d/|I|)(d/|J|) Σ_{i∈I} Σ_{j∈J} ∂²_i ∂²_j u with independent index sets I, J;
  ``hte``, ``stde``, ``fd``  (1/3)(1/V) Σ_k D_{v_k}^4 u with v ~ N(0, I): by Isserlis,
             E[v_i v_j v_k v_l] = δ_ij δ_kl + δ_ik δ_jl + δ_il δ_jk, so E D_v^4 u = 3 Δ²u.
             Rademacher probes are refused (E v_i⁴ = 1, not 3: the mean would be
             Δ²u − (2/3) Σ_i ∂⁴_i u); coordinate probes too (Σ_j ∂⁴_j u is not Δ²u).
- dt = ∂_t u and dtt = ∂²_t u: the single direction e_t, deterministic in every method (exact
  for exact/sdgd/hte/stde; the central stencils of :mod:`.directional` for fd).
- weighted_laplacian Σ_i x_i² ∂²_i u and grad_power_mean (1/d) Σ_i |∂_i u|^c (the terminal-value
  problems, problems/terminal.py; maths in :mod:`.first_order`): ``exact`` all d coordinates;
  every other method samples coordinates J (|J| = min(V, d), the SDGD estimators
  (d/|J|) Σ_{j∈J} x_j² ∂²_j u and (1/|J|) Σ_{j∈J} |∂_j u|^c, unbiased), with the derivatives by
  autodiff (sdgd, hte), jets (stde) or stencils (fd), whatever ``dist`` says (dist chooses the
  probes of the Laplacian and bilaplacian; these two terms have no dense-probe estimator here).
  When the Laplacian also samples coordinates the terms share its index set.
- drift x·∇u: one derivative along x itself, exact in every method (the reverse-mode gradient,
  also in stde: jets take directions shared by the points, x is one per point; fd: the central
  stencil along x, no autograd).

How the derivatives are taken: exact by nested reverse mode in x (the reference); sdgd and hte
by reverse mode through the first layer's pre-activations z = W₀x + b₀ along p = W₀v
(:mod:`.preactivation`: the same numbers without a (V, n, D) intermediate), their nested
bilaplacian and the drift in x; stde by jets (:mod:`.directional`); fd by stencils.

Probes are shared by the n points and come only from ``generator``: the same generator state gives
bit-identical estimates (what the SDZE solver's common random numbers rely on). Autodiff methods
keep the graph when grad mode is on (so a backprop solver can differentiate the estimate in the
parameters) and return detached tensors under ``torch.no_grad()``; stde and fd need no autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from pinnbench.maths.directions import Directions
from pinnbench.maths.estimators.directional import (autodiff_directional, default_fd_step,
                                              fd_directional, grad_of, jet_directional)
from pinnbench.maths.estimators.first_order import (drift_fd, drift_from_gradient, drift_reverse,
                                              grad_power_mean, weighted_second)
from pinnbench.maths.estimators.preactivation import ThroughPreactivations
from pinnbench.maths.estimators.probes import coordinate_probes, dense_probes, time_direction
from pinnbench.maths.problem import TERMS

METHODS: dict[str, str] = {
    "exact": "full autodiff (small d only)",
    "sdgd": "dimension sampling through autodiff (in the first layer's pre-activations)",
    "hte": "Hutchinson probes through autodiff Hessian-vector products (in the first layer's "
           "pre-activations)",
    "stde": "Hutchinson or coordinate probes through forward Taylor jets (no autograd graph)",
    "fd": "Hutchinson or coordinate probes through central finite differences",
}

#: options each method accepts, with what is allowed
OPTIONS: dict[str, dict[str, str]] = {
    "exact": {},
    "sdgd": {},
    "hte": {"dist": "rademacher|gaussian"},
    "stde": {"dist": "rademacher|gaussian|coordinate"},
    "fd": {"dist": "rademacher|gaussian|coordinate",
           "h": "a step > 0 (default eps^(1/(k+2)) for a k-th derivative)"},
}

#: largest spatial d for which ``exact`` runs (d autodiff passes per point for the Laplacian, O(d^2)
#: for the bilaplacian): the one limit, asked by solvers through :func:`exact_unsupported`
EXACT_MAX_DIM: dict[str, int] = {"laplacian": 1000, "bilaplacian": 64, "weighted_laplacian": 1000}



def batch_unsupported(problem, method: str) -> str:
    """Why :func:`estimate_terms` cannot serve a model whose parameters carry a batch of B
    parameter sets (:mod:`pinnbench.maths.model`; u and every term then (B, n)), or "" when it
    can: the jets of ``stde`` broadcast over the batch; stencils (``fd``) evaluate u at shifted
    points one set at a time, and reverse mode (the drift x . grad u, the autodiff methods)
    differentiates a sum that would mix the sets."""
    if method != "stde":
        return f"method {method!r} (batched: stde)"
    point_terms = [t for t in problem.operator.names if t in POINT_TERMS]
    if point_terms:
        return f"the term(s) {', '.join(point_terms)} by reverse mode"
    return ""


def exact_unsupported(problem) -> str:
    """Why ``method="exact"`` cannot serve ``problem`` (its spatial d is above ``EXACT_MAX_DIM``
    for one of its terms), or "" when it can: the one limit, asked by solvers' ``skip``."""
    for t in problem.operator.terms:
        limit = EXACT_MAX_DIM.get(t.name)
        if limit is not None and problem.dim > limit:
            cost = "O(d^2)" if t.name == "bilaplacian" else "d"
            return (f"the exact {t.name} takes {cost} autodiff passes per point; it runs up to "
                    f"d = {limit}, not d = {problem.dim}")
    return ""


DEFAULT_DIST = {"laplacian": "rademacher", "bilaplacian": "gaussian"}
SPATIAL_ORDER = {"laplacian": 2, "bilaplacian": 4, "weighted_laplacian": 2, "grad_power_mean": 1}
#: spatial terms estimated by coordinate sampling in every randomized method (:mod:`.first_order`)
COORDINATE_TERMS = ("weighted_laplacian", "grad_power_mean")
#: terms along the per-point direction x (exact in every method, no probes)
POINT_TERMS = ("drift",)
TIME_ORDER = {"dt": 1, "dtt": 2}


@dataclass
class _Group:
    """Spatial terms sharing one set of probes (``kind``: a dist or "all" coordinates)."""

    kind: str
    terms: list[str] = field(default_factory=list)
    order: int = 0
    dirs: Directions | None = None
    count: int = 0  # spatial rows of dirs; a time row, if any, comes after them


def estimate(term: str, model, x: Tensor, method: str = "stde",
             generator: torch.Generator | None = None, probes: int = 16,
             params: Sequence[Tensor] | None = None, **opts: Any) -> Tensor:
    """An estimate of one term of :data:`pinnbench.maths.problem.TERMS` (``laplacian``, ``bilaplacian``,
    ``dt``, ``dtt``, ``weighted_laplacian``, ``drift``, ``grad_power_mean``) of the model's u at
    the points ``x`` (n, D): an (n,) tensor. See the module docstring."""
    if term not in TERMS:
        raise ValueError(f"unknown term {term!r}; known: {', '.join(TERMS)}")
    _check_call(method, generator, probes, params, opts, model)
    drawn = _draw((term,), model.problem, method, generator, probes, opts, model.dtype, x.device)
    return _run(drawn, model, x, params, value=False)[1][term]


def estimate_terms(model, x: Tensor, method: str = "stde",
                   generator: torch.Generator | None = None, probes: int = 16,
                   params: Sequence[Tensor] | None = None, drawn: "Probes | None" = None,
                   value: bool = True,
                   **opts: Any) -> tuple[Tensor | None, dict[str, Tensor]]:
    """(u (n,), {name: (n,)}) for every linear term of ``model.problem.operator``, from one pass
    where the method allows (stde: one jet per probe distribution, u its coefficient 0; fd: one
    u(x) shared by every stencil).

    ``value=False``: the caller does not read u (a residual without a pointwise part,
    :attr:`pinnbench.maths.problem.Problem.reads_value`); stde then forms no coefficient 0 and
    returns u as None; the other methods return the u they computed anyway.

    ``drawn``: probes drawn beforehand by :func:`draw_probes` (same method, probes and options;
    ``generator`` is then not used). Estimating with probes drawn apart gives the same numbers
    as drawing them here from a generator in the same state, and lets several estimates share
    one set of probes by identity (the zeroth-order solvers' common random numbers)."""
    _check_call(method, generator, probes, params, opts, model)
    if drawn is None:  # the call is checked already: draw without draw_probes' second check
        names = tuple(dict.fromkeys(model.problem.operator.names))
        drawn = _draw(names, model.problem, method, generator, probes, opts, model.dtype,
                      x.device)
    else:
        drawn.check(model.problem, method, probes, opts)
    return _run(drawn, model, x, params, value)


@dataclass
class Probes:
    """The directions of one estimate of every term of a problem's operator, drawn apart from
    running it (:func:`draw_probes`): the spatial probe groups, the index sets of the nested
    autodiff bilaplacian, and the time direction. Read-only once drawn; estimating with the same
    ``Probes`` twice uses the same directions."""

    method: str
    names: tuple[str, ...]
    probes: int
    opts: dict
    dims: tuple[int, int]  # (d, D) of the problem they were drawn for
    groups: dict[str, _Group]
    nested: dict[str, tuple[Directions, Directions]]  # term -> (inner J, outer I)
    time_dirs: Directions | None
    time_order: int

    def check(self, problem, method: str, probes: int, opts: dict) -> None:
        mine = (self.method, self.probes, self.opts, self.dims,
                tuple(dict.fromkeys(problem.operator.names)))
        theirs = (method, probes, dict(opts), (problem.dim, problem.input_dim), self.names)
        if mine != theirs:
            raise ValueError(f"drawn probes (method, probes, options, (d, D), terms) = {mine} do "
                             f"not match this estimate's {theirs}")


def draw_probes(problem, method: str = "stde", generator: torch.Generator | None = None,
                probes: int = 16, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu", **opts: Any) -> Probes:
    """The probes :func:`estimate_terms` would draw from ``generator`` for every term of
    ``problem.operator`` (consuming the generator exactly as it would)."""
    _check_call(method, generator, probes, None, opts, None)
    names = tuple(dict.fromkeys(problem.operator.names))
    return _draw(names, problem, method, generator, probes, opts, dtype, torch.device(device))


# -- validation -----------------------------------------------------------------------------------
def _check_call(method: str, generator, probes: int, params, opts: dict, model) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    unknown = sorted(set(opts) - set(OPTIONS[method]))
    if unknown:
        allowed = ", ".join(f"{k}={v}" for k, v in OPTIONS[method].items()) or "none"
        raise ValueError(f"method {method!r} got unknown option(s) {', '.join(unknown)}; "
                         f"allowed: {allowed}")
    if "dist" in opts:
        allowed = OPTIONS[method]["dist"].split("|")
        if opts["dist"] not in allowed:
            raise ValueError(f"method {method!r}: dist={opts['dist']!r}; allowed: "
                             f"{', '.join(allowed)}")
    if "h" in opts:
        h = opts["h"]
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h <= 0:
            raise ValueError(f"method 'fd': h must be a finite number > 0, got {h!r}")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be a positive integer, got {probes!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got "
                         f"{type(generator).__name__}")
    if params is not None:
        if len(params) != len(model.params) or any(
                not isinstance(p, Tensor) or p.shape != q.shape
                for p, q in zip(params, model.params)):
            raise ValueError("params must be a list of tensors shaped like model.params "
                             f"({[tuple(q.shape) for q in model.params]})")


def _spatial_kind(method: str, term: str, opts: dict, d: int) -> str:
    """The probe kind serving a spatial term, or "nested" for the autodiff bilaplacians."""
    if method == "exact":
        limit = EXACT_MAX_DIM.get(term)
        if limit is not None and d > limit:
            raise ValueError(f"method 'exact' computes the {term} with "
                             f"{'O(d^2)' if term == 'bilaplacian' else 'd'} autodiff passes and is "
                             f"limited to d <= {limit}, got d = {d}; use sdgd, hte, stde or fd")
        return "nested" if term == "bilaplacian" else "all"
    if term in COORDINATE_TERMS:
        return "coordinate"
    if method == "sdgd":
        return "coordinate" if term == "laplacian" else "nested"
    dist = opts.get("dist", DEFAULT_DIST[term])
    if term == "bilaplacian" and dist != "gaussian":
        why = ("is biased for the bilaplacian (E v^4 = 1, not 3)" if dist == "rademacher" else
               "gives sum_j d^4u/dx_j^4, not the bilaplacian (the mixed terms are missing)")
        raise ValueError(f"method {method!r}: dist={dist!r} {why}; the bilaplacian allows "
                         "dist='gaussian' (or method 'sdgd' / 'exact')")
    return dist


# -- the estimators -------------------------------------------------------------------------------
def _draw(names: tuple[str, ...], problem, method: str, generator, probes: int, opts: dict,
          dtype: torch.dtype, device: torch.device) -> Probes:
    """Validate the terms against the method and draw every direction, in the order of the
    terms (so the generator is consumed reproducibly): spatial groups, then the index sets of
    the nested bilaplacian (inner J, then outer I)."""
    d, big_d = problem.dim, problem.input_dim
    time_terms = [t for t in names if t in TIME_ORDER]
    if time_terms and not problem.time_dependent:
        raise ValueError(f"term(s) {', '.join(time_terms)} need a time-dependent problem; "
                         f"{problem.id} has no time coordinate")
    groups: dict[str, _Group] = {}
    nested_terms: list[str] = []
    for t in names:
        if t in SPATIAL_ORDER:
            kind = _spatial_kind(method, t, opts, d)
            if kind == "nested":
                nested_terms.append(t)
                continue
            g = groups.setdefault(kind, _Group(kind))
            g.terms.append(t)
            g.order = max(g.order, SPATIAL_ORDER[t])
    sampled = probes < d  # coordinate sampling draws indices only when |J| < d
    needs_random = any(g.kind in ("rademacher", "gaussian") or (g.kind == "coordinate" and sampled)
                       for g in groups.values()) or (method == "sdgd" and nested_terms and sampled)
    if needs_random and generator is None:
        raise ValueError(f"method {method!r} draws random probes: pass "
                         "generator=torch.Generator().manual_seed(...)")
    time_order = max((TIME_ORDER[t] for t in time_terms), default=0)

    spec = dict(dtype=dtype, device=device)
    first = next(iter(groups.values()), None)
    for g in groups.values():
        with_time = method == "stde" and time_order > 0 and g is first  # one jet pass for both
        if g.kind in ("rademacher", "gaussian"):
            g.dirs = dense_probes(g.kind, probes, d, big_d, generator, time_row=with_time, **spec)
            g.count = probes
        else:
            count = d if g.kind == "all" else probes
            g.dirs = coordinate_probes(count, d, big_d, generator, time_row=with_time, **spec)
            g.count = min(count, d)
    nested: dict[str, tuple[Directions, Directions]] = {}
    for t in nested_terms:  # the bilaplacian of exact / sdgd: a Laplacian of a Laplacian
        count = d if method == "exact" else probes  # J then I, drawn independently
        inner = coordinate_probes(count, d, big_d, generator, **spec)
        nested[t] = (inner, coordinate_probes(count, d, big_d, generator, **spec))
    time_dirs = None
    if time_order and not (method == "stde" and first is not None):
        time_dirs = time_direction(big_d, **spec)
    return Probes(method, names, probes, dict(opts), (d, big_d), groups, nested, time_dirs,
                  time_order)


def _run(drawn: Probes, model, x: Tensor, params,
         value: bool = True) -> tuple[Tensor | None, dict[str, Tensor]]:
    model._check_input(x)
    if drawn.method == "stde":
        return _run_jets(drawn, model, x, params, value)
    runner = _run_fd if drawn.method == "fd" else _run_autodiff
    return runner(drawn, model, x, params)  # u is their first evaluation: returned anyway


def _combine(group: _Group, derivs: dict[int, Tensor], problem, x: Tensor,
             out: dict[str, Tensor]) -> None:
    """Turn the directional derivatives of a group's spatial rows into its term estimates
    (any leading axes, a batch of parameter sets, carried through)."""
    v, d = group.count, problem.dim
    for t in group.terms:
        dk = derivs[SPATIAL_ORDER[t]]
        dk = dk if dk.shape[-1] == v else dk[..., :v]  # the whole tensor: no view op
        if t == "grad_power_mean":  # coordinate kinds only ("all" or sampled)
            out[t] = grad_power_mean(dk, problem.gradient_exponent)
        elif t == "weighted_laplacian":
            out[t] = weighted_second(x, group.dirs.index[:v], dk, d)
        elif group.kind == "all":
            out[t] = dk.sum(dim=-1)
        elif group.kind == "coordinate":
            out[t] = dk.sum(dim=-1) * (d / v)
        elif t == "laplacian":
            out[t] = dk.mean(dim=-1)
        else:  # bilaplacian, gaussian probes
            out[t] = dk.mean(dim=-1) / 3.0


def _time_terms(names, derivs: dict[int, Tensor], col: int, out: dict[str, Tensor]) -> None:
    for t in names:
        if t in TIME_ORDER:
            out[t] = derivs[TIME_ORDER[t]][..., col]


def _ordered(names, out: dict[str, Tensor]) -> dict[str, Tensor]:
    return {t: out[t] for t in names}


def _run_jets(drawn: Probes, model, x, params, value: bool = True):
    """stde: one Taylor-jet pass per probe group (the time row rides along the first), each
    forming only the coefficients of u its terms read; u itself (``value``) from the last pass
    (the probes do not change it), as before the passes formed every coefficient."""
    names, time_order, time_dirs = drawn.names, drawn.time_order, drawn.time_dirs
    time_orders = {TIME_ORDER[t] for t in names if t in TIME_ORDER}
    out: dict[str, Tensor] = {}
    u = None
    groups = list(drawn.groups.values())
    for i, g in enumerate(groups):
        orders = {SPATIAL_ORDER[t] for t in g.terms} | (time_orders if i == 0 else set())
        last = i == len(groups) - 1 and time_dirs is None
        u_i, derivs = jet_directional(model, x, g.dirs, max(orders), params, orders,
                                      value=value and last)
        u = u_i if last else u
        _combine(g, derivs, model.problem, x, out)
        if i == 0 and time_order:
            _time_terms(names, derivs, g.count, out)
    if time_dirs is not None:
        u, derivs = jet_directional(model, x, time_dirs, time_order, params, time_orders,
                                    value=value)
        _time_terms(names, derivs, 0, out)
    if "drift" in names:  # along x itself, one direction per point: reverse mode, exact
        u_rev, out["drift"] = drift_reverse(model, x, model.problem.dim, params)
        u = u_rev if u is None and value else u
    if u is None and value:
        u = model(x, params)
    return u, _ordered(names, out)


def _run_fd(drawn: Probes, model, x, params):
    """fd: u(x) once, then the stencils of each group and of the time direction."""
    names, opts, time_dirs = drawn.names, drawn.opts, drawn.time_dirs
    def fn(y: Tensor) -> Tensor:
        return model(y, params)

    def steps(orders) -> dict[int, float]:
        return {k: float(opts["h"]) if "h" in opts else default_fd_step(x.dtype, k) for k in orders}

    out: dict[str, Tensor] = {}
    u = fn(x)
    for g in drawn.groups.values():
        orders = {SPATIAL_ORDER[t] for t in g.terms}
        _, derivs = fd_directional(fn, x, g.dirs, orders, steps(orders), u0=u)
        _combine(g, derivs, model.problem, x, out)
    if time_dirs is not None:
        orders = {TIME_ORDER[t] for t in names if t in TIME_ORDER}
        _, derivs = fd_directional(fn, x, time_dirs, orders, steps(orders), u0=u)
        _time_terms(names, derivs, 0, out)
    if "drift" in names:
        out["drift"] = drift_fd(fn, x, model.problem.dim, steps({1})[1])
    return u, _ordered(names, out)


def _run_autodiff(drawn: Probes, model, x, params):
    """exact, sdgd, hte: reverse-mode nesting from one u(x). sdgd and hte take their probe
    groups' and the time direction's derivatives through the first layer's pre-activations
    (:mod:`.preactivation`: no (V, n, D) intermediate) when the model is pinnbench's tanh MLP;
    exact (the reference), and sdgd and hte on any other callable u(x), take them in x itself;
    the nested bilaplacian and the drift are taken in x (which then requires grad)."""
    keep = torch.is_grad_enabled()
    d = model.problem.dim
    names, time_dirs, time_order = drawn.names, drawn.time_dirs, drawn.time_order
    out: dict[str, Tensor] = {}
    through_z = drawn.method != "exact" and ThroughPreactivations.supports(model)
    in_x = not through_z or bool(drawn.nested) or "drift" in names
    with torch.enable_grad():
        # x itself when the caller differentiates in x (the gPINN term) or nothing is taken in
        # x (the derivatives through the pre-activations), else a fresh leaf
        xg = x if x.requires_grad or not in_x else x.detach().requires_grad_(True)
        if not through_z:
            u = model(xg, params)
            def along(dirs, order, create_graph):
                return autodiff_directional(u, xg, dirs, order, create_graph=create_graph)
        else:
            through = ThroughPreactivations(model, xg, params)
            u, along = through.u, through.directional
        for g in drawn.groups.values():
            derivs = along(g.dirs, g.order, create_graph=keep)
            _combine(g, dict(enumerate(derivs, start=1)), model.problem, x, out)
        for t, (inner, outer) in drawn.nested.items():  # the bilaplacian: Δ_I (Δ_J u)
            lap = autodiff_directional(u, xg, inner, 2, create_graph=True)[1].sum(dim=1)
            lap = lap * (d / inner.count)
            bil = autodiff_directional(lap, xg, outer, 2, create_graph=keep)[1].sum(dim=1)
            out[t] = bil * (d / outer.count)
        if time_dirs is not None:
            derivs = along(time_dirs, time_order, create_graph=keep)
            _time_terms(names, dict(enumerate(derivs, start=1)), 0, out)
        if "drift" in names:
            out["drift"] = drift_from_gradient(x, grad_of(u, xg, create_graph=keep), d)
    if not keep:
        u = u.detach()
        out = {k: v.detach() for k, v in out.items()}
    return u, _ordered(names, out)
