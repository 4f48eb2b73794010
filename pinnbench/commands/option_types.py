"""The argparse types of the command line's numeric options: ASCII numerals within bounds
(:mod:`pinnbench.numerals`), so a typo, a full-width digit or a number SQLite or a timer cannot
hold is a one-line usage error at parse time."""

from __future__ import annotations

import argparse
import math

from pinnbench.numerals import is_numeral, parse_number

#: bounds of the numeric options, checked at parse time (a number past them is a typo, would not
#: fit SQLite's 64-bit integers, or would overflow a timer); every number in ASCII digits
MAX_STEPS = 10**9
MAX_SECONDS = 10**7  # 116 days
MAX_WIDTH = 2**20
MAX_DEPTH = 1000
MAX_POINTS = 10**9
MAX_PROCESSES = 1024  # --jobs, --local-workers
MAX_THREADS = 4096


def int_option(name: str, minimum: int = 1, maximum: int = MAX_STEPS):
    """The argparse type of an integer option ``name`` in ``[minimum, maximum]``."""
    def parse(text: str) -> int:
        try:
            return parse_number(text, name, integer=True, minimum=minimum, maximum=maximum)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def seconds_option(name: str):
    """The argparse type of a duration option ``name``: seconds > 0, up to ``MAX_SECONDS``."""
    def parse(text: str) -> float:
        try:
            return parse_number(text, name, above=0, maximum=MAX_SECONDS)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (seconds)") from None
    return parse


#: the least --memory-limit: below it no cell can even import torch
MIN_MEMORY_LIMIT = 64 * 2**20
#: the largest --memory-limit (1 PiB): more is a typo, and RLIMIT_AS takes 64-bit sizes
MAX_MEMORY_LIMIT = 2**50


def memory_size(text: str) -> int:
    """A size such as 2G, 512M or 1000000 (bytes), within the --memory-limit bounds."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = 1
    if t and t[-1] in units:
        mult, t = units[t[-1]], t[:-1]
    v = float(t) * mult if is_numeral(t) else float("nan")
    if not math.isfinite(v) or v < 1:
        raise argparse.ArgumentTypeError(f"memory limit must be a size such as 2G, 512M or "
                                         f"1000000 in ASCII digits, got {text!r}")
    if v < MIN_MEMORY_LIMIT:
        raise argparse.ArgumentTypeError(f"memory limit {text!r} is below {MIN_MEMORY_LIMIT >> 20}M; "
                                         "a cell needs more headroom than that (e.g. 2G)")
    if v > MAX_MEMORY_LIMIT:
        raise argparse.ArgumentTypeError(f"memory limit {text!r} is above 1P (1024T); give the "
                                         "headroom a cell may take, e.g. 20G")
    return int(v)
