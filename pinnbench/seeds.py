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

A step captured as a CUDA graph cannot make a generator: it draws from a fixed
:class:`GeneratorPool` registered with the graph, whose generators are seeded on the host before
each replay (:func:`generator` takes from the active pool).
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator, Sequence

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
    """A generator on ``device`` seeded with ``seed``; inside :meth:`GeneratorPool.active`, the
    pool's generator that was seeded with it (the same numbers: a generator seeded with s
    starts its stream at s's first number either way)."""
    if _ACTIVE_POOL is not None:
        return _ACTIVE_POOL.take(seed, device)
    return torch.Generator(device=device).manual_seed(int(seed))


class ScheduleError(RuntimeError):
    """A step asked its :class:`GeneratorPool` for a seed it was not armed with, or twice for
    one, or left an armed seed undrawn: its list of seeds (the schedule) and its draws disagree,
    so a captured replay would draw other numbers than the eager step."""


_ACTIVE_POOL: "GeneratorPool | None" = None


class GeneratorPool:
    """A fixed list of generators for a step captured as a CUDA graph.

    A captured graph replays its kernels with the generators it was captured with: every
    generator the step draws from must exist before the capture, be registered with the graph
    (``CUDAGraph.register_generator_state``) and get its seed *outside* the graph, before each
    replay (a replay starts a registered generator at its host seed and offset, and seeding
    resets the offset to 0: "CUDA Graphs", PyTorch docs, graph-safe RNG). So the step's seeds
    are listed before it runs, in a fixed order of roles (its schedule): :meth:`arm` seeds
    generator k with the k-th, and inside :meth:`active` :func:`generator` (seed) returns the
    generator armed with that seed. Generator k then plays the same role at every step, which
    is what lets one graph, captured once, replay every later step.

    A seed the step draws from several times (a perturbation regenerated for each of its uses)
    is listed as often: each draw restarts its stream, so each takes a generator of its own
    (the next one armed with it, in the order listed). The check is strict both ways
    (:class:`ScheduleError`): a seed not armed, a seed taken more often than listed and, at
    :meth:`check_drawn`, an armed generator never taken. So an eager step run through the pool
    checks the schedule against the seeds the step actually asks for."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.generators: list[torch.Generator] = []
        self.frozen = False
        self._armed = 0
        self._slots: dict[int, list[int]] = {}  # seed -> its generators, in the order listed
        self._taken: set[int] = set()

    def arm(self, seeds: Sequence[int]) -> None:
        """Seed generator k with ``seeds[k]`` (on the host, before the step or replay)."""
        seeds = [int(s) for s in seeds]
        if self.frozen and len(seeds) != len(self.generators):
            raise ScheduleError(f"the captured step draws from {len(self.generators)} "
                                f"generators; this step's schedule lists {len(seeds)} seeds")
        while len(self.generators) < len(seeds):
            self.generators.append(torch.Generator(device=self.device))
        for g, s in zip(self.generators, seeds):
            g.manual_seed(s)
        self._slots = {}
        for k, s in enumerate(seeds):
            self._slots.setdefault(s, []).append(k)
        self._armed = len(seeds)
        self._taken = set()

    def freeze(self) -> list[torch.Generator]:
        """The generators, fixed from now on (the graph registers them): every later
        :meth:`arm` must list as many seeds."""
        self.frozen = True
        return list(self.generators)

    def take(self, seed: int, device: torch.device | str) -> torch.Generator:
        slots = self._slots.get(int(seed))
        if slots is None:
            raise ScheduleError(f"the step draws from seed {seed}, which its schedule does not "
                                "list")
        k = next((k for k in slots if k not in self._taken), None)
        if k is None:
            raise ScheduleError(f"the step draws from seed {seed} more often than its schedule "
                                f"lists it ({len(slots)}x; a pool generator taken again would "
                                "continue its stream, not restart it)")
        if torch.device(device).type != self.device.type:
            raise ScheduleError(f"a generator on {device} from a pool on {self.device}")
        self._taken.add(k)
        return self.generators[k]

    def check_drawn(self) -> None:
        """Every armed seed was taken (else the schedule lists a draw the step no longer
        makes)."""
        missing = sorted(set(range(self._armed)) - self._taken)
        if missing:
            raise ScheduleError(f"the schedule's seeds {missing} (by position) were armed but "
                                "never drawn from")

    @contextlib.contextmanager
    def active(self) -> Iterator["GeneratorPool"]:
        """:func:`generator` takes from this pool inside the block."""
        global _ACTIVE_POOL
        if _ACTIVE_POOL is not None:
            raise RuntimeError("a generator pool is already active")
        _ACTIVE_POOL = self
        try:
            yield self
        finally:
            _ACTIVE_POOL = None
