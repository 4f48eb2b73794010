"""pinnbench: a benchmark harness for PINNs on high-dimensional, high-order PDEs.

The public API (docs/design.md) is imported lazily, so ``import pinnbench`` stays cheap and a cell's
subprocess only loads what it uses.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API: dict[str, str] = {
    # problems
    "Problem": "pinnbench.problem",
    "LinearTerm": "pinnbench.problem",
    "Operator": "pinnbench.problem",
    "list_problems": "pinnbench.problem_registry",
    "make_problem": "pinnbench.problem_registry",
    "register_problem": "pinnbench.problem_registry",
    # model and estimators
    "PINN": "pinnbench.model",
    "make_model": "pinnbench.model",
    "estimate": "pinnbench.estimators",
    "estimate_terms": "pinnbench.estimators",
    "evaluate": "pinnbench.metrics",
    # solvers
    "Solver": "pinnbench.solver",
    "Param": "pinnbench.solver",
    "list_solvers": "pinnbench.solver",
    "make_solver": "pinnbench.solver",
    "register_solver": "pinnbench.solver",
    "check_solver": "pinnbench.testing",
    # harness
    "run_cell": "pinnbench.cell",
    "load_results": "pinnbench.store",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'pinnbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
