"""The Problem contract: a PDE on a domain with a closed-form solution, declared as data.

A problem is ``L u = f`` with ``L u = sum_k coef_k * T_k[u] + pointwise(u)``: a sum of named
terms ``T_k`` (laplacian, bilaplacian, dt, dtt, weighted_laplacian, drift: linear;
grad_power_mean: a separable nonlinear function of the first derivatives) that estimators know
how to estimate, plus a pointwise nonlinearity. The solution is sought in a hard-constraint ansatz

    u(x) = A(x) * N(x) + B(x)

where N is the network, A vanishes on the boundary (and initial slice) and B carries the
boundary data, so that every u of this form satisfies the boundary conditions exactly.
Problems know nothing of networks or solvers: they give A and B (values and jets), the exact
solution, the source term, samplers and the residual.

Points are (n, D) tensors with D = dim, or D = dim + 1 for time-dependent problems (time last).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor

from pinnbench import memory
from pinnbench.maths.directions import Directions
from pinnbench.maths.jets import Jet

#: the terms an operator may use (all linear but grad_power_mean), and what each means for u(x, t)
TERMS: dict[str, str] = {
    "laplacian": "sum_i d^2u/dx_i^2 over the spatial coordinates",
    "bilaplacian": "Laplacian of the Laplacian (4th order) over the spatial coordinates",
    "dt": "du/dt (time is the last coordinate)",
    "dtt": "d^2u/dt^2",
    # first/second-order terms of the terminal-value problems (problems/terminal.py)
    "weighted_laplacian": "sum_i x_i^2 d^2u/dx_i^2 over the spatial coordinates (Black-Scholes)",
    "drift": "x . grad_x u = sum_i x_i du/dx_i over the spatial coordinates",
    # not linear in u: a separable function of the first derivatives, estimated like the others
    "grad_power_mean": "(1/d) sum_i |du/dx_i|^c over the spatial coordinates, "
                       "c = problem.gradient_exponent (nonlinear, first order; HJB-Lin)",
}

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

#: size of the fixed test set (docs/domain.md §5: 20,000 points), reduced at large D so that its
#: points fit in TEST_SET_ELEMENTS numbers (128 MiB in float32) and an evaluation stays a small
#: fraction of a cell: n_test = clamp(TEST_SET_ELEMENTS // D, TEST_SET_MIN, TEST_SET_MAX), i.e.
#: 20,000 points up to D = 1677, 3355 at D = 10^4, 335 at 10^5, 100 from D = 335,545 on.
TEST_SET_MAX = 20_000
TEST_SET_MIN = 100
TEST_SET_ELEMENTS = 2**25
#: the test set is drawn in chunks of this many numbers (part of its definition: the chunking
#: fixes the order in which the generator is consumed)
TEST_CHUNK_ELEMENTS = 2**27
#: the random streams (:meth:`Problem.cpu_generator`) of the test set and of the validation set
#: that tuning selects on (docs/tuning.md). A stream's seed is seed * 1,000,003 + h(stream); the
#: two h differ by a non-multiple of 1,000,003, so no cell seed's validation generator is any
#: seed's test-set generator (tests/test_tune_validation.py checks it)
TEST_STREAM = "test-set"
VALIDATION_STREAM = "validation-set"


def test_set_size(input_dim: int) -> int:
    """The documented rule above: 20,000 points at small D, 2^25 / D points, never below 100."""
    return int(min(TEST_SET_MAX, max(TEST_SET_MIN, TEST_SET_ELEMENTS // input_dim)))


@dataclass(frozen=True)
class LinearTerm:
    name: str
    coef: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in TERMS:
            raise ValueError(f"unknown term {self.name!r}; known: {', '.join(TERMS)}")


@dataclass(frozen=True)
class Operator:
    """``L u = sum(coef * term) + pointwise(u)``; ``pointwise`` is a human-readable formula."""

    terms: tuple[LinearTerm, ...]
    pointwise: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.terms)


class Problem:
    """Base class. Subclasses set the class attributes and implement the abstract methods.

    Constructor arguments are validated by :func:`pinnbench.make_problem` before they get here.
    """

    # -- metadata, set by subclasses --------------------------------------------------------------
    family: str = ""
    order: int = 2
    time_dependent: bool = False
    min_dim: int = 1
    #: keyword options the problem takes (e.g. ``radius``); any other is an error
    option_names: tuple[str, ...] = ()
    #: whether ``source_grad`` is available (gradient-enhanced PINN losses)
    supports_gpinn: bool = False
    #: whether the operator, the boundary conditions the ansatz enforces and the domain determine
    #: u (a zero-residual solution other than u* means a solver can reach zero loss at any error)
    well_posed: bool = True
    #: why not, when ``well_posed`` is False
    ill_posed_reason: str = ""
    #: the conditions the hard-constraint ansatz enforces, in words
    boundary_conditions: tuple[str, ...] = ()
    operator: Operator = Operator(())
    domain: str = ""
    #: c of the term grad_power_mean, (1/d) sum_i |du/dx_i|^c (None: the operator has no such term)
    gradient_exponent: float | None = None

    def __init__(self, dim: int, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu", id: str = "", **options: Any) -> None:
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            allowed = ", ".join(self.option_names) if self.option_names else "none (this problem takes none)"
            raise ValueError(f"{id or self.family}: unknown option(s) {unknown}; allowed: {allowed}")
        self.id = id or self.family
        self.dim = int(dim)
        self.seed = int(seed)
        self.dtype = dtype
        self.device = torch.device(device)
        self.options = dict(options)
        self._test_points: list[Tensor] | None = None  # host memory; see keeps_test_points
        self._test_exact: list[Tensor] | None = None  # host memory, kept after the first pass

    # -- derived --------------------------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        """D: the width of a point, dim (+1 for time)."""
        return self.dim + int(self.time_dependent)

    def __repr__(self) -> str:
        return f"<Problem {self.id} dim={self.dim} seed={self.seed} {_dtype_name(self.dtype)} {self.device}>"

    def cpu_generator(self, stream: str) -> torch.Generator:
        """A CPU generator fixed by (seed, stream): the same numbers on every device."""
        h = int.from_bytes(stream.encode(), "little") % (2**31)
        return torch.Generator(device="cpu").manual_seed((self.seed * 1_000_003 + h) % (2**63 - 1))

    # -- to implement ---------------------------------------------------------------------------
    def exact(self, x: Tensor) -> Tensor:
        """(n, D) -> (n,): the closed-form solution u*."""
        raise NotImplementedError

    def source(self, x: Tensor) -> Tensor:
        """(n, D) -> (n,): f = L u*, in closed form (never autodiff at run time)."""
        raise NotImplementedError

    def sample_interior(self, n: int, generator: torch.Generator) -> Tensor:
        """n collocation points in the domain, (n, D), drawn only from ``generator``."""
        raise NotImplementedError

    def ansatz(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(A(x), B(x)), each (n,): u = A * N + B satisfies the boundary conditions for any N."""
        raise NotImplementedError

    def ansatz_jet(self, x: Tensor, dirs: Directions, order: int) -> tuple[Jet, Jet]:
        """Jets of A and B along each direction: coefficients broadcastable to (n, V). A B that
        vanishes is ``Jet.constant(0.0, order)``: its 0.0 adds no op to u = A N + B (the jet
        arithmetic skips an exact 0.0, :func:`pinnbench.maths.jets.plus`), where a tensor of
        zeros would cost an allocation and an addition forward and backward."""
        raise NotImplementedError

    def source_grad(self, x: Tensor, index: Tensor) -> Tensor:
        """(n, D), (m,) -> (n, m): df/dx_j for the coordinates j in ``index`` (gPINN losses)."""
        raise NotImplementedError(f"{self.id} has no closed-form source gradient (supports_gpinn "
                                  "is False)")

    def pointwise(self, u: Tensor) -> Tensor | float:
        """The nonlinear part of L, applied to u (0 for a linear operator)."""
        return 0.0

    @property
    def reads_value(self) -> bool:
        """Whether :meth:`residual` reads u itself: a problem that overrides :meth:`pointwise`.
        A linear operator's residual reads only its terms, so the estimators need not form u
        (``estimate_terms(..., value=False)``: no coefficient 0 of a Taylor jet)."""
        return type(self).pointwise is not Problem.pointwise

    # -- provided -------------------------------------------------------------------------------
    def warm_up(self, n_points: int = 2) -> None:
        """Evaluate the closed forms once on ``n_points`` points (a solver's batch size), so that
        compiling them (:mod:`pinnbench.maths.fused`, at large d; one graph per shape pattern) happens
        now, in set-up, not inside a timed step or a memory peak. Draws from its own generator:
        no random stream of the cell moves."""
        x = self._sample_on_cpu(n_points, torch.Generator().manual_seed(0)).to(self.device)
        self.exact(x)
        self.source(x)

    def residual(self, terms: dict[str, Tensor], u: Tensor, x: Tensor,
                 source: Tensor | None = None) -> Tensor:
        """``sum coef * terms[name] + pointwise(u) - f(x)``, (n,). ``terms`` holds an estimate of
        every linear term of the operator; pass ``source`` when it is already computed."""
        missing = [t.name for t in self.operator.terms if t.name not in terms]
        if missing:
            raise KeyError(f"{self.id}: residual needs the terms {missing}")
        f = self.source(x) if source is None else source
        p = self.pointwise(u)
        out = None if isinstance(p, float) and p == 0.0 else p - f
        for t in self.operator.terms:
            term = terms[t.name] if t.coef == 1.0 else t.coef * terms[t.name]  # 1.0 * T = T
            # a linear operator's (0 - f) + T is T - f exactly (IEEE a + (-b) = a - b): one op
            out = term - f if out is None else out + term
        return out if out is not None else -f

    @property
    def n_test(self) -> int:
        return test_set_size(self.input_dim)

    @property
    def n_validation(self) -> int:
        """The validation set's size: the test set's rule (test_set_size)."""
        return test_set_size(self.input_dim)

    def validation_chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The validation set, as (x, u*) chunks like :meth:`test_chunks`: drawn from the
        problem's own stream ``VALIDATION_STREAM``, which the test set never uses, by a CPU
        generator (the same points on every device), the same sampler and chunking. Nothing is
        kept: a cell evaluates it once, after training (tuning selects on it)."""
        for x_host in self._point_chunks(self.cpu_generator(VALIDATION_STREAM),
                                         self.n_validation):
            x = self._to_device(x_host)
            yield x, self.exact(x)
            del x

    def predictions(self, model, split: str = "test") -> Iterator[tuple[Tensor, Tensor]]:
        """(u, u*) on the test (or validation) set, chunk by chunk: ``model`` at each chunk's
        points (:meth:`test_chunks`, :meth:`validation_chunks`); what
        :func:`pinnbench.judge.metrics.evaluate` reads. A problem whose sets are evaluated
        another way overrides it (a sharded cell's view: in column-block order,
        :mod:`pinnbench.cells.sharded_sets`)."""
        for x, u_star in self.test_chunks() if split == "test" else self.validation_chunks():
            yield model(x), u_star

    def _point_chunks(self, gen: torch.Generator, n: int) -> Iterator[Tensor]:
        """n points drawn from ``gen`` on the CPU, in chunks of at most TEST_CHUNK_ELEMENTS."""
        rows = max(1, TEST_CHUNK_ELEMENTS // self.input_dim)
        done = 0
        while done < n:
            m = min(rows, n - done)
            yield self._sample_on_cpu(m, gen)
            done += m

    def test_chunks(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The fixed test set (fixed by the seed), as (x, u*) chunks of at most
        TEST_CHUNK_ELEMENTS numbers on the problem's device, so that evaluating at D = 10^7 holds
        one chunk at a time.

        The points are always drawn by a CPU generator (the same set on every device). What is
        kept between evaluations lives in host memory, never on the GPU (a GPU cell's peaks must
        not include its test set): u* (n_test numbers) always; the points when
        :meth:`keeps_test_points` says so, else they are drawn again from the same seed each
        time. On CUDA each chunk is copied to the device for the evaluation and freed after."""
        if self._test_points is not None and self._test_exact is not None:
            for x, u_star in zip(self._test_points, self._test_exact):
                yield self._to_device(x), self._to_device(u_star)
            return
        keep_points = self.keeps_test_points()
        exact_known = self._test_exact is not None
        points: list[Tensor] = []
        exact: list[Tensor] = list(self._test_exact) if exact_known else []
        index = 0
        for x_host in self._point_chunks(self.cpu_generator(TEST_STREAM), self.n_test):
            if keep_points and self.device.type == "cuda":
                x_host = _pinned(x_host)
            x = self._to_device(x_host)
            if not exact_known:
                exact.append(self.exact(x).cpu())
            if keep_points:
                points.append(x_host)
            yield x, self._to_device(exact[index])
            del x
            index += 1
        self._test_exact = exact
        if keep_points:
            self._test_points = points

    def keeps_test_points(self) -> bool:
        """Whether the test points are kept (in host memory) after the first evaluation.

        CPU cells: when they fit TEST_SET_ELEMENTS numbers (kept points are part of the cell's
        resident memory). GPU cells: whenever they fit in half the host memory available now, so
        that D = 10^7 (10^9 numbers) is not drawn again by one CPU thread at every evaluation."""
        n_numbers = self.n_test * self.input_dim
        if self.device.type != "cuda":
            return n_numbers <= TEST_SET_ELEMENTS
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return n_numbers * itemsize <= memory.available_host_bytes() // 2

    def _to_device(self, t: Tensor) -> Tensor:
        return t if t.device == self.device else t.to(self.device, non_blocking=t.is_pinned())

    def _sample_on_cpu(self, n: int, gen: torch.Generator) -> Tensor:
        """Sample with a CPU generator whatever the problem's device (test set reproducibility)."""
        if self.device.type == "cpu":
            return self.sample_interior(n, gen)
        saved = self.device
        try:
            self.device = torch.device("cpu")
            return self.sample_interior(n, gen)
        finally:
            self.device = saved


def _pinned(t: Tensor) -> Tensor:
    """A page-locked copy of a host tensor (fast, asynchronous copies to the GPU), or the
    tensor itself where pinning is unavailable."""
    try:
        return t.pin_memory()
    except RuntimeError:
        return t


def _dtype_name(dtype: torch.dtype) -> str:
    for name, dt in DTYPES.items():
        if dt == dtype:
            return name
    return str(dtype)


def sqnorm_jet(x: Tensor, dirs: Directions, order: int) -> Jet:
    """Jet of s(x) = ||x_spatial||^2 along each direction: [s, 2 x.v, ||v||^2] (exact, degree 2).

    ``x`` must already be restricted to the spatial coordinates that ``dirs`` spans."""
    s = torch.linalg.vector_norm(x, dim=1, keepdim=True).square()  # no (n, D) temporary
    return Jet([s, 2.0 * dirs.dot(x), dirs.sqnorm().unsqueeze(0)], order)


def radius_uniform_ball(n: int, dim: int, generator: torch.Generator, *, r_min: float = 0.0,
                        r_max: float = 1.0, dtype=torch.float32, device="cpu") -> Tensor:
    """x = r g / ||g||, g ~ N(0, I), r ~ U[r_min, r_max]: radius-uniform (NOT volume-uniform),
    the sampler of the published STDE/SDGD/HTE numbers (docs/domain.md §5)."""
    g = torch.randn(n, dim, generator=generator, dtype=dtype, device=device)
    r = r_min + (r_max - r_min) * torch.rand(n, 1, generator=generator, dtype=dtype, device=device)
    return g.mul_(r / g.norm(dim=1, keepdim=True))  # in place: one (n, d) array, not two

