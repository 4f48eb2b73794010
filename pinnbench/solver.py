"""The Solver contract and solver specs (``"sdze[rank=8,eps=1e-3]"``).

A solver is a small class in the shape of benchopt's and scikit-learn's: a ``name``, declared
``parameters`` (each with a default, a type and a check), ``setup(problem, model, generator)``,
``step() -> loss estimate`` (the timed unit) and ``skip(problem) -> (skip?, reason)`` for
combinations that make no sense. Solvers register themselves from the modules of
``pinnbench.solvers`` (the solvers/ folder); third parties use the entry-point group
``pinnbench.solvers``.
"""

from __future__ import annotations

import math
import pkgutil
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch

from pinnbench.registry import Registry


@dataclass(frozen=True)
class Param:
    """One solver parameter: default, type (bool, int, float or str), allowed values / check."""

    default: Any
    help: str = ""
    choices: tuple | None = None
    check: Callable[[Any], bool] | None = None
    check_text: str = ""

    @property
    def kind(self) -> type:
        return type(self.default)

    def describe(self) -> str:
        if self.choices:
            return "one of " + "|".join(str(c) for c in self.choices)
        return self.check_text or self.kind.__name__

    def coerce(self, name: str, value: Any) -> Any:
        """Turn ``value`` (a string from a spec, or a Python value) into this parameter's type."""
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
                if isinstance(value, bool):
                    raise ValueError
                f = float(value)
                if not f.is_integer():
                    raise ValueError
                out = int(f)
            elif kind is float:
                if isinstance(value, bool):
                    raise ValueError
                out = float(value)
                if not math.isfinite(out):
                    raise ValueError
            else:
                out = str(value)
        except (TypeError, ValueError):
            raise ValueError(f"parameter {name}={value!r}: expected {self.describe()}") from None
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


class Solver:
    """Base class: subclasses set ``name``, ``parameters`` and implement setup/step."""

    name: str = ""
    parameters: dict[str, Param] = {}

    def __init__(self, **params: Any) -> None:
        allowed = self.all_parameters()
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)} for solver "
                             f"{self.name!r}; allowed: {', '.join(sorted(allowed))}")
        self.params = {k: p.default for k, p in allowed.items()}
        for k, v in params.items():
            self.params[k] = allowed[k].coerce(k, v)
        self.validate()

    @classmethod
    def all_parameters(cls) -> dict[str, Param]:
        return {**COMMON_PARAMETERS, **cls.parameters}

    def validate(self) -> None:
        """Cross-parameter checks (raise ValueError); individual values are checked already."""

    @property
    def spec(self) -> str:
        """Canonical spec with every parameter: ``name[a=1,b=x]`` (sorted, so it hashes stably)."""
        return format_spec(self.name, self.params)

    # -- the contract ---------------------------------------------------------------------------
    def skip(self, problem) -> tuple[bool, str]:
        return False, ""

    def setup(self, problem, model, generator: torch.Generator) -> None:
        raise NotImplementedError

    def step(self) -> float:
        raise NotImplementedError


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


_SPEC = re.compile(r"^\s*([A-Za-z][\w-]*)\s*(?:\[(.*)\])?\s*$")


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


def solver_from_spec(text: str) -> Solver:
    """A configured (not yet set up) solver from a spec string; every error is a ValueError."""
    name, params = parse_spec(text)
    return SOLVERS.get(name)(**params)


def make_solver(text: str, problem, model, generator: torch.Generator) -> Solver:
    """``make_solver("sdze[rank=8]", problem, model, generator=g)``: configured and set up."""
    solver = solver_from_spec(text)
    solver.setup(problem, model, generator)
    return solver
