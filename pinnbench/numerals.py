"""Numbers as the command line and solver specs accept them: ASCII numerals only, within bounds.

Python's ``int()`` and ``float()`` read far more than a user means to type: full-width and other
Unicode digits (``"８"`` -> 8), underscores (``"1_000"``), ``"inf"``, ``"nan"`` and surrounding
whitespace. A spec such as ``sdze[rank=８]`` would silently run rank 8 under an id that says
otherwise, and a number past 2^63 cannot be stored in SQLite at all. Every number a user writes
goes through :func:`parse_number` (a ValueError with what is allowed) or :func:`is_numeral`.
"""

from __future__ import annotations

import math
import re

#: an optional sign, digits with an optional fraction (or a fraction alone), an optional exponent;
#: ASCII only (``re.ASCII``: ``\d`` is [0-9])
_NUMERAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)

#: SQLite stores integers as signed 64-bit numbers
MAX_INT64 = 2**63 - 1


def is_numeral(text: str) -> bool:
    """Whether ``text`` is a decimal number written in ASCII (``12``, ``-1.5e3``, ``.5``)."""
    return isinstance(text, str) and _NUMERAL.fullmatch(text) is not None


def is_integer_numeral(text: str) -> bool:
    """Whether ``text`` is an integer written in ASCII digits, no exponent (``0``, ``-12``)."""
    return isinstance(text, str) and _INTEGER.fullmatch(text) is not None


def parse_number(text: str, what: str, *, integer: bool = False, minimum: float | None = None,
                 above: float | None = None, maximum: float | None = None) -> float | int:
    """``text`` (surrounding spaces allowed) as a finite number, an ``int`` when ``integer``
    (``1e3`` is accepted as 1000), with ``minimum <= value`` (or ``above < value``) and
    ``value <= maximum``; ValueError naming ``what`` and the allowed range otherwise."""
    t = text.strip() if isinstance(text, str) else text
    allowed = ("an integer" if integer else "a number") + _bounds_text(minimum, above, maximum)
    if not is_numeral(t):
        raise ValueError(f"{what} must be {allowed}, in ASCII digits; got {text!r}")
    value = int(t) if integer and is_integer_numeral(t) else float(t)  # int: exact, however long
    if not math.isfinite(value) or (integer and not float(value).is_integer()) \
            or (minimum is not None and value < minimum) or (above is not None and value <= above) \
            or (maximum is not None and value > maximum):
        raise ValueError(f"{what} must be {allowed}, got {text!r}")
    return int(value) if integer else float(value)


def _bounds_text(minimum: float | None, above: float | None, maximum: float | None) -> str:
    parts = []
    if minimum is not None:
        parts.append(f">= {_fmt(minimum)}")
    if above is not None:
        parts.append(f"> {_fmt(above)}")
    if maximum is not None:
        parts.append(f"<= {_fmt(maximum)}")
    return (" " + " and ".join(parts)) if parts else ""


def _fmt(v: float) -> str:
    """1, 0, 1e+09, 2^63 - 1 as written in a message."""
    if v == MAX_INT64:
        return "2^63 - 1"
    return f"{v:g}"
