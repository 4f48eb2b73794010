"""sdze: Stochastic Dimension-free Zeroth-order Estimator (docs/domain.md §4), from its parts.

The paper publishes no code; this is an implementation from its description, every choice a
parameter so that the benchmark can ablate it.

One step t (all under ``torch.no_grad()``, no autograd graph, no gradient buffer):

1. **Spatial sample, common random numbers (CRNS).** A per-step seed fixes the collocation
   points x and the estimator's probes. With ``crns=true`` all 2q evaluations of the step use
   them (the estimator gets a generator reset to the same seed), so the O(1) spatial noise of
   L(theta; omega) cancels in the difference quotient, which becomes z^T grad L_hat(theta; omega)
   + O(eps^2) (docs/domain.md §3). ``crns=false`` draws fresh points and probes for every
   evaluation (the ablation: the quotient then carries Var_omega[L] / (2 eps^2) of extra
   variance).
2. **Directions.** ``q`` directions z_1..z_q. With ``subspace=true`` each weight matrix thicker
   than ``rank`` gets ``z = U Xi V^T / r``: U, V standard Gaussian, regenerated from a seed that
   changes every ``refresh`` steps, never stored (V is regenerated in row chunks); Xi (r x r)
   fresh per perturbation. Biases and the 1 x width output layer get plain Gaussian perturbations.
   The 1/r scaling gives every entry of z unit variance, as a full Gaussian's
   (:mod:`pinnbench.solvers._zo_perturbations`), so eps and lr mean the same with and without
   the subspace.
   ``subspace=false`` gives full Gaussian perturbations everywhere (the ablation).
3. **Matrix-free evaluation.** L(theta +- eps z_k) is evaluated without writing theta
   (:func:`pinnbench.solvers._zo_evaluation.shifted_model`: the PINN with the shifted
   first-layer hook): the first layer as W0 y + c U(Xi(V^T y)) / r
   with W0 y and V^T y computed once per step for the shared points and probes, the other
   (width x width) tensors materialised out of place. We chose this over MeZO's in-place
   W += c U Xi V^T (in column chunks) because it is exact (theta is bit-identical after the
   evaluations; in-place +eps, -2eps, +eps drifts by rounding in fp32) and cheaper: with CRNS the
   O(width D (n + V)) first-layer product is paid once per step instead of 2q times.
4. **Update.** c_k = [L(theta + eps z_k) - L(theta - eps z_k)] / (2 eps),
   g_hat = (1/q) sum_k c_k z_k, and one heavy-ball step m <- beta m + g_hat,
   theta <- theta - lr_t m for **every** parameter
   (:class:`pinnbench.solvers._zo_optimiser.HeavyBall`; ``momentum=0``: no momentum state
   anywhere).
   For a low-rank matrix g_hat_W = U G V^T with G = sum_k c_k Xi_k / (q r) (r x r), and its
   momentum is kept in that ambient low-rank form, sum_e U_e A_e V_e^T over the bases e still
   alive: it survives a refresh (old terms decay by beta and are dropped below beta^age = 0.01),
   and the update is applied in column chunks. Biases and the output layer keep a dense
   momentum (width numbers each). Optimizer state: O(horizon x (m r + r^2)) per matrix plus
   O(width); never a buffer of parameter size, except with ``subspace=false`` and momentum > 0,
   where the momentum of the full-Gaussian first layer is dense (P numbers): the same rule, in
   the storage that distribution needs; that memory is what the subspace saves.

5. **Scale.** ``normalize=true`` divides the quotients by the root of a running mean of their
   squares (one scalar of state, :class:`pinnbench.solvers._zo_optimiser.QuotientScale`): the
   PINN loss
   spans ~4 orders of magnitude during training (~1e7 at initialisation on poisson-2body-v1,
   d = 100), so no constant ZO-SGD step size works from start to end.

Spatial estimator: ``stde`` (forward Taylor jets, default) or ``fd`` (finite differences).

Defaults: the committed defaults study (reports/study-defaults; docs/tuning.md), which tuned
every solver by one protocol (16 Sobol trials, 500 steps, seeds 0 and 1, validation error,
poisson-2body-v1 and poisson-2body-scaled-v1 at d = 100 and 1000, the geometric mean of
error / study best): lr 1.38e-3 decayed linearly over the cell's budget (``decay_steps=budget``),
q 8, momentum 0.9, eps 5.06e-4, rank 7; refresh 1, normalize true and crns true are the method
(not searched). q = 8 doubles a step's evaluations against the earlier q = 4: the budget is in
steps (docs/tuning.md, "What to keep in mind"). The earlier defaults (lr 1e-2, q 4, momentum 0,
eps 1e-3, rank 8: one grid at equal CPU time on one problem, docs/sdze-tuning.md, "Issue 11")
stay reproducible as ``sdze[lr=1e-2,q=4,momentum=0,eps=1e-3,rank=8,decay_steps=0]``. At
d = 1000 on the scaled problem the chosen configurations of sdze, zo and MeZO end the study's
500 steps at median validation errors 0.91, 1.09 and 0.89 (bp: 0.39): read
docs/sdze-tuning.md before reading any result.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pinnbench.maths.estimators import batch_unsupported
from pinnbench.seeds import derive_seed
from pinnbench.solver import Param, positive, register_solver
from pinnbench.solvers._parameters import zeroth_order_parameters
from pinnbench.solvers._zo_evaluation import shifted_batch, shifted_model
from pinnbench.solvers._zo_optimiser import live_terms, momentum_horizon, older_ages
from pinnbench.solvers._zo_perturbations import (basis_seed, CHUNK_ELEMENTS, has_basis,
                                                 make_bases, u_seed, v_seed)
from pinnbench.solvers._zo_step import ZerothOrderSolver, ZOStep
from pinnbench.search_space import BUDGET, IntLogUniform


@register_solver
class SDZE(ZerothOrderSolver):
    name = "sdze"
    matrix_free = True  # L(theta +- eps z) from the shifted model, theta never written
    parameters = {
        # defaults: the committed defaults study (reports/study-defaults, docs/tuning.md), the
        # same protocol, trials and rule as every other solver's
        **zeroth_order_parameters(lr=1.38e-3, q=8, momentum=0.9, crns=True, eps=5.06e-4,
                                  decay_steps=BUDGET),
        # rank searched over the ablation's ranks 1..32 (the study chose 7; refresh is not
        # searched: T0 > 1 never helped, docs/sdze-tuning.md)
        "rank": Param(7, "rank r of the subspace perturbations", **positive("an integer > 0"),
                      search=IntLogUniform(1, 32)),
        "refresh": Param(1, "steps T0 between refreshes of the subspace bases U, V (momentum "
                         "is kept across refreshes)", **positive("an integer > 0")),
        "subspace": Param(True, "low-rank (true) or full Gaussian (false) perturbations of the "
                          "weight matrices; nothing else changes"),
        # ours: Gaussian U, V (LOZO's) by default; orthonormal is SubZero's basis, the ablation
        "basis": Param("gaussian", "the subspace bases U, V: Gaussian, or orthonormal columns "
                       "scaled to the same norms (SubZero); the same span for the same seed",
                       choices=("gaussian", "orthonormal")),
    }

    #: one-factor-at-a-time variants for ``pinnbench ablate sdze`` (issue 11): each changes one
    #: parameter of the base spec (docs/sdze.md says what each switch changes)
    #: what a captured step needs of sdze beyond every zeroth-order solver's
    #: (:meth:`ZerothOrderSolver.graph_unsupported`): the schedule of its draws is written for
    #: a new basis every step, one shared sample, the Gaussian basis and the points held
    graph_requires = (("refresh", 1), ("crns", True), ("subspace", True), ("basis", "gaussian"))

    ablations = (("crns", (False,)), ("subspace", (False,)), ("momentum", (0.0, 0.9)),
                 ("normalize", (False,)), ("rank", (1, 4, 8, 16, 32)), ("refresh", (1, 10, 100, 1000)),
                 ("basis", ("orthonormal",)))

    @property
    def steady_state_steps(self) -> int:
        """With momentum on low-rank perturbations, one momentum term per basis lives for
        :func:`momentum_horizon` steps (44 at beta 0.9), each regenerating its V at every
        update, so a step costs more each step until the horizon is full: at d = 1e5, 548 ops
        and 22 matrix products after one step, 1055 and 148 after 60 (``bench ops``). Stationary
        after the horizon plus one refresh period (periodic with period ``refresh`` beyond)."""
        if self.momentum <= 0 or not self.subspace:
            return 1
        return momentum_horizon(self.momentum) + self.refresh

    def state_bytes(self, n_params: int, input_dim: int, bytes_per_number: int) -> int:
        """The zeroth-order state (the held V of W0 unless streamed, a dense momentum without
        the subspace), and with low-rank momentum the update's block: each row chunk of W0's
        terms is drawn into one (E r, rows) block, E the live terms (:func:`live_terms`, 44 at
        the defaults) and rows = min(d, 2^22 / r) (:data:`CHUNK_ELEMENTS`), 738 MB in float32 at
        the defaults once d >= 599,187: transient, but the step's largest tensor at large d
        (tests/test_sdze.py measures it)."""
        block = 0
        if self.subspace and self.momentum > 0:
            terms = live_terms(self.momentum, self.refresh)
            rows = min(input_dim, max(1, CHUNK_ELEMENTS // self.rank))
            block = terms * self.rank * rows if terms > 1 else 0
        return super().state_bytes(n_params, input_dim, bytes_per_number) + (
            block * bytes_per_number)

    def _stream_unsupported(self) -> list[str]:
        why = super()._stream_unsupported()
        if not self.subspace:
            why.append("subspace=false (a full Gaussian first layer needs the points; "
                       "streamed: subspace=true)")
        return why

    def prepare(self) -> None:
        super().prepare()
        if self.stream and (self.model.params[0].ndim != 2
                            or min(self.model.params[0].shape) <= self.rank):
            raise ValueError(f"sdze[stream=true] needs a low-rank first layer: rank "
                             f"{self.rank} must be below the width and d "
                             f"(W0 is {tuple(self.model.params[0].shape)})")
        if self.basis == "orthonormal" and not self.subspace:
            raise ValueError("sdze[basis=orthonormal] needs subspace=true (a full Gaussian "
                             "perturbation has no basis)")
        self._epoch: int | None = None
        self._bases: list = [None] * len(self.model.params)
        #: the 2q evaluations of a step as one batch (they share the sample, and the estimate
        #: takes a batch of parameter sets), :meth:`pair_losses`
        self._batched = (self.crns and self.loss != "gpinn"
                         and not batch_unsupported(self.problem, self.estimator))
    def own_seeds(self, step_seed: int) -> list[int]:
        """sdze's part of a captured step's schedule (:meth:`generator_seeds`): U of each
        matrix's new basis, V of each (kept for the step), then W0's V of each older momentum
        term still alive, the oldest first (:func:`older_ages`). At refresh=1
        (:attr:`graph_requires`) every step has a new basis: the epoch is t."""
        matrices = [i for i, p in enumerate(self.model.params)
                    if has_basis(tuple(p.shape), self.rank)]
        seeds = [u_seed(basis_seed(self._bases_seed(self.t), i)) for i in matrices]
        seeds += [v_seed(basis_seed(self._bases_seed(self.t), i)) for i in matrices]
        if self._momentum is not None and 0 in matrices:
            seeds += [v_seed(basis_seed(self._bases_seed(self.t - a), 0))
                      for a in reversed(older_ages(self.momentum, self.t))]
        return seeds

    def bases(self) -> list:
        """The bases of the current refresh period t // refresh (regenerated from its seed)."""
        epoch = self.t // self.refresh
        if self.subspace and epoch != self._epoch:
            self._bases = make_bases(self.model.params, self.rank, self._bases_seed(epoch),
                                     self.model.first_layer.plan,
                                     orthonormal=self.basis == "orthonormal")
            self._epoch = epoch
        return self._bases

    def _bases_seed(self, epoch: int) -> int:
        """The seed the bases of refresh period ``epoch`` are drawn from."""
        return derive_seed(self.base_seed, epoch)

    def step_cost(self, dim: int, width: int, depth: int):
        """Per draw of the data (one with CRNS, 2q without) the shared products W0 y and V^T y,
        F1 + 2(n + V) d r; per evaluation the low-rank correction 2(n + V) r (r + h) and the
        hidden layers H; the update 2 d h r. Bytes: D per draw and W0 read twice and written
        once (3W). The orthonormal basis adds 2 d r^2 per regeneration of V: its Gram matrix once
        per refresh, the whitening once a step (twice when streamed: V is regenerated for the
        blocks and again for the update). Models the subspace only
        (full Gaussian perturbations are zo's model)."""
        from pinnbench.bench import roofline as rf

        if not self.subspace:
            raise ValueError(f"roofline models sdze[subspace=true]; got {self.spec}")
        n, v, q, r, d, h = self.points, self.probes, self.q, self.rank, dim, width
        draws = 1 if self.crns else 2 * q
        shared = draws * (rf.first_layer_flops(n, v, d, h) + 2.0 * (n + v) * d * r)
        per_eval = 2.0 * (n + v) * r * (r + h) + rf.hidden_flops(n, v, h, depth)
        whiten = 0.0
        if self.basis == "orthonormal":
            whiten = 2.0 * d * r * r * ((2 if self.stream else 1) + 1.0 / self.refresh)
        return rf.StepCost(flops=shared + 2 * q * per_eval + 2.0 * d * h * r + whiten,
                           bytes=draws * rf.data_bytes(n, v, d) + 3 * rf.weight_bytes(d, h))

    def pair_losses(self, step: ZOStep) -> Tensor:
        """The 2q losses from the shifted model (theta + c z with c = +-eps), theta untouched:
        with common random numbers in one batched pass (every evaluation shares the step's
        sample, so the 2q shifted networks run as one batch of parameter sets,
        :func:`pinnbench.solvers._zo_evaluation.shifted_batch`), else one evaluation at a time,
        each on its own sample, through :func:`~pinnbench.solvers._zo_evaluation.shifted_model`
        (also where the estimate cannot take a batch,
        :func:`pinnbench.maths.estimators.batch_unsupported`, and for a gPINN loss)."""
        cs = (self.eps, -self.eps)
        if self._batched:
            data = self.sample(step, 0, True)
            if not self.stream:  # a no-op when x is already pinned (common random numbers)
                step.cache.pin(data.x)
            model = shifted_batch(self.model, step.perturbations, cs, step.cache)
            return self.residual_loss(data, model).view(2, -1).T  # batch: + then - for all k
        out = []
        for k, z in enumerate(step.perturbations):
            for c, plus in zip(cs, (True, False)):
                data = self.sample(step, k, plus)
                if not self.stream:
                    step.cache.pin(data.x)
                out.append(self.residual_loss(data, shifted_model(self.model, z, c, step.cache)))
        return torch.stack(out).view(-1, 2)

    def shard_unsupported(self) -> str:
        """The zeroth-order rules, and the orthonormal basis is not sharded (its Gram matrix
        needs every shard's rows of V: an r x r all-reduce not written yet)."""
        why = super().shard_unsupported()
        if not why and self.basis == "orthonormal" and self.subspace:
            why = (f"{self.spec} is not sharded: the orthonormal basis needs V^T V over every "
                   "shard's rows (basis=gaussian is sharded)")
        return why

    @classmethod
    def ablation_page(cls):
        """The report's page: sdze's variants beside zo's (solvers/_zo_report.py)."""
        from pinnbench.solvers._zo_report import sdze_page

        return sdze_page(cls.name)

    @classmethod
    def claims(cls) -> tuple:
        """SDZE's claims (docs/domain.md §4), judged by the report (solvers/_zo_report.py)."""
        from pinnbench.solvers._zo_report import sdze_claims

        return sdze_claims()
