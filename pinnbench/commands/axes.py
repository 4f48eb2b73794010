"""The axes of a sweep as the command line writes them: lists, dimensions, seeds.

Every command that takes a sweep (``pinnbench run``, ``pinnbench tune``, ``pinnbench ablate``, the
bench scripts) reads its axes here, so each is written one way everywhere. Errors are
``ValueError`` with a message that says what is allowed (the CLI shows it as a one-line usage
error).

Lists (``--problems``, ``--solvers``): items separated by commas outside brackets, so
``sdze[rank=4,eps=1e-3],bp`` is two items (:func:`split_top_level`).

Dimensions (``--dims``; numbers may be written ``1000``, ``1e3`` or ``5e4``)::

    1e3..1e7        decades: 1e3, 1e4, 1e5, 1e6, 1e7 (a factor 10 from the start up to the end)
    1e3..1e5:x2     a geometric range with factor 2: 1000, 2000, 4000, ..., up to 1e5
    100,5e4         a list
    100,1e3..1e5    lists may mix single values and ranges

Every value must be an integer from 1 to ``MAX_DIM`` written in ASCII digits (``１e3`` with a
full-width digit is refused, not read as 1000); ranges need start <= end and an integer factor
>= 2. The result is sorted with duplicates removed.

Seeds (``--seeds``): ``0,1,2`` or an inclusive range ``0..4``, integers from 0 to ``MAX_SEED`` in
ASCII digits, at most ``MAX_SEEDS`` of them; sorted, duplicates removed.
"""

from __future__ import annotations

import math

from pinnbench.numerals import is_integer_numeral, is_numeral

#: the largest dimension a plan may name: far beyond any machine (a width-1 first layer at
#: d = 1e12 is 4 TB), well inside SQLite's 64-bit integers
MAX_DIM = 10**12
#: the largest seed: what every generator in the chain takes (numpy's take 32 bits)
MAX_SEED = 2**32 - 1
#: no seed list is longer than this
MAX_SEEDS = 1_000_000
ALLOWED = ("a positive integer (100, 1e3, 5e4), a list 100,5e4, decades 1e3..1e7, "
           "or a geometric range 1e3..1e5:x2")


def split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets: ``"sdze[rank=4,eps=1e-3],bp"`` -> two items."""
    items, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in {text!r}")
        if ch == "," and depth == 0:
            items.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in {text!r}")
    items.append("".join(cur).strip())
    if any(not i for i in items):
        raise ValueError(f"empty item in list {text!r}")
    return items


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


def parse_seeds(text: str) -> list[int]:
    """``"0..2,7"`` -> ``[0, 1, 2, 7]`` (sorted, unique)."""
    out: set[int] = set()
    for item in text.split(","):
        item = item.strip()
        a, sep, b = item.partition("..")
        a, b = a.strip(), b.strip()
        if not is_integer_numeral(a) or (sep and not is_integer_numeral(b)):
            raise ValueError(f"bad --seeds {text!r}; expected non-negative integers in ASCII "
                             "digits like 0,1,2 or a range 0..4")
        lo, hi = int(a), int(b) if sep else int(a)
        if lo < 0 or hi < lo or hi > MAX_SEED:
            raise ValueError(f"bad --seeds {text!r}; seeds are integers from 0 to {MAX_SEED} "
                             "and a range needs start <= end")
        if hi - lo + 1 + len(out) > MAX_SEEDS:
            raise ValueError(f"--seeds {text!r} asks for more than {MAX_SEEDS:,} seeds")
        out.update(range(lo, hi + 1))
    return sorted(out)
