"""95 % confidence intervals for errors measured on a finite test set (delta method).

A relative error on n test points is a ratio of two sample means,

    rel_l2^2 = R = mean(a) / mean(b),  a_i = (u_i - u*_i)^2,  b_i = u*_i^2
    rel_l1   = R = mean(a) / mean(b),  a_i = |u_i - u*_i|,    b_i = |u*_i|,

an estimate of the same ratio of expectations over the problem's sampling law. The first-order
delta method gives its standard error

    se(R)^2 = (var(a) - 2 R cov(a, b) + R^2 var(b)) / (n mean(b)^2)

(sample variances with n - 1). The interval is built on log R (a ratio is positive and skewed:
the interval stays positive and is wider above than below):

    R_lo, R_hi = R exp(-/+ z se(R) / R),  z = 1.96,

and rel_l2's interval is [sqrt(R_lo), sqrt(R_hi)]. It is an *asymptotic* interval over the draw
of the test points for a fixed model (what varies if the test set were drawn again from another
seed); it says nothing of the spread over training seeds. Checked by simulation in
tests/test_metrics_intervals.py: it covers the error of a fixed model over the sampling law
(estimated on a much larger sample) in >= 90 of 100 independent test sets of 100 points, and
agrees with a percentile bootstrap over test points. A sample maximum (max_abs) has no such interval.

The moments are accumulated chunk by chunk (Chan et al.'s pairwise update of means, centred sums
of squares and the co-moment), so an evaluation holds one chunk of points at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

#: the two-sided 95 % normal quantile
Z95 = 1.959963984540054


@dataclass
class RatioMoments:
    """Running moments of the pairs (a_i, b_i): count, means, centred sums of squares and the
    centred co-moment, merged chunk by chunk in float64."""

    n: int = 0
    mean_a: float = 0.0
    mean_b: float = 0.0
    m2_a: float = 0.0
    m2_b: float = 0.0
    c_ab: float = 0.0

    def add(self, a: Tensor, b: Tensor) -> "RatioMoments":
        """Merge one chunk of pairs ((m,) tensors on any device)."""
        m = a.numel()
        if m == 0:
            return self
        a, b = a.double().reshape(-1), b.double().reshape(-1)
        ma, mb = a.mean(), b.mean()
        da, db = a - ma, b - mb
        chunk = RatioMoments(m, float(ma), float(mb), float((da * da).sum()),
                             float((db * db).sum()), float((da * db).sum()))
        self.merge(chunk)
        return self

    def merge(self, other: "RatioMoments") -> "RatioMoments":
        if other.n == 0:
            return self
        if self.n == 0:
            self.__dict__.update(other.__dict__)
            return self
        n = self.n + other.n
        fa, fb = other.mean_a - self.mean_a, other.mean_b - self.mean_b
        w = self.n * other.n / n
        self.m2_a += other.m2_a + fa * fa * w
        self.m2_b += other.m2_b + fb * fb * w
        self.c_ab += other.c_ab + fa * fb * w
        self.mean_a += fa * other.n / n
        self.mean_b += fb * other.n / n
        self.n = n
        return self

    @property
    def ratio(self) -> float:
        return self.mean_a / self.mean_b if self.mean_b > 0 else float("nan")

    def ratio_se(self) -> float:
        """Delta-method standard error of mean(a) / mean(b) (NaN with fewer than 2 points)."""
        if self.n < 2 or not self.mean_b > 0:
            return float("nan")
        r = self.ratio
        var_a, var_b, cov = (v / (self.n - 1) for v in (self.m2_a, self.m2_b, self.c_ab))
        var_r = (var_a - 2.0 * r * cov + r * r * var_b) / (self.n * self.mean_b**2)
        return math.sqrt(max(var_r, 0.0))

    def ratio_interval(self, z: float = Z95) -> tuple[float, float]:
        """(lo, hi) for mean(a) / mean(b), on the log scale (see the module docstring)."""
        r, se = self.ratio, self.ratio_se()
        if not (math.isfinite(r) and math.isfinite(se)):
            return float("nan"), float("nan")
        if r <= 0.0:
            return 0.0, 0.0
        f = math.exp(min(z * se / r, 700.0))
        return r / f, r * f


def rel_l2_interval(moments: RatioMoments, z: float = Z95) -> tuple[float, float]:
    """Interval of rel_l2 = sqrt(mean(e^2) / mean(u*^2)) from the moments of (e^2, u*^2)."""
    lo, hi = moments.ratio_interval(z)
    return math.sqrt(lo), math.sqrt(hi)


def rel_l1_interval(moments: RatioMoments, z: float = Z95) -> tuple[float, float]:
    """Interval of rel_l1 = mean|e| / mean|u*| from the moments of (|e|, |u*|)."""
    return moments.ratio_interval(z)


def error_moments(err: Tensor, target: Tensor,
                  l2: RatioMoments | None = None,
                  l1: RatioMoments | None = None) -> tuple[RatioMoments, RatioMoments]:
    """Add one chunk of pointwise errors ``err = u - u*`` and targets ``u*`` to the moments of
    rel_l2 (pairs (e^2, u*^2)) and rel_l1 (pairs (|e|, |u*|)); returns (l2, l1)."""
    l2 = RatioMoments() if l2 is None else l2
    l1 = RatioMoments() if l1 is None else l1
    e, t = err.double(), target.double()
    l2.add(e * e, t * t)
    l1.add(e.abs(), t.abs())
    return l2, l1
