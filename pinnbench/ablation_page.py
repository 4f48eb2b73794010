"""What a solver says about its ablation page and its claims, as plain data; the report
(:mod:`pinnbench.report.ablation`) reads it and judges every claim from the run's data.

A solver with a page returns an :class:`AblationPage` from
:meth:`pinnbench.solver.Solver.ablation_page` and its claim definitions from
:meth:`pinnbench.solver.Solver.claims`; the harness names no solver. The claim kinds below are
the report's generic rules (docs/protocol.md): each names what it compares (a variant of the
base by its factor, a comparator solver by its name), and the report evaluates it the same way
for every solver that declares it. Texts that name the solver are formed from its name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AblationPage:
    """The page of ``family``: its cells, and those of the ``references`` (other solver
    families shown beside it, each labelled by the parameters named: ``(("zo", ("crns",)),)``
    labels a zo cell ``zo[crns=false]``). The base spec is recovered from the data: the
    ``family`` spec from which the most others differ in exactly one parameter.

    ``rank``/``full``: the variance-against-rank figure plots the base's variants in the
    parameter ``rank``, and the variant that differs from the base in ``full`` (a boolean
    parameter) as the full reference (None: no such figure)."""

    family: str
    #: the page's heading ("SDZE's claims") and what the captions call its cells ("zeroth-order")
    title: str
    cells: str
    references: tuple[tuple[str, tuple[str, ...]], ...] = ()
    rank: str | None = None
    full: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The solver families whose cells the page shows, the family first."""
        return (self.family, *(name for name, _ in self.references))


# -- the claim kinds (each judged by pinnbench.report.ablation) -----------------------------------
@dataclass(frozen=True)
class VarianceFlatInEps:
    """The difference quotient's variance (the diagnostics' ``zo_quotient_variance``, with the
    common-random-numbers switch ``crns`` on and off): log-log slope against eps at most
    ``naive_max`` without, at most ``flat`` in absolute value with, over the ``points`` smallest
    eps."""

    claim: str
    naive_max: float = -1.5
    flat: float = 0.5
    points: int = 3


@dataclass(frozen=True)
class HeldVarianceSlope:
    """The held-basis variance (``ratio_held``) against the page's ``rank``: log-log slope at
    most ``max_slope``."""

    claim: str
    max_slope: float = 1.25


@dataclass(frozen=True)
class BeatsFullReference:
    """The base's averaged estimate (``ratio_window``) closer to G than that of the first of
    ``full`` (factors of the page, in order of preference) present at each d."""

    claim: str
    full: tuple[str, ...]


@dataclass(frozen=True)
class CheaperPerStep:
    """The base's median time per step below that of the variant ``than`` at every d in
    [``dims[0]``, ``dims[1]``]."""

    claim: str
    than: str
    dims: tuple[int, int]


@dataclass(frozen=True)
class TrainsAt:
    """A cell of the family at d >= ``dim`` on a GPU below its own constant fit."""

    claim: str
    dim: int


@dataclass(frozen=True)
class FasterThan:
    """The base's median time to its constant fit below that of ``comparator``'s cells at the
    same (problem, d, device), both tuned by the same protocol."""

    claim: str
    comparator: str


@dataclass(frozen=True)
class LeanerThan:
    """The base's median training peak below ``comparator``'s at the same (problem, d,
    device), counted where the base learned (below its constant fit in most seeds)."""

    claim: str
    comparator: str


ClaimKind = (VarianceFlatInEps | HeldVarianceSlope | BeatsFullReference | CheaperPerStep
             | TrainsAt | FasterThan | LeanerThan)
