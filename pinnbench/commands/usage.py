"""Bad usage of a ``pinnbench`` command: :class:`UsageError` (one line on stderr, exit 2, nothing
written), and the plugin import every command does first, whose failure is one."""

from __future__ import annotations


class UsageError(Exception):
    """Bad usage: shown as one line, exit code 2."""


def import_plugins(imports: list[str] | None) -> None:
    """Import the ``--import`` plugin modules or files; a broken plugin is a usage error."""
    from pinnbench.cells.cell import import_plugins as _import

    try:
        _import(imports or [])
    except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's to fix
        raise UsageError(f"cannot import plugin: {type(exc).__name__}: {exc}") from None
