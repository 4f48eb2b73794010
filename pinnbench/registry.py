"""A small generic registry of named plugins (problems, solvers).

Entries are registered eagerly (a class) or lazily (a ``"module:attr"`` string resolved on first
use), duplicates are refused, and unknown names are answered with a did-you-mean. Third-party
packages add entries through an entry-point group (``pinnbench.problems``, ``pinnbench.solvers``),
read once, the first time the registry is listed or looked up.

Modelled on lm-evaluation-harness's ``lm_eval/api/registry.py`` and Gymnasium's ``registration.py``.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """An id that no registry entry has; the message carries a did-you-mean."""


class Registry(Generic[T]):
    """Maps names to objects of one kind.

    ``kind`` is used in messages ("problem", "solver"); ``builtin_modules`` are imported before the
    first lookup so that their ``register`` calls run (lazy registration); ``entry_point_group``
    names the ``importlib.metadata`` group third-party plugins use; ``check`` validates a resolved
    object (raising ``TypeError``).
    """

    def __init__(
        self,
        kind: str,
        *,
        builtin_modules: tuple[str, ...] = (),
        entry_point_group: str | None = None,
        check: Callable[[str, Any], None] | None = None,
        list_hint: str = "",
    ) -> None:
        self.kind = kind
        self._builtin_modules = builtin_modules
        self._group = entry_point_group
        self._check = check
        self._list_hint = list_hint
        self._entries: dict[str, Any] = {}
        self._loaded = False

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, obj: T | str) -> None:
        """Register ``obj`` (an object, or a lazy ``"module:attr"`` string) under ``name``."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if isinstance(obj, str) and ":" not in obj:
            raise ValueError(f"lazy {self.kind} entry must look like 'module:attr', got {obj!r}")
        self._entries[name] = obj

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self._builtin_modules:
            importlib.import_module(mod)
        if self._group:
            for ep in entry_points(group=self._group):
                if ep.name not in self._entries:
                    self._entries[ep.name] = ep.value

    # -- lookup ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        obj = self._entries[name]
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            if self._check is not None:
                self._check(name, obj)
            self._entries[name] = obj
        return obj

    def unknown_message(self, name: object) -> str:
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.5)
        msg = f"unknown {self.kind} {name!r}"
        if close:
            msg += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
        else:
            msg += "; known: " + ", ".join(self.names())
        if self._list_hint:
            msg += f" ({self._list_hint})"
        return msg
