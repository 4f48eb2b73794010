"""Third-party problems and solvers: import the modules (``package.module``) or files
(``path/to/plugins.py``, imported as module ``plugins``) that register them. The one place
plugins are imported, in the planning process and in every cell process."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path


def import_plugins(imports: list[str]) -> None:
    """Import plugin modules (``a.b``) or files (``dir/x.py``, imported as module ``x``)."""
    for item in imports:
        if item.endswith(".py"):
            path = Path(item).resolve()
            name = path.stem
            if name in sys.modules:
                continue
            if not path.is_file():
                raise ValueError(f"plugin file {item!r} does not exist")
            mod_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[name] = module
            try:
                mod_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        else:
            importlib.import_module(item)
