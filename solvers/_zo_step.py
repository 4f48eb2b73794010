"""One zeroth-order step, the algorithm of zo and sdze (docs/domain.md §3, docs/sdze.md).

Two-point SPSA training of the PINN. Step t has the seed s = SplitMix64(base, STEP_SEEDS, t),
the base seed drawn once from the solver's generator at set-up (so nothing is read back from
the device in a step); everything else is derived from s (:meth:`ZerothOrderSolver.update`,
top to bottom):

1. :meth:`~ZerothOrderSolver.begin_step`: the step's state (:class:`ZOStep`): its q
   perturbations z_1..z_q (seeds (s, 1, k) for W0's full Gaussian z0, and one block of their
   small parts, every other z_i and every Xi, from (s, 6): full Gaussian, or low rank where the
   solver gives a basis, :meth:`~ZerothOrderSolver.bases`;
   :mod:`pinnbench.solvers._zo_perturbations`) and,
   for a matrix-free evaluation or streamed data, the first-layer cache
   (:mod:`pinnbench.solvers._zo_evaluation`);
2. :meth:`~ZerothOrderSolver.quotients`: c_k = [L(theta + eps z_k) - L(theta - eps z_k)] /
   (2 eps), the two losses from the solver's :meth:`~ZerothOrderSolver.pair_losses` (zo: theta
   perturbed in place; sdze: the shifted model), each on its spatial sample
   (:meth:`~ZerothOrderSolver.sample`): with common random numbers (``crns``) one (points,
   probes) seed pair (s, 2), (s, 3) for all 2q evaluations, else (s, 4, k, +/-),
   (s, 5, k, +/-), independent for each. Kept on the device as 0-d float64 tensors (the float64
   arithmetic of Python floats, bit for bit), and the step returns its loss as one too, so
   nothing is read back (the cell runner reads the loss at its evaluation
   points, :mod:`pinnbench.cells.loss_watch`; docs/roofline.md) and the step makes no host
   sync at all (streamed data excepted: its per-step seeds are still drawn);
3. optionally the quotients normalised by a running scalar (``normalize``), then one heavy-ball
   step for every parameter (:mod:`pinnbench.solvers._zo_optimiser`);
4. :meth:`~ZerothOrderSolver.end_step`: what the step held is dropped.

With ``cuda_graph=true`` on CUDA the step (:meth:`~ZerothOrderSolver.zo_step`) is captured as
one CUDA graph once its cost is stationary and replayed: its draws come from a
:class:`pinnbench.seeds.GeneratorPool` armed before each step with the step's seeds
(:meth:`~ZerothOrderSolver.generator_seeds`, a function of t alone), its state is updated in
place and its step size is a device tensor (docs/roofline.md).

Subclasses (solvers/zo.py, solvers/sdze.py) decide how L(theta + c z) is evaluated
(:meth:`~ZerothOrderSolver.pair_losses`) and which parameters get low-rank perturbations
(:meth:`~ZerothOrderSolver.bases`); the rest is shared, so two specs that describe the same
algorithm (``zo[crns=false]`` and ``sdze[subspace=false,crns=false]`` with equal lr, q, eps,
momentum, normalize) take the same steps from the same seed, up to rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from pinnbench.seeds import derive_seed, draw_seed, GeneratorPool
from pinnbench.solver import Solver
from pinnbench.solvers._parameters import RAW_QUOTIENT_SEARCH
from pinnbench.solvers._zo_evaluation import FirstLayerCache
from pinnbench.solvers._zo_optimiser import HeavyBall, QuotientScale, descend
from pinnbench.solvers._zo_perturbations import (Perturbation, SubspaceBasis,
                                                 draw_perturbations, SMALL_PARTS)


#: the tag of the step seeds among the seeds derived from the base seed (sdze's bases use
#: (base seed, epoch))
STEP_SEEDS = 0x57E9


@dataclass
class ZOStep:
    """What one step holds from :meth:`ZerothOrderSolver.begin_step` to
    :meth:`ZerothOrderSolver.end_step`: nothing of it outlives the step."""

    seed: int
    perturbations: list[Perturbation]
    #: the first layer's products with the step's points and probes (None: plain evaluation)
    cache: FirstLayerCache | None
    #: the bases whose V is kept for the step (regenerated once for its products and update)
    kept_v: list[SubspaceBasis] = field(default_factory=list)
    #: the current spatial sample and its (points, probes) seeds: one at a time (x is n x D)
    sample_seeds: tuple[int, int] | None = None
    sample: object = None


class ZerothOrderSolver(Solver):
    """Two-point SPSA training of the PINN: the one algorithm of zo and sdze (module docstring)."""

    #: one-factor-at-a-time variants: (parameter, values); see
    #: :meth:`pinnbench.solver.Solver.ablation_variants`
    ablations: tuple[tuple[str, tuple], ...] = (("crns", (True, False)), ("momentum", (0.0, 0.9)),
                                                ("normalize", (False,)))

    autograd = False

    #: normalize=false searches lr on the raw quotients' scale (:data:`RAW_QUOTIENT_SEARCH`)
    variant_search = RAW_QUOTIENT_SEARCH

    #: whether :meth:`pair_losses` evaluates matrix-free through the step's
    #: :class:`FirstLayerCache` (sdze's shifted model) even without streamed data; with
    #: ``stream`` every zeroth-order solver does, since streamed data is read only through the
    #: cache's reductions
    matrix_free = False

    # -- what the harness asks ------------------------------------------------------------------
    def diagnostics(self, problem, model, spec):
        """The gradient-estimate and quotient variances
        (:mod:`pinnbench.solvers._zo_diagnostics`)."""
        from pinnbench.solvers._zo_diagnostics import zeroth_order_diagnostics

        return zeroth_order_diagnostics(self, problem, model, spec)

    #: (parameter, value) pairs a captured step (``cuda_graph``) needs of this solver beyond
    #: :meth:`graph_unsupported`'s
    graph_requires: tuple[tuple[str, object], ...] = ()

    def validate(self) -> None:
        why = self._stream_unsupported() if self.stream else []
        if why:
            raise ValueError(f"{self.name}[stream=true] does not support " + ", ".join(why)
                             + "; see docs/streaming.md")
        why = self.graph_unsupported() if self.cuda_graph else []
        if why:
            raise ValueError(f"{self.name}[cuda_graph=true] does not support " + ", ".join(why)
                             + " (one graph replays every step, with no host read; "
                             "docs/roofline.md)")

    def graph_unsupported(self) -> list[str]:
        """What of this configuration a captured step cannot do: streamed data (its blocks'
        seeds and passes are not scheduled), the gPINN loss and sampled coordinates (their
        draws read the coordinates back on the host), and :attr:`graph_requires`."""
        def spec(k, v) -> str:  # as a spec writes it
            return f"{k}={str(v).lower() if isinstance(v, bool) else v}"

        why = [spec(k, v) for k, v, bad in (("stream", self.stream, True),
                                            ("loss", self.loss, "gpinn"),
                                            ("dist", self.dist, "coordinate")) if v == bad]
        return why + [f"{spec(k, self.params[k])} (needs {spec(k, v)})"
                      for k, v in self.graph_requires if self.params[k] != v]

    def _stream_unsupported(self) -> list[str]:
        """What of this configuration the streamed path cannot do (each with what it can)."""
        why = []
        if self.estimator != "stde":
            why.append(f"estimator={self.estimator} (streamed: stde)")
        if self.dist == "coordinate":
            why.append("dist=coordinate (streamed: default, rademacher or gaussian)")
        if self.loss == "gpinn":
            why.append("loss=gpinn (streamed: biased or unbiased)")
        return why

    def skip(self, problem) -> tuple[bool, str]:
        if self.stream and not getattr(problem, "supports_streaming", False):
            return True, (f"stream=true streams the points of the ball problems only; "
                          f"{problem.id} has no streamed sampler and source "
                          "(docs/streaming.md)")
        return super().skip(problem)

    def shard_unsupported(self) -> str:
        """A zeroth-order solver runs as one rank of a sharded cell (docs/sharding.md): its
        evaluations go through the model's first layer (zo: in place; sdze: the shifted layer,
        whose cached products are summed over the ranks), the d-sized parts of its perturbations
        are drawn per column block (:mod:`pinnbench.solvers._zo_perturbations`), and everything
        else is replicated. The sharded step draws stde probes, dense entries per column block
        or sampled coordinates each owned by one rank (their V rows and z0 columns read on the
        owner and summed over the ranks with the products the step sums anyway); streamed data
        (stream=true) is a one-process path of its own."""
        from pinnbench.maths.streaming import STREAM_DISTS

        dists = ("default",) + STREAM_DISTS + ("coordinate",)
        if self.estimator != "stde" or self.dist not in dists:
            return (f"{self.spec} is not sharded: a sharded step draws stde probes "
                    f"(estimator=stde, dist={'|'.join(dists)}); estimator={self.estimator}, "
                    f"dist={self.dist}")
        if self.loss == "gpinn":
            return (f"{self.spec} is not sharded: the gPINN term takes central differences of "
                    "the residual in x along sampled e_j (and d_j f in closed form), not "
                    "written as shard sums")
        if self.stream:
            return (f"{self.spec} is not sharded: a sharded cell draws its own column blocks "
                    "per rank (drop stream=true; its memory is already 1/R of the d-sized state)")
        if self.cuda_graph:
            return (f"{self.spec} is not sharded: a captured CUDA graph would replay the "
                    "collectives outside the process group; drop cuda_graph=true")
        return ""

    def state_bytes(self, n_params: int, input_dim: int, bytes_per_number: int) -> int:
        """No gradient. Dense momentum (``momentum > 0`` with full Gaussian perturbations): one
        number per parameter. Low-rank perturbations (sdze's ``subspace``): the first layer's
        basis V (input_dim x rank) kept for the step unless streamed; low-rank momentum and the
        other bases are O(width x rank) and not counted."""
        subspace = self.params.get("subspace", False)
        dense = n_params if self.momentum > 0 and not subspace else 0
        kept_v = input_dim * self.params.get("rank", 0) if subspace and not self.stream else 0
        return (dense + kept_v) * bytes_per_number

    # -- state across steps ---------------------------------------------------------------------
    def prepare(self) -> None:
        if self.stream:  # compile the streamed source now, not in the first step
            self.problem.warm_up_stream(self.points)
        self.base_seed = draw_seed(self.generator)
        # the ranks of a sharded cell must draw the same bases and step seeds (no-op unsharded)
        self.model.first_layer.check_same("the zeroth-order solver's seed", self.base_seed)
        self._quotient_scale = QuotientScale() if self.normalize else None
        self._momentum = HeavyBall(self.momentum) if self.momentum > 0 else None
        self.graphed = None
        if self.cuda_graph and self.problem.device.type == "cuda":
            self._prepare_graph()

    # -- a step captured as a CUDA graph (``cuda_graph``) ----------------------------------------
    def _prepare_graph(self) -> None:
        """The captured step: its generators a :class:`GeneratorPool` armed before each step
        with :meth:`generator_seeds`, the step size a float64 device tensor refilled before
        each step, the momentum's stacks shifted in place once full; the step is captured after
        :attr:`graph_warmup_steps` eager ones (from then on every step is the same ops on the
        same storage, so one graph is every later step)."""
        from pinnbench.cuda_graph import GraphedStep

        self._pool = GeneratorPool(self.problem.device)
        self._lr = torch.tensor(self.lr, dtype=torch.float64, device=self.problem.device)
        self.time_data = False  # draw() must not synchronise inside the graph
        if self._momentum is not None:
            self._momentum.in_place = True
        self.graphed = GraphedStep(self._graph_body, lambda: None, self._pool.freeze,
                                   warmup=self.graph_warmup_steps)

    @property
    def graph_warmup_steps(self) -> int:
        """:attr:`steady_state_steps` + 1: the momentum's stacks are full and shifted in place
        from then on (46 for sdze at its defaults, 2 for zo)."""
        return self.steady_state_steps + 1

    def update(self) -> Tensor:
        """One step (:meth:`zo_step`); with ``cuda_graph`` on CUDA the pool armed with the
        step's seeds and the step size written first, then the step run (eagerly until
        captured, then replayed)."""
        if self.graphed is None:
            return self.zo_step(self.lr_now)
        self._lr.fill_(self.lr_now)
        self._pool.arm(self.generator_seeds())
        return self.graphed()

    def _graph_body(self, first: bool = True) -> Tensor:
        with self._pool.active():
            loss = self.zo_step(self._lr)
            self._pool.check_drawn()
        return loss

    def generator_seeds(self) -> list[int]:
        """The seeds step ``self.t`` draws from, one per draw (a seed regenerated k times is
        listed k times), in a fixed order of roles: the schedule of a captured step
        (:class:`pinnbench.seeds.GeneratorPool`). It must be a function of t alone: after the
        capture no Python of the step runs, so nothing it would update on the host can be
        read. The shared part: the small parts' block, then the spatial samples' (points,
        probes) seeds, one pair with common random numbers, else one per evaluation; each
        solver adds its own (:meth:`own_seeds`)."""
        bad = self.graph_unsupported()
        if bad:
            raise ValueError("no schedule of a captured step for " + ", ".join(bad))
        s = self.step_seed()
        samples = ([(0, True)] if self.crns
                   else [(k, plus) for k in range(self.q) for plus in (True, False)])
        return ([derive_seed(s, SMALL_PARTS)]
                + [x for k, plus in samples for x in self.evaluation_seeds(s, k, plus)]
                + self.own_seeds(s))

    def own_seeds(self, step_seed: int) -> list[int]:
        """This solver's part of :meth:`generator_seeds` (its perturbations' regenerations)."""
        raise NotImplementedError

    # -- what subclasses choose -----------------------------------------------------------------
    def bases(self) -> list:
        """The low-rank basis of each parameter for the current step (None: full Gaussian)."""
        return [None] * len(self.model.params)

    def pair_losses(self, step: ZOStep) -> Tensor:
        """(q, 2): row k is (L(theta + eps z_k), L(theta - eps z_k)) for the step's k-th
        perturbation z_k, the residual losses (:meth:`pinnbench.solver.Solver.residual_loss`,
        not read back), each on its spatial sample :meth:`sample` ``(step, k, plus)``."""
        raise NotImplementedError

    # -- the step -------------------------------------------------------------------------------
    def step_seed(self) -> int:
        """The seed of the step about to run (step ``self.t``): derived on the host from the
        solver's base seed and the step's index, so a step reads nothing back from the device
        (a seed drawn from the solver's generator each step was one host sync a step: on CUDA a
        stall of the launch queue, and what kept the step from being captured as a graph)."""
        return derive_seed(self.base_seed, STEP_SEEDS, self.t)

    @torch.no_grad()
    def zo_step(self, lr: float | Tensor) -> Tensor:
        """Step ``self.t`` with step size ``lr`` (a number, or a 0-d device tensor:
        :func:`~pinnbench.solvers._zo_optimiser.descend`); returns the mean of its 2q losses."""
        step = self.begin_step(self.step_seed())
        try:
            quotients, loss = self.quotients(step)
            if self._quotient_scale is not None:
                quotients = self._quotient_scale(quotients)
            descend(self.model.params, step.perturbations, quotients, lr, self._momentum)
        finally:
            self.end_step(step)
        return loss  # a 0-d float64 tensor, not read back here

    def begin_step(self, seed: int) -> ZOStep:
        """The state of the step with seed ``seed``: its perturbations; every basis's V kept for
        the step (but W0's when streamed: it is regenerated alongside the blocks, and again for
        the update); the first-layer cache, keyed on W0's version, so zo's in-place perturbations
        recompute its products (for streamed data one pass over the blocks per evaluation, 2q a
        step) and sdze's shared ones are reused."""
        bases = self.bases()
        kept_v = [b for i, b in enumerate(bases)
                  if b is not None and not (self.stream and i == 0)]
        for b in kept_v:
            b.keep_v()
        layer = self.model.first_layer
        cache = (FirstLayerCache(self.model.params[0], bases[0], layer=layer)
                 if self.matrix_free or self.stream else None)
        return ZOStep(seed, draw_perturbations(self.model.params, seed, self.q, bases,
                                               layer.plan), cache, kept_v)

    def end_step(self, step: ZOStep) -> None:
        """After the step's update (also when it failed): drop what the step held."""
        step.sample = None
        if step.cache is not None:
            self.data_time_s += step.cache.stream_data_time_s  # streamed blocks and source
            step.cache.clear()
        for b in step.kept_v:
            b.drop_v()

    def perturbations(self, seed: int) -> list[Perturbation]:
        """The q perturbations of the step with seed ``seed`` (those :meth:`begin_step` draws),
        for a caller outside the step (diagnostics, tests)."""
        return draw_perturbations(self.model.params, seed, self.q, self.bases(),
                                  self.model.first_layer.plan)

    def evaluation_seeds(self, seed: int, k: int, plus: bool) -> tuple[int, int]:
        """(points seed, probes seed) of the evaluation at theta +- eps z_k of the step with
        seed ``seed``."""
        if self.crns:
            return derive_seed(seed, 2), derive_seed(seed, 3)
        return derive_seed(seed, 4, k, plus), derive_seed(seed, 5, k, plus)

    def sample(self, step: ZOStep, k: int, plus: bool):
        """The spatial sample (:class:`pinnbench.maths.step_data.StepData`) of the evaluation at
        theta +- eps z_k, drawn on first use; with common random numbers the same object for
        every evaluation of the step."""
        seeds = self.evaluation_seeds(step.seed, k, plus)
        if step.sample_seeds != seeds:
            step.sample = None  # one sample at a time
            step.sample_seeds = None
            step.sample = self.draw(*seeds)  # seeds, not generators: nothing read back
            step.sample_seeds = seeds
        return step.sample

    @torch.no_grad()
    def quotients(self, step: ZOStep) -> tuple[Tensor, Tensor]:
        """(the q quotients c_k, (q,), the mean of the 2q losses, 0-d), float64 tensors on the
        device: each loss converted exactly (the value ``float()`` would read), without reading
        it. (The float64 sum of the 2q float32 losses is exact unless they span more than 2^29,
        so the mean is that of the q pair means as well.)"""
        losses = self.pair_losses(step).detach().to(torch.float64)
        step.sample = None
        quotients = (losses[:, 0] - losses[:, 1]) / (2.0 * self.eps)
        return quotients, losses.mean()

    def difference_quotients(self, generator: torch.Generator) -> list[float]:
        """The q difference quotients [L(theta + eps z_k) - L(theta - eps z_k)] / (2 eps) of one
        step, drawn from ``generator`` (not the solver's), without updating anything: the
        parameters, the step count and the solver's generator are left as they were."""
        step = self.begin_step(draw_seed(generator))
        try:
            return [float(c) for c in self.quotients(step)[0]]
        finally:
            self.end_step(step)
