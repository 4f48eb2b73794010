"""What the report says about sdze (docs/domain.md §4, docs/protocol.md): its ablation page and
its claims, declared as data (:mod:`pinnbench.ablation_page`) and judged by the report
(:mod:`pinnbench.report.ablation`). :class:`pinnbench.solvers.sdze.SDZE` returns them from its
``ablation_page`` and ``claims`` hooks.

The thresholds are ours: the CRNS slopes (-2 is 1/eps^2; "at most -1.5" without CRNS, "within
0.5 of flat" with it, over the 3 smallest eps, since at large eps the loss leaves its linear
regime along z and both variances rise); the held-basis slope against r (1 is linear; "roughly
linear", a quarter of a power allowed); the per-step cost compared over the paper's range of d,
10^5 to 10^7; the scale claim at d = 10^7 on one GPU.
"""

from __future__ import annotations

from pinnbench.ablation_page import (AblationPage, BeatsFullReference, CheaperPerStep, FasterThan,
                                     HeldVarianceSlope, LeanerThan, TrainsAt, VarianceFlatInEps)

#: the comparator of the backprop claims: the baseline solver family (solvers/bp.py)
BACKPROP = "bp"
#: the reference family shown beside sdze: zo, named by its CRNS setting (``zo[crns=false]``:
#: the naive combination of docs/domain.md §3; ``zo[crns=true]``: MeZO's own setting)
REFERENCE = "zo"


def sdze_page(family: str) -> AblationPage:
    # bp sits in the same table (issue 21, item 6), named by its estimator, seed-paired with
    # the base at equal steps like every row
    return AblationPage(family=family, title="SDZE's claims", cells="zeroth-order",
                        references=((REFERENCE, ("crns",)), (BACKPROP, ("estimator",))),
                        rank="rank", full="subspace")


def sdze_claims() -> tuple:
    return (
        VarianceFlatInEps("CRNS cancels the O(1/ε²) variance of the two-point quotient",
                          naive_max=-1.5, flat=0.5, points=3),
        HeldVarianceSlope("Subspace (a): the variance about the held basis's mean is O(r)",
                          max_slope=1.25),
        BeatsFullReference("Subspace (b): the held basis buys gradient accuracy",
                           full=("subspace=false", f"{REFERENCE}[crns=true]",
                                 f"{REFERENCE}[crns=false]")),
        CheaperPerStep("Subspace (c): subspace directions cost less per step than full-Gaussian "
                       "ones", than="subspace=false", dims=(10**5, 10**7)),
        TrainsAt("Trains at d = 10^7 on one GPU", dim=10**7),
        FasterThan("Faster than backprop (time to target)", comparator=BACKPROP),
        LeanerThan("Leaner than backprop (training peak)", comparator=BACKPROP),
    )
