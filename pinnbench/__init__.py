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
    "Problem": "pinnbench.maths.problem",
    "LinearTerm": "pinnbench.maths.problem",
    "Operator": "pinnbench.maths.problem",
    "list_problems": "pinnbench.maths.problem_registry",
    "make_problem": "pinnbench.maths.problem_registry",
    "register_problem": "pinnbench.maths.problem_registry",
    # model and estimators
    "PINN": "pinnbench.maths.model",
    "make_model": "pinnbench.maths.model",
    "estimate": "pinnbench.maths.estimators",
    "estimate_terms": "pinnbench.maths.estimators",
    "evaluate": "pinnbench.judge.metrics",
    # solvers
    "Solver": "pinnbench.solver",
    "Param": "pinnbench.solver",
    "list_solvers": "pinnbench.solver",
    "make_solver": "pinnbench.solver",
    "register_solver": "pinnbench.solver",
    "check_solver": "pinnbench.testing",
    # harness
    "run_cell": "pinnbench.cells.cell",
    "load_results": "pinnbench.cells.store",
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
