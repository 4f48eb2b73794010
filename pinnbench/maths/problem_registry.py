"""Problem ids -> Problem classes: ``register_problem``, ``make_problem``, ``list_problems``.

Ids are versioned ``name-vN`` (a formula change bumps N, Gymnasium-style). Built-in problems
register themselves from the modules of ``pinnbench.problems`` (the problems/ folder), imported
on first lookup; third-party packages add theirs through the entry-point group
``pinnbench.problems`` (value ``"module:ClassName"``).
"""

from __future__ import annotations

import numbers
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from pinnbench.maths.problem import DTYPES, Problem
from pinnbench.registry import Registry

ID_PATTERN = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*-v\d+$")


@dataclass(frozen=True)
class ProblemEntry:
    """What an id stands for: a Problem class (or lazy 'module:Class') and fixed options."""

    cls: Any
    options: dict[str, Any] = field(default_factory=dict)


def _builtin_problem_modules() -> tuple[str, ...]:
    import pinnbench.problems as pkg

    return tuple(f"pinnbench.problems.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)
                 if not m.name.startswith("_"))


class _ProblemRegistry(Registry[ProblemEntry]):
    def _load(self) -> None:
        if not self._loaded:
            self._builtin_modules = _builtin_problem_modules()
        super()._load()


PROBLEMS: Registry[ProblemEntry] = _ProblemRegistry(
    "problem", entry_point_group="pinnbench.problems", list_hint="pinnbench list problems")


def register_problem(problem_id: str, cls: Any, **options: Any) -> None:
    """Register ``cls`` (a Problem subclass or ``"module:Class"``) under ``problem_id``;
    ``options`` are fixed keyword arguments for this id (e.g. ``radius``)."""
    if not ID_PATTERN.match(problem_id):
        raise ValueError(f"problem id must look like 'name-v1', got {problem_id!r}")
    PROBLEMS.register(problem_id, ProblemEntry(cls, dict(options)))


def list_problems() -> list[str]:
    return PROBLEMS.names()


def problem_class(problem_id: str) -> type[Problem]:
    entry = _entry(problem_id)
    cls = entry.cls
    if isinstance(cls, str):
        import importlib

        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Problem)):
        raise TypeError(f"problem {problem_id!r} resolves to {cls!r}, not a Problem subclass")
    return cls


def _entry(problem_id: str) -> ProblemEntry:
    obj = PROBLEMS.get(problem_id)
    if isinstance(obj, ProblemEntry):
        return obj
    return ProblemEntry(obj)  # an entry point gave a class directly


def make_problem(problem_id: str, dim: int, seed: int = 0, dtype: torch.dtype | str = torch.float32,
                 device: str | torch.device = "cpu", **options: Any) -> Problem:
    """Build problem ``problem_id`` in dimension ``dim``; every argument is validated with a
    message that names the allowed values."""
    if not isinstance(problem_id, str):
        raise ValueError(f"problem id must be a string, got {problem_id!r}")
    cls = problem_class(problem_id)
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if dim < cls.min_dim:
        raise ValueError(f"{problem_id} needs dim >= {cls.min_dim}, got {dim}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    merged = {**_entry(problem_id).options, **options}
    return cls(int(dim), seed=int(seed), dtype=resolve_dtype(dtype), device=resolve_device(device),
               id=problem_id, **merged)


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; allowed: {', '.join(DTYPES)}")


def resolve_device(device: str | torch.device) -> torch.device:
    """'cpu', 'cuda', 'cuda:i' or 'auto' (cuda when available): a torch.device that exists here."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:<index>") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
        return dev
    raise ValueError(f"unsupported device {device!r}; allowed: auto, cpu, cuda, cuda:<index>")
