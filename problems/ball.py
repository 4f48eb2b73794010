"""Poisson, Allen-Cahn and Sine-Gordon on a ball with the two-body and three-body solutions.

The second-order suites of STDE (Shi et al., NeurIPS 2024), SDGD and HTE (Hu et al., 2023/2024),
docs/domain.md §5:

    Poisson      Lap u            = f
    Allen-Cahn   Lap u + u - u^3  = f
    Sine-Gordon  Lap u + sin u    = f

on the ball ||x|| < R with u = 0 on the sphere, exact solution u* = A(x) u2(x) where
A = 1 - ||x||^2 / R^2 is also the hard-constraint factor (B = 0), and u2 is the two-body
``sum_{i<d} c_i sin(x_i + cos x_{i+1} + x_{i+1} cos x_i)`` or three-body
``sum_{i<d-1} c_i exp(x_i x_{i+1} x_{i+2})`` function of :mod:`pinnbench.problems._many_body`,
with c_i ~ N(0, 1) drawn from the problem's seed (stream "coefficients", float64 on the CPU, then
cast: the same c on every device). The source is f := L u*, in closed form: with
s = ||x||^2, grad A = -2x/R^2 and Lap A = -2d/R^2,

    Lap u* = A Lap u2 - (4/R^2) x . grad u2 - (2d/R^2) u2,

plus the pointwise part (u* - u*^3 or sin u*). Cost O(d) per point, memory bounded by walking
the coordinates in blocks (:mod:`pinnbench.problems._chunked`).

Sampler: x = r g / ||g||, g ~ N(0, I), r ~ U[0, R]: radius-uniform, NOT volume-uniform, as in the
published numbers. Test metric: relative L2 on the fixed test set (``Problem.test_chunks``).

Radius (option ``radius``). ``*-v1`` ids use R = 1, the published setting. Inside the unit ball
the coordinates are O(1/sqrt(d)), so at d >= 100 each phi_i is 1 + O(1/sqrt(d)) and the two-body
solution is nearly fitted by (1 - ||x||^2)(a + b . x) (a first-order Taylor expansion of every
sin(phi_i) about phi = 1); the three-body exponents x_i x_{i+1} x_{i+2} are O(d^{-3/2}), so
there u2 is nearly the constant sum c_i. Small errors at large d on these ids say little about
high-dimensional learning. The ``*-scaled-v1`` ids use R = sqrt(d) (``radius="sqrt-dim"``,
resolved when the problem is built): coordinates are O(1) and the solution is genuinely
high-dimensional. Caveat for the scaled three-body ids: exp(x_i x_{i+1} x_{i+2}) with O(1)
coordinates has heavy tails (the largest of ~d products of three near-Gaussian numbers grows like
(log d)^{3/2}), so u* is dominated by a few windows at large d. Measured (seed 0, 16 points,
float32): at d = 10^7 the median |u*| is 1.7e3 but the largest 1.4e10, and the Allen-Cahn source
reaches 2.7e30 (float32 overflows at 3.4e38); the relative L2 error there is dominated by a few
points. Prefer the two-body scaled ids for large-d comparisons.

gPINN (every id here): ``source_grad(x, index)`` gives d f / d x_j in closed form, O(d + m).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

from pinnbench.maths.directions import Directions
from pinnbench.maths.jets import Jet, plus
from pinnbench.maths.problem import LinearTerm, Operator, Problem, radius_uniform_ball
from pinnbench.maths.problem_registry import register_problem
from pinnbench.problems._chunked import sqnorm
from pinnbench.problems._many_body import ManyBody, ThreeBody, TwoBody, WindowSums
from pinnbench.maths.streaming import RadialBallStream, block_width

#: the value of the ``radius`` option that means R = sqrt(dim)
SQRT_DIM = "sqrt-dim"
#: the set-up warm-up batch holds at most this many numbers (:meth:`BallProblem.warm_up`)
WARM_UP_ELEMENTS = 2**27


def resolve_radius(radius: Any, dim: int) -> float:
    """``radius`` option -> R: a positive finite number, or ``"sqrt-dim"`` for sqrt(dim)."""
    if radius == SQRT_DIM:
        return math.sqrt(dim)
    if (isinstance(radius, bool) or not isinstance(radius, numbers.Real)
            or not math.isfinite(radius) or radius <= 0):
        raise ValueError(f"radius must be a positive number or {SQRT_DIM!r}, got {radius!r}")
    return float(radius)


class BallProblem(Problem):
    """``Lap u + pointwise(u) = f`` on the ball ||x|| < R with u* = (1 - ||x||^2/R^2) u2."""

    body: type[ManyBody] = ManyBody
    order = 2
    operator = Operator((LinearTerm("laplacian"),))
    option_names = ("radius",)
    boundary_conditions = ("u = 0 on the sphere",)
    well_posed = True
    ill_posed_reason = ""

    def __init__(self, dim: int, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", id: str = "", **options: Any) -> None:
        super().__init__(dim, seed, dtype, device, id, **options)
        self.radius = resolve_radius(options.get("radius", 1.0), self.dim)
        scaled = options.get("radius") == SQRT_DIM
        self.domain = f"ball ||x|| < {self.radius:g}" + (" (sqrt(d))" if scaled else "")
        c = torch.randn(self.body.n_coefficients(self.dim),
                        generator=self.cpu_generator("coefficients"), dtype=torch.float64)
        self.coefficients = c.to(device=self.device, dtype=self.dtype)

    # -- boundary factor ---------------------------------------------------------------------------
    def _a(self, s: Tensor) -> Tensor:
        r2 = self.radius**2
        return 1.0 - (s if r2 == 1.0 else s / r2)  # s / 1.0 = s: no op on the unit ball

    def ansatz(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._a(sqnorm(x)), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def ansatz_jet(self, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        return self._a_jet(sqnorm(x), dirs.dot(x), dirs.sqnorm(), order), Jet.constant(0.0, order)

    def _a_jet(self, s: Tensor, xv: Tensor, vsq: Tensor, order: int) -> Jet:
        """A = 1 - S / R^2 along the directions, S = [s, 2 x.v, ||v||^2] the jet of ||x||^2
        (``spatial_sqnorm_jet``): [1 - s k, (2 x.v) (-k), ||v||^2 (-k)] with k = 1 / R^2, the
        numbers of 1 - S * k to the bit (-(c k) = c (-k) exactly), without a negation per
        coefficient; on the unit ball no product by k = 1 (x.v (-2) = -(2 x.v) exactly)."""
        k = 1.0 / self.radius**2
        s, vsq = s.unsqueeze(1), vsq.to(s.dtype).unsqueeze(0)
        if k == 1.0:
            return Jet([1.0 - s, xv * -2.0, -vsq], order)
        return Jet([1.0 - s * k, (2.0 * xv) * -k, vsq * -k], order)

    # -- solution and source ---------------------------------------------------------------------
    def exact(self, x: Tensor) -> Tensor:
        return self._a(sqnorm(x)) * self.body.sums(x, self.coefficients, 0)["u2"]

    def laplacian_exact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(Lap u*, u*), (n,) each."""
        return self._laplacian_from(self.body.sums(x, self.coefficients, 2), sqnorm(x))

    def _laplacian_from(self, t: dict[str, Tensor], s: Tensor) -> tuple[Tensor, Tensor]:
        """(Lap u*, u*) from the body's order-2 sums ``t`` and s = ||x||^2."""
        r2 = self.radius**2
        a = self._a(s)
        lap = a * t["lap"] - (4.0 / r2) * t["x_grad"] - (2.0 * self.dim / r2) * t["u2"]
        return lap, a * t["u2"]

    def source(self, x: Tensor) -> Tensor:
        lap, u = self.laplacian_exact(x)
        return plus(lap, self.pointwise(u))  # a linear operator's 0.0: no op

    def sample_interior(self, n: int, generator: torch.Generator) -> Tensor:
        return radius_uniform_ball(n, self.dim, generator, r_max=self.radius, dtype=self.dtype,
                                   device=self.device)

    def warm_up(self, n_points: int = 2) -> None:
        """:meth:`Problem.warm_up` on at most ``WARM_UP_ELEMENTS`` numbers: the compiled closed
        forms take the number of points as a dynamic size, so fewer rows compile the same graphs,
        and 100 points of d = 3e7 would be a 12 GB batch in set-up (more than the streamed cell's
        whole step)."""
        super().warm_up(max(2, min(n_points, WARM_UP_ELEMENTS // self.input_dim)))

    def warm_up_stream(self, n_points: int) -> None:
        """Compile the streamed source's block function (:class:`StreamedSource`) on one block of
        ``n_points`` rows, in set-up rather than inside the first step (and its memory peak).
        Draws from its own generator: no random stream of the cell moves."""
        width = min(self.dim, block_width(n_points))
        g = torch.Generator(device=self.device).manual_seed(0)
        xb = torch.randn(n_points, width, generator=g, dtype=self.dtype, device=self.device)
        self.stream_source(n_points).add(xb.mul_(self.radius / math.sqrt(self.dim)), 0)

    # -- streamed step data (pinnbench.maths.streaming, docs/streaming.md) ----------------------------
    #: the step's points can be streamed over column blocks (no n x d tensor)
    supports_streaming = True

    def stream_interior(self, n: int, seed: int, width: int) -> RadialBallStream:
        """n points of :meth:`sample_interior`'s distribution as a stream of column blocks of
        ``width`` columns, fixed by ``seed`` (block by block; not the same numbers)."""
        return RadialBallStream(n, self.dim, width, seed, r_max=self.radius, dtype=self.dtype,
                                device=self.device)

    def stream_source(self, n: int) -> "StreamedSource":
        """An accumulator of f over streamed blocks: ``add(xb, a)`` left to right, then
        ``source(s)`` with s = ||x||^2."""
        return StreamedSource(self, n)

    # -- the input dimension sharded (pinnbench.cells.sharded_ball, docs/sharding.md) ------------
    #: A, f and u* = A u2 come from s = ||x||^2 and the body's window sums, which a sharded cell
    #: sums over its ranks (:meth:`ansatz_from`, :meth:`ansatz_jet_from`, :meth:`source_from`)
    supports_sharding = True

    @property
    def radii(self) -> tuple[float, float]:
        """The sampler's radius range: r ~ U[0, R]."""
        return 0.0, self.radius

    def ansatz_from(self, s: Tensor) -> Tensor:
        """A from s = ||x||^2."""
        return self._a(s)

    def source_from(self, t: dict[str, Tensor], s: Tensor) -> Tensor:
        """f from the body's order-2 sums ``t`` and s = ||x||^2."""
        lap, u = self._laplacian_from(t, s)
        return plus(lap, self.pointwise(u))  # a linear operator's 0.0: no op

    def ansatz_jet_from(self, s: Tensor, xv: Tensor, vsq: Tensor,
                        order: int) -> tuple[Jet, Jet]:
        """:meth:`ansatz_jet` from the reductions s = ||x||^2 (n,), x . v (n, V) and ||v||^2
        (V,): the same arithmetic as :meth:`ansatz_jet`."""
        return self._a_jet(s, xv, vsq, order), Jet.constant(0.0, order)

    # -- pointwise part --------------------------------------------------------------------------
    def pointwise_derivative(self, u: Tensor) -> Tensor | float:
        """d pointwise(u) / du (gPINN)."""
        return 0.0

    # -- gPINN -----------------------------------------------------------------------------------
    def source_grad(self, x: Tensor, index: Tensor) -> Tensor:
        """d f / d x_j for the coordinates j in ``index`` ((m,) LongTensor), (n, m), closed form.

        With A = 1 - s/R^2, X = x . grad u2 and u* = A u2:
        d_j Lap u* = (-2 x_j/R^2) Lap u2 + A d_j Lap u2 - (4/R^2) d_j X - (2d/R^2) d_j u2,
        d_j u*     = (-2 x_j/R^2) u2 + A d_j u2,   d_j f = d_j Lap u* + P'(u*) d_j u*,
        where d_j u2, d_j Lap u2 and d_j X = d_j u2 + sum_a x_a d_a d_j u2 involve only the
        windows that contain x_j (``body.local_source_terms``). Cost O(d) for the global sums
        plus O(m) for the local terms."""
        index = torch.as_tensor(index, device=x.device)
        if index.ndim != 1 or index.dtype not in (torch.int64, torch.int32):
            raise ValueError("index must be a 1-D integer tensor, got "
                             f"{index.dtype} {tuple(index.shape)}")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.dim):
            raise ValueError(f"coordinate indices must lie in [0, {self.dim})")
        d, r2 = self.dim, self.radius**2
        t = self.body.sums(x, self.coefficients, 2)
        a = self._a(sqnorm(x)).unsqueeze(1)
        u2, lap2 = t["u2"].unsqueeze(1), t["lap"].unsqueeze(1)
        du2, dlap2, dx = self.body.local_source_terms(x, self.coefficients, index)
        da = -2.0 * x[:, index] / r2
        dlap = da * lap2 + a * dlap2 - (4.0 / r2) * dx - (2.0 * d / r2) * du2
        du = da * u2 + a * du2
        dp = self.pointwise_derivative(a.squeeze(1) * t["u2"])
        return dlap + (dp.unsqueeze(1) if isinstance(dp, Tensor) else dp) * du


class StreamedSource:
    """f = Lap u* + pointwise(u*) accumulated over streamed column blocks: the body's order-2
    window sums (:class:`pinnbench.problems._many_body.WindowSums`, blocks with their halo),
    combined with s = ||x||^2 at the end exactly as :meth:`BallProblem.source` combines them."""

    def __init__(self, problem: BallProblem, n: int) -> None:
        self.problem = problem
        self.sums = WindowSums(problem.body, problem.coefficients, 2, n, problem.dim,
                               problem.dtype, problem.device)

    def add(self, xb: Tensor, a: int) -> None:
        self.sums.add(xb, a)

    def source(self, s: Tensor) -> Tensor:
        lap, u = self.problem._laplacian_from(self.sums.result(), s)
        return plus(lap, self.problem.pointwise(u))


class TwoBodyBall(BallProblem):
    body = TwoBody
    min_dim = 2
    supports_gpinn = True


class ThreeBodyBall(BallProblem):
    body = ThreeBody
    min_dim = 3
    supports_gpinn = True


# -- equations -----------------------------------------------------------------------------------
class _Poisson:
    operator = Operator((LinearTerm("laplacian"),), "")


class _AllenCahn:
    operator = Operator((LinearTerm("laplacian"),), "u - u^3")

    def pointwise(self, u: Tensor) -> Tensor:
        return u - u * u * u

    def pointwise_derivative(self, u: Tensor) -> Tensor:
        return 1.0 - 3.0 * u * u


class _SineGordon:
    operator = Operator((LinearTerm("laplacian"),), "sin(u)")

    def pointwise(self, u: Tensor) -> Tensor:
        return torch.sin(u)

    def pointwise_derivative(self, u: Tensor) -> Tensor:
        return torch.cos(u)


class PoissonTwoBody(_Poisson, TwoBodyBall):
    """Lap u = f, two-body solution."""
    family = "poisson-2body"


class PoissonThreeBody(_Poisson, ThreeBodyBall):
    """Lap u = f, three-body solution."""
    family = "poisson-3body"


class AllenCahnTwoBody(_AllenCahn, TwoBodyBall):
    """Lap u + u - u^3 = f, two-body solution."""
    family = "allen-cahn-2body"


class AllenCahnThreeBody(_AllenCahn, ThreeBodyBall):
    """Lap u + u - u^3 = f, three-body solution."""
    family = "allen-cahn-3body"


class SineGordonTwoBody(_SineGordon, TwoBodyBall):
    """Lap u + sin u = f, two-body solution."""
    family = "sine-gordon-2body"


class SineGordonThreeBody(_SineGordon, ThreeBodyBall):
    """Lap u + sin u = f, three-body solution."""
    family = "sine-gordon-3body"


for _cls in (PoissonTwoBody, PoissonThreeBody, AllenCahnTwoBody, AllenCahnThreeBody,
             SineGordonTwoBody, SineGordonThreeBody):
    register_problem(f"{_cls.family}-v1", _cls)
    register_problem(f"{_cls.family}-scaled-v1", _cls, radius=SQRT_DIM)
del _cls
