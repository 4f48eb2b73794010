"""Search declarations of solver parameters: what ``pinnbench tune`` may try for each.

A solver declares, beside a parameter, where the tuning protocol searches it
(``Param(1e-3, ..., search=LogUniform(1e-4, 3e-2))``); ``Solver.search_space(fixed)`` returns the
declared searches minus the parameters a spec fixes. The harness names no solver: a third-party
solver declares its own the same way (docs/tuning.md).

- ``LogUniform(low, high)``: a float, log-uniform on [low, high] (step sizes, perturbation sizes);
- ``IntLogUniform(low, high)``: an integer, log-uniform on [low, high] (directions, ranks);
- ``Choice(a, b, ...)``: one of a few values (switches, momentum 0 or 0.9). The value
  :data:`BUDGET` means "the cell's budget in steps", so that ``decay_steps`` can be searched as
  "constant (0) or linear to 0 over the budget" and keeps that meaning when a tuned configuration
  runs at another budget (it is resolved with :func:`resolve`).

These map one to one onto Optuna's distributions (:func:`to_distribution`): FloatDistribution /
IntDistribution with ``log=True``, CategoricalDistribution. Optuna is imported only there (it is
the ``tune`` extra; declaring a space needs nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: the value of a :class:`Choice` that stands for the cell's budget in steps
BUDGET = "budget"

#: sampled floats are rounded to this many significant digits (ours: readable specs that can be
#: copied into a command line; 3 digits move a log-uniform draw by < 0.5 %, far below the
#: resolution of 16 trials)
SIGNIFICANT_DIGITS = 3


@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float

    def __post_init__(self) -> None:
        if not (0 < self.low < self.high and math.isfinite(self.high)):
            raise ValueError(f"LogUniform({self.low!r}, {self.high!r}): need 0 < low < high")

    def describe(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class IntLogUniform:
    low: int
    high: int

    def __post_init__(self) -> None:
        if not (isinstance(self.low, int) and isinstance(self.high, int)
                and 1 <= self.low < self.high):
            raise ValueError(f"IntLogUniform({self.low!r}, {self.high!r}): need integers "
                             "1 <= low < high")

    def describe(self) -> str:
        return f"integer log-uniform [{self.low}, {self.high}]"


@dataclass(frozen=True, init=False)
class Choice:
    values: tuple

    def __init__(self, *values: Any) -> None:
        if len(values) < 2 or len(set(values)) != len(values):
            raise ValueError(f"Choice{values!r}: need two or more distinct values")
        for v in values:
            if not isinstance(v, (bool, int, float, str)):
                raise ValueError(f"Choice{values!r}: values must be bool, int, float or str")
        object.__setattr__(self, "values", tuple(values))

    def describe(self) -> str:
        return "one of " + "|".join(str(v) for v in self.values)


Search = LogUniform | IntLogUniform | Choice


def check_declaration(name: str, search: Search, coerce) -> None:
    """Raise ValueError unless every value ``search`` can give is a valid value of the parameter
    (``coerce(name, value)`` is the parameter's own check)."""
    if isinstance(search, Choice):
        for v in search.values:
            if v != BUDGET:
                coerce(name, v)
    elif isinstance(search, (LogUniform, IntLogUniform)):
        coerce(name, search.low)
        coerce(name, search.high)
    else:
        raise TypeError(f"parameter {name}: search must be LogUniform, IntLogUniform or Choice, "
                        f"got {search!r}")


def to_distribution(search: Search):
    """The Optuna distribution of a declaration."""
    from optuna.distributions import (CategoricalDistribution, FloatDistribution,
                                      IntDistribution)

    if isinstance(search, LogUniform):
        return FloatDistribution(search.low, search.high, log=True)
    if isinstance(search, IntLogUniform):
        return IntDistribution(search.low, search.high, log=True)
    return CategoricalDistribution(search.values)


def round_value(value: Any) -> Any:
    """A sampled value as the protocol uses it: floats to :data:`SIGNIFICANT_DIGITS`."""
    if isinstance(value, float) and value != 0 and math.isfinite(value):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value


def resolve(params: dict[str, Any], steps: int | None) -> dict[str, Any]:
    """Sampled parameters with :data:`BUDGET` replaced by the cell's ``steps`` (ValueError when
    a configuration needs a budget in steps and the cell has none)."""
    out = {}
    for k, v in params.items():
        if v == BUDGET:
            if steps is None:
                raise ValueError(f"{k}={BUDGET} (over the budget) needs a budget in steps "
                                 "(--steps)")
            v = int(steps)
        out[k] = v
    return out
