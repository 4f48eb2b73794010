"""Test-only plugins: a tiny problem and solvers that behave in known ways (ok, allocate, sleep,
diverge, crash, run out of memory, get SIGKILLed). Cells load them in their spawned process
through the cell spec's ``imports`` (``pinnbench run --import tests/fake_solvers.py``).

Registration is idempotent, so importing this file under two module names is harmless.
"""

from __future__ import annotations

import os
import signal
import time

import torch

from pinnbench.maths.problem import LinearTerm, Operator, Problem, radius_uniform_ball, sqnorm_jet
from pinnbench.maths.problem_registry import PROBLEMS, register_problem
from pinnbench.solver import SOLVERS, Param, Solver, register_solver


class AffineBall(Problem):
    """Poisson on the unit ball with u* = (1 - |x|^2)(2 + w . x), w_i = 1/sqrt(d) (affine N*).

    Delta u* = -2d (2 + w.x) - 4 x.w (A = 1-|x|^2: Delta A = -2d, grad A = -2x; Delta(w.x) = 0).
    The affine floor of this problem is 0 (N* is affine) and the constant floor is not.
    """

    family = "fake-affine"
    order = 2
    min_dim = 2
    operator = Operator((LinearTerm("laplacian"),))
    domain = "unit ball"

    def _w(self, x):
        return torch.full((x.shape[1],), self.dim ** -0.5, dtype=x.dtype, device=x.device)

    def exact(self, x):
        a, _ = self.ansatz(x)
        return a * (2.0 + x @ self._w(x))

    def source(self, x):
        g = 2.0 + x @ self._w(x)
        return -2.0 * self.dim * g - 4.0 * (x @ self._w(x))

    def sample_interior(self, n, generator):
        return radius_uniform_ball(n, self.dim, generator, dtype=self.dtype, device=self.device)

    def ansatz(self, x):
        a = 1.0 - (x * x).sum(dim=1)
        return a, torch.zeros_like(a)

    def ansatz_jet(self, x, dirs, order):
        s = sqnorm_jet(x, dirs, order)
        return 1.0 - s, 0.0


class _Fake(Solver):
    def setup(self, problem, model, generator):
        self.problem, self.model, self.generator = problem, model, generator
        self.count = 0


def _register(cls):
    if cls.name not in SOLVERS._entries:
        register_solver(cls)
    return cls


@_register
class FakeOk(_Fake):
    """Gradient descent on the mean squared error to u* (deterministic, cheap at tiny d)."""

    name = "fake-ok"
    parameters = {"lr": Param(0.05, "step size", check=lambda v: v > 0, check_text="a number > 0")}
    variant_defaults = {"probes=3": {"lr": 0.02}}  # what `pinnbench list solvers` shows

    def setup(self, problem, model, generator):
        super().setup(problem, model, generator)
        self.x = problem.sample_interior(self.params["points"], generator)
        self.target = problem.exact(self.x)
        for p in model.params:
            p.requires_grad_(True)

    def step(self):
        loss = (self.model(self.x) - self.target).pow(2).mean()
        grads = torch.autograd.grad(loss, self.model.params)
        with torch.no_grad():
            for p, g in zip(self.model.params, grads):
                p.sub_(self.params["lr"] * g)
        return float(loss.detach())


@_register
class FakeAlloc(_Fake):
    """Allocates ``bytes`` of resident memory on its first step and holds it (state), or with
    ``hold=false`` allocates them in every step and frees them before the step returns (a
    step's temporary)."""

    name = "fake-alloc"
    parameters = {"bytes": Param(100_000_000, "bytes to allocate",
                                 check=lambda v: v > 0, check_text="an integer > 0"),
                  "hold": Param(True, "keep the first step's tensor (true) or free each step's")}

    def step(self):
        n = self.params["bytes"] // 8
        if not self.params["hold"]:
            torch.ones(n, dtype=torch.float64)  # the step's temporary, freed at once
        elif self.count == 0:
            self.held = torch.ones(n, dtype=torch.float64)
        self.count += 1
        return 1.0


@_register
class FakeSleep(_Fake):
    name = "fake-sleep"
    parameters = {"seconds": Param(0.05, "sleep per step", check=lambda v: v >= 0,
                                   check_text="a number >= 0")}

    def step(self):
        time.sleep(self.params["seconds"])
        return 1.0


@_register
class FakeNan(_Fake):
    """A finite loss twice, then NaN."""

    name = "fake-nan"

    def step(self):
        self.count += 1
        return 1.0 if self.count < 3 else float("nan")


class ReadCountingLoss(torch.Tensor):
    """A 0-d loss tensor that records each value read from it into Python (``float``,
    ``.item()``) in ``reads`` (a class attribute, shared by the tensors derived from it)."""

    reads: list[float] = []

    def __float__(self) -> float:
        value = super().__float__()
        ReadCountingLoss.reads.append(value)
        return value

    def item(self):
        value = super().item()
        ReadCountingLoss.reads.append(value)
        return value


@_register
class FakeTensorLoss(_Fake):
    """Returns its loss as a 0-d tensor (as bp does) whose value is the step's number (1, 2,
    ...), so that a read names its step (:class:`ReadCountingLoss`), or NaN at step ``nan_at``
    (0: never)."""

    name = "fake-tensor-loss"
    parameters = {"nan_at": Param(0, "the step whose loss is NaN (0: none)",
                                  check=lambda v: v >= 0, check_text="an integer >= 0")}

    def step(self):
        self.count += 1
        value = float("nan") if self.count == self.params["nan_at"] else float(self.count)
        return torch.Tensor._make_subclass(ReadCountingLoss, torch.tensor(value))


@_register
class FakeCrash(_Fake):
    name = "fake-crash"

    def step(self):
        raise RuntimeError("fake-crash: boom")


@_register
class FakeOom(_Fake):
    """Asks the CPU allocator for 1 TiB (fails under any RLIMIT_AS cap, and nearly everywhere)."""

    name = "fake-oom"

    def step(self):
        self.held = torch.empty(2**40, dtype=torch.uint8)
        return 1.0


@_register
class FakeKilled(_Fake):
    """The process is SIGKILLed during a step (what the Linux OOM killer does)."""

    name = "fake-killed"
    parameters = {"signal": Param(int(signal.SIGKILL), "signal number the process sends itself",
                                  check=lambda v: v > 0, check_text="an integer > 0")}

    def step(self):
        print(f"fake-killed: last words before signal {self.params['signal']}", flush=True)
        os.kill(os.getpid(), int(self.params["signal"]))
        return 1.0


@_register
class FakeSkip(_Fake):
    name = "fake-skip"

    def skip(self, problem):
        return (problem.dim > 3, f"fake-skip runs only at d <= 3, not d = {problem.dim}")

    def step(self):
        return 1.0


if "fake-affine-v1" not in PROBLEMS._entries:
    register_problem("fake-affine-v1", AffineBall)
