"""Parse the ``--dims`` argument of ``pinnbench run`` into a sorted list of dimensions.

Grammar (items separated by commas; numbers may be written ``1000``, ``1e3`` or ``5e4``)::

    1e3..1e7        decades: 1e3, 1e4, 1e5, 1e6, 1e7 (a factor 10 from the start up to the end)
    1e3..1e5:x2     a geometric range with factor 2: 1000, 2000, 4000, ..., up to 1e5
    100,5e4         a list
    100,1e3..1e5    lists may mix single values and ranges

Every value must be an integer from 1 to ``MAX_DIM`` written in ASCII digits (``１e3`` with a
full-width digit is refused, not read as 1000); ranges need start <= end and an integer factor
>= 2.
The result is sorted with duplicates removed. Errors are ``ValueError`` with a message that says
what is allowed (the CLI shows it as a one-line usage error).
"""

from __future__ import annotations

import math

from pinnbench.numerals import is_numeral

#: the largest dimension a plan may name: far beyond any machine (a width-1 first layer at
#: d = 1e12 is 4 TB), well inside SQLite's 64-bit integers
MAX_DIM = 10**12
ALLOWED = ("a positive integer (100, 1e3, 5e4), a list 100,5e4, decades 1e3..1e7, "
           "or a geometric range 1e3..1e5:x2")


def parse_dim(text: str) -> int:
    """One dimension: ``"1000"``, ``"1e3"``, ``"5e4"`` -> int; must be an integer >= 1."""
    t = text.strip()
    if not is_numeral(t):
        raise ValueError(f"bad dimension {t!r}; expected {ALLOWED}, in ASCII digits")
    value = float(t)
    if not math.isfinite(value) or not value.is_integer() or value < 1 or value > MAX_DIM:
        raise ValueError(f"bad dimension {t!r}: a dimension must be an integer >= 1 and <= "
                         f"{MAX_DIM:.0e}; expected {ALLOWED}")
    return int(value)


def _parse_range(item: str) -> list[int]:
    body, _colon, factor_text = item.partition(":")
    start_text, _, end_text = body.partition("..")
    if not start_text.strip() or not end_text.strip():
        raise ValueError(f"bad dimension range {item!r}: give both ends, e.g. 1e3..1e7; "
                         f"expected {ALLOWED}")
    start, end = parse_dim(start_text), parse_dim(end_text)
    if start > end:
        raise ValueError(f"bad dimension range {item!r}: start {start} > end {end}")
    factor = 10
    if _colon:
        f = factor_text.strip()
        if not f.startswith("x"):
            raise ValueError(f"bad range step {factor_text!r} in {item!r}; write :x2 for a factor 2")
        factor_value = float(f[1:]) if is_numeral(f[1:]) else math.nan
        if not factor_value.is_integer() or not 2 <= factor_value <= MAX_DIM:
            raise ValueError(f"bad range factor {f!r} in {item!r}; expected :xK with an "
                             "integer K >= 2")
        factor = int(factor_value)
    out = []
    d = start
    while d <= end:
        out.append(d)
        d *= factor
    return out


def parse_dims(text: str) -> list[int]:
    """``"1e3..1e5:x2,7"`` -> ``[7, 1000, 2000, ..., 64000]`` (sorted, unique)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"no dimensions given; expected {ALLOWED}")
    dims: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"empty item in --dims {text!r}; expected {ALLOWED}")
        if ".." in item:
            dims.update(_parse_range(item))
        elif ":" in item:
            raise ValueError(f"bad dimension {item!r}: a step :xK needs a range A..B:xK")
        else:
            dims.add(parse_dim(item))
    return sorted(dims)
