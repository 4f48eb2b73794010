"""The Solver contract and solver specs (``"sdze[rank=8,eps=1e-3]"``).

A solver is a small class in the shape of benchopt's and scikit-learn's: a ``name``, declared
``parameters`` (each with a default, a type and a check) and ``update() -> loss estimate``, one
training step on the bound model; optionally ``prepare()`` (state such as an optimizer, after
the base has bound the problem) and ``skip(problem) -> (skip?, reason)`` for combinations that
make no sense. ``update()`` may return the loss as a Python float or as a 0-d tensor on the
model's device: a tensor spares the step a host read (a sync on CUDA, and an operation a captured
CUDA graph cannot hold); the cell runner reads it only at the evaluation points
(:mod:`pinnbench.cells.loss_watch`). The base carries the chores (docs/design.md, "Solver"):

- ``setup(problem, model, generator)`` binds them, sets ``requires_grad`` of the model's
  parameters from the class attribute ``autograd``, zeroes the step counter ``t``, and calls
  ``prepare()``;
- ``step()`` (what the harness calls and times) runs ``update()`` and counts ``t``;
- parameters read as attributes (``self.lr``), the step size of the schedule as ``lr_now``;
- ``draw()`` gives the step's spatial sample (:class:`pinnbench.maths.step_data.StepData`: points,
  source, probes), timed apart in ``data_time_s``, and ``residual_loss(data)`` the PINN loss on
  it with the solver's ``estimator``, ``dist`` and ``loss`` parameters (where it has them).

Solvers register themselves from the modules of ``pinnbench.solvers`` (the solvers/ folder);
third parties use the entry-point group ``pinnbench.solvers``.
"""

from __future__ import annotations

import math
import pkgutil
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from pinnbench.numerals import MAX_INT64, is_integer_numeral, is_numeral
from pinnbench.registry import Registry
from pinnbench.search_space import BUDGET, check_declaration


@dataclass(frozen=True)
class Param:
    """One solver parameter: default, type (bool, int, float or str), allowed values / check,
    and where ``pinnbench tune`` searches it (``search``: a declaration of
    :mod:`pinnbench.search_space`, e.g. ``LogUniform(1e-4, 1e-1)``; None: never searched)."""

    default: Any
    help: str = ""
    choices: tuple | None = None
    check: Callable[[Any], bool] | None = None
    check_text: str = ""
    search: Any = None
    #: words accepted as they are beside the type's values, each resolved later by the solver
    #: (``budget`` for ``decay_steps``: the cell's step budget, :meth:`Solver.decay_length`)
    words: tuple[str, ...] = ()
    #: the type of the values when the default is one of ``words``
    value_type: type | None = None

    def __post_init__(self) -> None:
        if self.default in self.words and self.value_type is None:
            raise TypeError(f"Param default {self.default!r} is a word: give value_type")
        if self.search is not None:
            check_declaration("search", self.search, self.coerce)

    @property
    def kind(self) -> type:
        return self.value_type or type(self.default)

    def describe(self) -> str:
        if self.choices:
            return "one of " + "|".join(str(c) for c in self.choices)
        text = self.check_text or self.kind.__name__
        return text + "".join(f" or {w}" for w in self.words)

    def coerce(self, name: str, value: Any) -> Any:
        """Turn ``value`` (a string from a spec, or a Python value) into this parameter's type."""
        if isinstance(value, str) and value in self.words:
            return value
        kind = self.kind
        try:
            if kind is bool:
                if isinstance(value, bool):
                    out = value
                elif str(value).lower() in ("true", "1", "yes", "on"):
                    out = True
                elif str(value).lower() in ("false", "0", "no", "off"):
                    out = False
                else:
                    raise ValueError
            elif kind is int:
                if isinstance(value, bool) or (isinstance(value, str) and not is_numeral(value)):
                    raise ValueError  # ASCII digits only: "８" is not read as 8
                f = float(value)
                if not f.is_integer():
                    raise ValueError
                exact = isinstance(value, int) or is_integer_numeral(value)
                out = int(value) if exact else int(f)  # "12345678901234567" stays exact
                if abs(out) > MAX_INT64:  # what torch and SQLite can hold
                    raise ValueError("at most 2^63 - 1 in size")
            elif kind is float:
                if isinstance(value, bool) or (isinstance(value, str) and not is_numeral(value)):
                    raise ValueError
                out = float(value)
                if not math.isfinite(out):
                    raise ValueError
            else:
                out = str(value)
        except (TypeError, ValueError) as exc:
            note = (", in ASCII digits" if isinstance(value, str) and not is_numeral(value)
                    else f", {exc}" if str(exc) else "") if kind in (int, float) else ""
            raise ValueError(f"parameter {name}={value!r}: expected {self.describe()}{note}") \
                from None
        if self.choices is not None and out not in self.choices:
            raise ValueError(f"parameter {name}={value!r}: expected {self.describe()}")
        if self.check is not None and not self.check(out):
            raise ValueError(f"parameter {name}={value!r}: expected {self.describe()}")
        return out


def positive(text: str = "a number > 0") -> dict:
    return {"check": lambda v: v > 0, "check_text": text}


def non_negative(text: str = "a number >= 0") -> dict:
    return {"check": lambda v: v >= 0, "check_text": text}


#: parameters every solver has (docs/design.md; the solvers issue, item 0)
COMMON_PARAMETERS: dict[str, Param] = {
    "points": Param(100, "collocation points per step", **positive("an integer > 0")),
    "probes": Param(16, "random directions (or sampled dimensions) per spatial estimate",
                    **positive("an integer > 0")),
}


def step_size(lr: float, decay_steps: int, t: int) -> float:
    """lr_t = lr * max(0, 1 - t / decay_steps), a function of the step index t only (0: constant)."""
    if decay_steps <= 0:
        return lr
    return lr * max(0.0, 1.0 - t / decay_steps)


def _coerced(param: Param, name: str, value: Any) -> Any:
    """A :attr:`Solver.variant_defaults` value, checked and coerced as the parameter's own."""
    return param.coerce(name, value)


def _declaration(param: Param, name: str, search: Any) -> Any:
    """A :attr:`Solver.variant_search` declaration, checked as the parameter's own."""
    check_declaration(name, search, param.coerce)
    return search


class Solver:
    """Base class: subclasses set ``name`` and ``parameters`` and implement ``update()``."""

    name: str = ""
    parameters: dict[str, Param] = {}
    #: whether the model's parameters require grad (backprop solvers) or not (zeroth order)
    autograd: bool = True
    #: the one-factor-at-a-time variants of ``pinnbench ablate``: (parameter, values) pairs;
    #: none by default (:meth:`ablation_variants`)
    ablations: tuple[tuple[str, tuple], ...] = ()
    #: defaults that hold where other parameters take given values: ``{"crns=true": {"lr": 1e-3}}``
    #: gives ``zo[crns=true]`` (MeZO) its own tuned lr, since the defaults study tunes it apart
    #: (docs/tuning.md). Keys are spec bodies; :meth:`defaults_for` says how they combine
    variant_defaults: dict[str, dict[str, Any]] = {}
    #: search declarations that replace the parameters' own where a spec fixes the conditions,
    #: e.g. ``{"normalize=false": {"lr": LogUniform(1e-10, 1e-3)}}``: a variant whose step size
    #: lives on another scale gets a space that holds it (:meth:`search_space`)
    variant_search: dict[str, dict[str, Any]] = {}
    #: the cell's budget in steps (None: budgeted in time, or not in a cell); set by
    #: :func:`solver_from_spec`, read where a parameter says ``budget``
    budget_steps: int | None = None

    def __init__(self, **params: Any) -> None:
        allowed = self.all_parameters()
        shadowed = sorted(k for k in allowed if hasattr(type(self), k))
        if shadowed:
            raise TypeError(f"solver {self.name!r}: parameter name(s) {', '.join(shadowed)} "
                            "shadow attributes of the class; rename them")
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for solver "
                             f"{self.name!r}; allowed: {', '.join(sorted(allowed))}")
        given = {k: allowed[k].coerce(k, v) for k, v in params.items()}
        self.params = {**self.defaults_for(given), **given}
        self.validate()

    def __getattr__(self, name: str) -> Any:
        """Parameters read as attributes: ``self.lr`` is ``self.params["lr"]``."""
        params = self.__dict__.get("params")
        if params is not None and name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def all_parameters(cls) -> dict[str, Param]:
        return {**COMMON_PARAMETERS, **cls.parameters}

    @classmethod
    def defaults_for(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Every parameter's default where ``params`` (coerced values) hold: the declared
        defaults, then each :attr:`variant_defaults` entry whose conditions the parameters meet
        (``params``, else the declared defaults), less specific entries first, so that the most
        specific one wins (entries of equal specificity: in declaration order)."""
        out = {k: p.default for k, p in cls.all_parameters().items()}
        parsed = cls._conditional("variant_defaults", _coerced)
        cond_keys = {k for c, _ in parsed for k in c}
        clash = sorted(cond_keys & {k for _, v in parsed for k in v})
        if clash:
            raise TypeError(f"solver {cls.name!r}: variant_defaults set {', '.join(clash)}, "
                            "which also select variants")
        for values in cls._met(parsed, params):
            out.update(values)
        return out

    @classmethod
    def _conditional(cls, table: str, check: Callable) -> list[tuple[dict, dict]]:
        """The class table ``table`` (:attr:`variant_defaults` or :attr:`variant_search`: a
        spec body of conditions -> {parameter: value}) parsed: the conditions coerced, each value
        passed through ``check(param, name, value)``, least specific entries first (equal
        specificity: in declaration order). A bad entry is a TypeError naming it."""
        allowed = cls.all_parameters()
        parsed = []
        for key, values in getattr(cls, table).items():
            try:
                conditions = {k: allowed[k].coerce(k, v)
                              for k, v in parse_spec(f"x[{key}]")[1].items()}
                values = {k: check(allowed[k], k, v) for k, v in values.items()}
            except (KeyError, ValueError, TypeError) as exc:
                raise TypeError(f"solver {cls.name!r}: {table}[{key!r}]: {exc}") from None
            parsed.append((conditions, values))
        return sorted(parsed, key=lambda cv: len(cv[0]))

    @classmethod
    def _met(cls, parsed: list[tuple[dict, dict]], given: dict[str, Any]) -> list[dict]:
        """The values of the entries of ``parsed`` whose conditions ``given`` (coerced values,
        else the declared defaults) meet, in order."""
        seen = {**{k: p.default for k, p in cls.all_parameters().items()}, **given}
        return [values for conditions, values in parsed
                if all(seen.get(k) == v for k, v in conditions.items())]

    @classmethod
    def search_space(cls, fixed=()) -> dict[str, Any]:
        """What ``pinnbench tune`` searches: {parameter: declaration} of every parameter with a
        ``search`` declaration, minus those in ``fixed`` (the ones a spec sets). Where ``fixed``
        is a dict of coerced values, each :attr:`variant_search` entry whose conditions they
        meet (with the declared defaults for the rest) replaces its parameters' declarations,
        more specific entries last, as :meth:`defaults_for` orders them."""
        space = {k: p.search for k, p in cls.all_parameters().items() if p.search is not None}
        for decls in cls._met(cls._conditional("variant_search", _declaration),
                              fixed if isinstance(fixed, dict) else {}):
            space.update(decls)
        return {k: v for k, v in sorted(space.items()) if k not in set(fixed)}

    @classmethod
    def ablation_variants(cls, given: dict[str, Any]) -> list["Solver"]:
        """The solvers of ``pinnbench ablate``: this one with the parameters ``given`` (as a spec
        writes them), then one variant per value in ``ablations``, each differing from it in that
        one parameter: every other parameter is the base's, given, so that no
        :attr:`variant_defaults` entry moves a second one. The base declares none; a solver
        overrides this only for variants a table of (parameter, values) cannot say."""
        base = cls(**given)
        return [base] + [cls(**{**base.params, key: v})
                         for key, values in cls.ablations for v in values]

    def validate(self) -> None:
        """Cross-parameter checks (raise ValueError); individual values are checked already."""

    @property
    def spec(self) -> str:
        """Canonical spec with every parameter: ``name[a=1,b=x]`` (sorted, so it hashes stably)."""
        return format_spec(self.name, self.params)

    # -- the contract ---------------------------------------------------------------------------
    def skip(self, problem) -> tuple[bool, str]:
        """(True, why) when this solver cannot run on ``problem`` (the base: a gPINN loss on a
        problem without a closed-form source gradient)."""
        if self.params.get("loss") == "gpinn" and not problem.supports_gpinn:
            return True, (f"loss=gpinn needs the source's gradient in closed form, which "
                          f"{problem.id} does not provide (supports_gpinn is False)")
        return False, ""

    def state_bytes(self, n_params: int, input_dim: int, bytes_per_number: int) -> int:
        """Bytes this solver holds during a step beyond the model's ``n_params`` parameters and
        the step's batch, for inputs of ``input_dim`` coordinates (the plan's memory estimate
        asks it before any cell runs: pinnbench/commands/plan.py). The base: the gradient (one number
        per parameter) when the solver trains by autograd, nothing otherwise; a solver with an
        optimizer or buffers overrides it."""
        return n_params * bytes_per_number if self.autograd else 0

    def setup(self, problem, model, generator: torch.Generator) -> None:
        """Bind the problem, the model and the solver's generator; then :meth:`prepare`."""
        self.problem, self.model, self.generator = problem, model, generator
        for p in model.params:
            p.requires_grad_(self.autograd)
        self.t = 0
        self.data_time_s = 0.0
        #: whether :meth:`draw` times the data apart (a device sync on CUDA, which a captured
        #: CUDA graph cannot hold: a solver that captures its step sets it False, and the cell
        #: then reports no data time)
        self.time_data = True
        from pinnbench.timing import Stopwatch

        self._data_watch = Stopwatch(problem.device)
        self.prepare()

    def prepare(self) -> None:
        """State beyond the bound problem and model (an optimizer, seeds): override as needed."""

    def step(self) -> float | torch.Tensor:
        """One training step (the timed unit): :meth:`update`, then the step counter moves on.
        Returns what :meth:`update` returned: ``float(...)`` of it is the loss."""
        loss = self.update()
        self.t += 1
        return loss

    def update(self) -> float | torch.Tensor:
        """One training step on ``self.model``; returns the loss estimate it saw, a float or a
        0-d tensor (not read back, so the step need not wait for the device)."""
        raise NotImplementedError

    # -- what the harness asks a solver (optional hooks) -----------------------------------------
    def diagnostics(self, problem, model, spec: dict[str, Any]) -> dict[str, Any] | None:
        """Measurements of the trained solver for the cell's ``diagnostics`` column
        (``pinnbench run --diagnostics``; :mod:`pinnbench.cells.diagnostics`), taken after training,
        outside the step times and the peaks; a JSON-able dict. None (the base): the solver
        declares none, and the column says so."""
        return None

    def step_cost(self, dim: int, width: int, depth: int):
        """The lower bound of one step at dimension ``dim`` on a Laplacian problem with the
        stde estimator, as a :class:`pinnbench.bench.roofline.StepCost` (FLOPs, bytes), for
        ``python -m pinnbench.bench roofline``; None (the base): no model declared. The bounds'
        building blocks (first-layer and hidden FLOPs, data and weight bytes) are in
        :mod:`pinnbench.bench.roofline`. May raise ValueError for a configuration it does not
        model."""
        return None

    def shard_unsupported(self) -> str:
        """Why this solver cannot run as one rank of a sharded cell
        (:mod:`pinnbench.cells.sharding`, docs/sharding.md), or "" when it can; the base: it
        cannot (a solver that can says so by overriding this)."""
        return f"solver {self.name!r} is not sharded (it declares no Solver.shard_unsupported)"

    @classmethod
    def ablation_page(cls):
        """The report's ablation page of this solver family, a
        :class:`pinnbench.ablation_page.AblationPage` (its heading, the families shown beside
        it, the parameters of its rank figure), read by :mod:`pinnbench.report.ablation`; None
        (the base): no page."""
        return None

    @classmethod
    def claims(cls) -> tuple:
        """The claims the report judges on this solver's page, in the order shown: instances of
        the claim kinds of :mod:`pinnbench.ablation_page` (each names what it compares, e.g. the
        comparator solver); () (the base): none."""
        return ()

    # -- chores ---------------------------------------------------------------------------------
    @property
    def decay_length(self) -> int:
        """``decay_steps`` as a number: ``budget`` is the step budget the solver was given
        (:func:`solver_from_spec`'s ``steps``), and 0 (constant) when it has none."""
        n = self.params.get("decay_steps", 0)
        if n == BUDGET:
            return self.budget_steps or 0
        return n

    @property
    def steady_state_steps(self) -> int:
        """Steps after which a step's cost no longer changes (the state it reads and writes has
        reached its stationary size): what a benchmark runs before it times or counts a step
        (``python -m pinnbench.bench ops|solvers|roofline``). 1: the state exists after the
        first step (Adam's moments, a dense momentum)."""
        return 1

    @property
    def graph_warmup_steps(self) -> int:
        """With ``cuda_graph=true`` on CUDA, the eager steps before the step is captured
        (:class:`pinnbench.cuda_graph.GraphedStep`): 3, bp's (its optimizer state and autograd
        buffers exist by then); a solver whose step grows for longer says so."""
        return 3

    @property
    def lr_now(self) -> float:
        """The step size at step ``t``: ``lr`` decayed linearly over :attr:`decay_length` (if any)."""
        return step_size(self.params["lr"], self.decay_length, self.t)

    @property
    def estimator_options(self) -> dict:
        dist = self.params.get("dist", "default")
        return {} if dist == "default" else {"dist": dist}

    def draw(self, generator: torch.Generator | int | None = None,
             probe_generator: torch.Generator | int | None = None):
        """The step's spatial sample (:class:`pinnbench.maths.step_data.StepData`): ``points``
        collocation points from ``generator`` (default: the solver's), their source values, and
        the probes of the solver's ``estimator`` (two independent sets for ``loss=unbiased``)
        from ``probe_generator`` (default: continuing ``generator``). Either may be an integer
        seed: the same sample as from a generator on the problem's device seeded with it
        (:func:`pinnbench.seeds.generator`), but a streamed sample derives its seeds from the
        integers on the host, without reading one back from the device
        (:func:`pinnbench.maths.streaming.draw_streamed_step_data`). The time it takes is added
        to ``data_time_s``, so the cell reports it apart: at once off CUDA (wall time); on CUDA
        the device time between two events, with no sync in the step, added when the harness
        calls :meth:`settle_data_time` after the step (:class:`pinnbench.timing.Stopwatch`).
        With a true ``stream`` parameter the sample is a
        :class:`pinnbench.maths.streaming.StreamedStepData` (per-block seeds, no n x D tensor): only
        its first pass (the points' norms) runs here, and the solver adds the data part of its
        reduction pass to ``data_time_s`` itself. A problem that draws its own step data (one
        rank of a sharded cell, :class:`pinnbench.cells.sharded_ball.ShardedBall`) is asked for it."""
        from pinnbench.maths.step_data import draw_step_data
        from pinnbench.maths.streaming import draw_streamed_step_data
        from pinnbench.seeds import generator as seeded
        p = self.params
        generator = self.generator if generator is None else generator
        if not p.get("stream", False):  # a seed is a generator seeded with it
            generator, probe_generator = (seeded(g, self.problem.device) if isinstance(g, int)
                                          else g for g in (generator, probe_generator))
        sets = 2 if p.get("loss") == "unbiased" else 1
        mark = self._data_watch.start() if self.time_data else None
        sharded = getattr(self.problem, "draw_step_data", None)
        if sharded is not None:  # one rank of a sharded cell (pinnbench.cells.sharded_ball)
            data = sharded(p["points"], generator, p.get("estimator", "stde"), p["probes"],
                           self.estimator_options, sets=sets, probe_generator=probe_generator)
        elif p.get("stream", False):  # only the norms' pass now (docs/streaming.md)
            data = draw_streamed_step_data(self.problem, p["points"], generator, p["probes"],
                                           self.estimator_options, sets=sets,
                                           probe_generator=probe_generator)
        else:
            data = draw_step_data(self.problem, p["points"], generator,
                                  p.get("estimator", "stde"), p["probes"], self.estimator_options,
                                  sets=sets, probe_generator=probe_generator,
                                  coordinates=p["gpinn_dims"] if p.get("loss") == "gpinn" else 0)
        if mark is not None:
            self._data_watch.stop(mark)
            if not self._data_watch.cuda:
                self.settle_data_time()
        return data

    def settle_data_time(self) -> float:
        """``data_time_s`` with the data intervals timed on the device so far added (on CUDA: a
        read of their events, which waits for them: call it after the step's synchronisation)."""
        watch = self.__dict__.get("_data_watch")
        if watch is not None:
            self.data_time_s += watch.settle()
        return self.data_time_s

    def residual_loss(self, data, model=None) -> torch.Tensor:
        """The PINN residual loss on ``data`` (docs/domain.md §2), a 0-d tensor, for ``model``
        (default: the solver's; a zeroth-order solver passes a perturbed one):

            biased:    mean_x (L_hat u - f)^2          E = (L u - f)^2 + Var(L_hat u)
            unbiased:  mean_x (L_J u - f)(L_K u - f)   two independent probe sets: E = (L u - f)^2
            gpinn:     the biased loss + w (d/k) sum_{j in J} mean_x (d_j r)^2  (pinnbench.maths.gpinn)

        The biased form is what the published STDE / SDGD / HTE experiments train with."""
        from pinnbench.maths.estimators import estimate_terms

        model = self.model if model is None else model
        if getattr(data, "streamed", False):  # reductions over column blocks (docs/streaming.md)
            from pinnbench.maths.streaming import residual_loss

            return residual_loss(self.problem, model, data)
        method, opts = self.params.get("estimator", "stde"), self.estimator_options
        # a gPINN term by reverse mode differentiates the loss's own residual in x
        reverse = data.coordinates is not None and torch.is_grad_enabled()
        x = data.x.detach().requires_grad_(True) if reverse else data.x
        residuals = []
        u = None
        for drawn in data.probes:
            u_k, terms = estimate_terms(model, x, method, probes=self.params["probes"],
                                        drawn=drawn, value=self.problem.reads_value, **opts)
            u = u_k if u is None else u  # u(x) does not depend on the probes
            residuals.append(self.problem.residual(terms, u, x, source=data.source))
        r1, r2 = residuals[0], residuals[-1]
        products = r1 * r2  # (B, n) for a model with a batch of B parameter sets: B losses
        loss = products.mean() if products.ndim == 1 else products.mean(dim=-1)
        if data.coordinates is not None:
            from pinnbench.maths.gpinn import gpinn_term

            loss = loss + self.params["gpinn_weight"] * gpinn_term(
                self.problem, model, x, data.probes[0], data.coordinates, method,
                self.params["probes"], opts, autograd=reverse,
                residual=r1 if reverse else None)
        return loss


def ablation_specs(base: str) -> list[str]:
    """The base spec and its one-factor-at-a-time variants, as canonical specs
    (:meth:`Solver.ablation_variants`), variants equal to the base or to each other left out:
    ``ablation_specs("sdze[rank=8]")`` -> ["sdze[...]", "sdze[...crns=false...]", ...]; just the
    base for a solver that declares no ablations."""
    name, given = parse_spec(base)
    out: list[str] = []
    for solver in SOLVERS.get(name).ablation_variants(given):
        spec = format_spec(name, solver.params)
        if spec not in out:
            out.append(spec)
    return out


def format_spec(name: str, params: dict[str, Any]) -> str:
    if not params:
        return name
    body = ",".join(f"{k}={format_value(v)}" for k, v in sorted(params.items()))
    return f"{name}[{body}]"


def format_value(v: Any) -> str:
    """A parameter value as written in a spec: true/false, 0.001, stde (no quotes)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


#: ASCII only: a name or key with another script's letters or digits is refused, not looked up
_SPEC = re.compile(r"^\s*([A-Za-z][\w-]*)\s*(?:\[(.*)\])?\s*$", re.ASCII)


def parse_spec(text: str) -> tuple[str, dict[str, str]]:
    """``"sdze[rank=8,eps=1e-3]"`` -> ``("sdze", {"rank": "8", "eps": "1e-3"})``; values stay
    strings until the solver class coerces them."""
    m = _SPEC.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"bad solver spec {text!r}; expected NAME or NAME[key=value,...], "
                         "e.g. sdze[rank=8,eps=1e-3]")
    name, body = m.group(1), m.group(2)
    params: dict[str, str] = {}
    if body is not None and body.strip():
        for item in body.split(","):
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key or not value:
                raise ValueError(f"bad parameter {item.strip()!r} in solver spec {text!r}; "
                                 "expected key=value")
            if key in params:
                raise ValueError(f"parameter {key!r} given twice in solver spec {text!r}")
            params[key] = value
    return name, params


def _builtin_solver_modules() -> tuple[str, ...]:
    import pinnbench.solvers as pkg

    return tuple(f"pinnbench.solvers.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)
                 if not m.name.startswith("_"))


def _check_solver_class(name: str, obj: Any) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Solver)):
        raise TypeError(f"solver {name!r} resolves to {obj!r}, not a Solver subclass")


class _SolverRegistry(Registry[type]):
    def _load(self) -> None:
        if not self._loaded:
            self._builtin_modules = _builtin_solver_modules()
        super()._load()


SOLVERS: Registry[type] = _SolverRegistry("solver", entry_point_group="pinnbench.solvers",
                                          check=_check_solver_class,
                                          list_hint="pinnbench list solvers")


def register_solver(cls: type[Solver]) -> type[Solver]:
    """Class decorator: register a Solver subclass under its ``name``."""
    _check_solver_class(cls.name, cls)
    SOLVERS.register(cls.name, cls)
    return cls


def list_solvers() -> list[str]:
    return SOLVERS.names()


def solver_from_spec(text: str, steps: int | None = None) -> Solver:
    """A configured (not yet set up) solver from a spec string; every error is a ValueError.
    ``steps``: the budget of the cell it will run in (what ``decay_steps=budget`` decays over)."""
    name, params = parse_spec(text)
    solver = SOLVERS.get(name)(**params)
    solver.budget_steps = steps
    return solver


def make_solver(text: str, problem, model, generator: torch.Generator) -> Solver:
    """``make_solver("sdze[rank=8]", problem, model, generator=g)``: configured and set up."""
    solver = solver_from_spec(text)
    solver.setup(problem, model, generator)
    return solver
