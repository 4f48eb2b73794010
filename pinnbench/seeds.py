"""Seeds derived from seeds, and generators from seeds: the randomness of a cell.

Two derivations, one per purpose:

- :func:`cell_stream_seed` (``seed``, ``"model"``): the seed of one **named stream of a cell**
  (its initial model, its solver, its diagnostics), fixed by the cell's seed alone, so that a
  row, a study script and the diagnostics rebuild the same model from the same spec;
- :func:`derive_seed` (integers): the seed of one **regenerable piece** inside a stream.
  Zeroth-order perturbations (:mod:`pinnbench.solvers._zo_perturbations`) and streamed step data
  (:mod:`pinnbench.maths.streaming`) are described by integers, never stored: each piece is drawn from a
  generator seeded by ``derive_seed(seed, part, ...)``, so any piece can be drawn again, in any
  order, on any device.
"""

from __future__ import annotations

import hashlib

import torch

_MASK64 = (1 << 64) - 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64 mixing, Steele et al. 2014): different part
    tuples give unrelated seeds, the same tuple the same seed."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        z = h
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h & ((1 << 63) - 1)


def cell_stream_seed(seed: int, stream: str) -> int:
    """The seed of the cell's random stream ``stream`` ("model", "solver", "diagnostics", ...):
    the first 63 bits of sha256("{seed}:{stream}"), fixed by the cell's seed and the name."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def cell_generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` for the cell's stream ``stream`` (:func:`cell_stream_seed`)."""
    return generator(cell_stream_seed(seed, stream), device)


def draw_seed(generator: torch.Generator) -> int:
    """One 62-bit seed drawn from ``generator`` (advances it)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))
