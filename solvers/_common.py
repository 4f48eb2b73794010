"""Pieces shared by the solvers: parameters, the zeroth-order algorithm and its diagnostics.

The residual loss, the step-size schedule and the step's spatial sample are the base's
(:class:`pinnbench.solver.Solver`); what is here is what several solvers share beyond it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pinnbench.solver import Param, Solver, non_negative, positive
from pinnbench.seeds import derive_seed, draw_seed, generator
from pinnbench.solvers._perturbation import FirstLayerCache, Perturbation, add_lowrank_sum_
from pinnbench.tuning_space import BUDGET, Choice, IntLogUniform, LogUniform

ESTIMATORS_BP = ("exact", "sdgd", "hte", "stde")
ESTIMATORS_FORWARD = ("stde", "fd")
DISTS = ("default", "rademacher", "gaussian", "coordinate")


def lr_param(default: float, search: LogUniform | None = None) -> Param:
    return Param(default, "step size (before the schedule)", **positive("a number > 0"),
                 search=search)


#: the schedule searched for every solver (docs/tuning.md): constant, or linear to 0 over the
#: cell's budget (the published STDE schedule decays linearly over its whole budget: Shi et al.,
#: NeurIPS 2024; ``budget`` follows the budget a tuned configuration later runs at)
DECAY_SEARCH = Choice(0, BUDGET)


def decay_steps_param(default: int, search: Choice | None = DECAY_SEARCH) -> Param:
    return Param(default, "linear decay of the step size to 0 over this many steps "
                 "(lr_t = lr * max(0, 1 - t / decay_steps)); 0 keeps it constant",
                 **non_negative("an integer >= 0"), search=search)


NORMALIZE = Param(True, "divide the difference quotients by the root of a running mean of "
                  "their squares (a scalar, Adam-like second moment: O(1) state)")
NORM_DECAY = 0.99


class QuotientScale:
    """Scalar second-moment normalisation of zeroth-order quotients (one number of state).

    v_t = beta2 v_{t-1} + (1 - beta2) mean_k q_k^2,  v_hat = v_t / (1 - beta2^(t+1)),
    q_k <- q_k / sqrt(v_hat). The PINN loss spans many orders of magnitude (at d = 100 the
    two-body source is ~2e3, so the initial loss is ~1e7 and its quotients ~1e6), and a plain
    ZO-SGD step size that is stable at the start is useless later; normalising by a running
    scale of the quotients makes ``lr`` the size of a step per unit of z, like Adam's lr (a
    scalar version of ZO-AdaMM, Chen et al., NeurIPS 2019), without any P-sized buffer.

    The quotients are 0-d float64 tensors on the device (the solver reads nothing back during a
    step), and so is v after the first call; every operation is the float64 one Python's floats
    would do (the power by a tensor exponent, as C's ``pow``), so the numbers are those of the
    same computation on Python floats, bit for bit."""

    def __init__(self, beta2: float = NORM_DECAY) -> None:
        self.beta2 = beta2
        self.v = 0.0
        self.t = 0

    def __call__(self, quotients: list[Tensor]) -> list[Tensor]:
        mean_sq = sum(c * c for c in quotients) / len(quotients)
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * mean_sq
        self.t += 1
        v_hat = self.v / (1.0 - self.beta2**self.t)
        # v_hat^(-1/2) where v_hat > 0, else 0 (then every quotient becomes 0 * c), no branch
        s = torch.where(v_hat > 0.0, torch.pow(v_hat, torch.full_like(v_hat, -0.5)),
                        torch.zeros_like(v_hat))
        return [c * s for c in quotients]


LOSSES = ("biased", "unbiased", "gpinn")


def loss_params() -> dict[str, Param]:
    """``loss`` and the two gPINN parameters (used with ``loss=gpinn`` only; pinnbench.gpinn)."""
    return {
        "loss": Param("biased", "squared residual of one estimate (biased), the product of two "
                      "independent estimates (unbiased), or biased + the gPINN term (gpinn)",
                      choices=LOSSES),
        "gpinn_weight": Param(1.0, "weight w of the gPINN term (ours: 1; the gPINN paper sets "
                              "it per problem)", **non_negative("a number >= 0")),
        "gpinn_dims": Param(1, "coordinates k sampled for the gPINN term per step",
                            **positive("an integer > 0")),
    }


def zeroth_order_parameters(lr: float, q: int, momentum: float, crns: bool,
                            eps: float = 1e-3) -> dict[str, Param]:
    """Parameters every zeroth-order solver (zo, sdze) has, each solver with its own defaults."""
    # search spaces (docs/tuning.md): ours, from the issue-11 grid (docs/sdze-tuning.md)
    return {
        # lr: a decade beyond that grid's 1e-3..1e-2 on each side (its winners sat at its edges:
        # MeZO 1e-3, sdze 1e-2); with normalize=true lr is the step per unit of z, as Adam's
        "lr": lr_param(lr, search=LogUniform(1e-4, 1e-1)),
        "decay_steps": decay_steps_param(0),
        # eps: MeZO's 1e-3 (Malladi et al. 2023) a decade either way, up to naive zo's 0.1 (its
        # issue-11 winner); below 1e-4 a float32 loss difference is mostly rounding
        "eps": Param(eps, "perturbation size", **positive("a number > 0"),
                     search=LogUniform(1e-4, 1e-1)),
        # q: MeZO's 1 to 16 (issue 4's q study: 1, 4, 16); a step costs 2q evaluations, so a
        # budget in steps favours a larger q: time comparisons show its price
        "q": Param(q, "random directions per step", **positive("an integer > 0"),
                   search=IntLogUniform(1, 16)),
        "normalize": NORMALIZE,
        # momentum: off or the usual heavy-ball 0.9 (Polyak 1964), the issue-11 grid's values
        "momentum": Param(momentum, "heavy-ball momentum beta of every parameter (0: ZO-SGD, "
                          "no momentum state anywhere)",
                          check=lambda v: 0 <= v < 1, check_text="a number in [0, 1)",
                          search=Choice(0.0, 0.9)),
        "crns": Param(crns, "common random numbers: the + and - evaluations share points and "
                      "probes (false: independent ones, the naive combination)"),
        "estimator": Param("stde", "forward-only spatial estimator", choices=ESTIMATORS_FORWARD),
        "dist": Param("default", "probe distribution (default: the estimator's)", choices=DISTS),
        **loss_params(),
        "stream": Param(False, "stream the step's points and probes over column blocks of d "
                        "from per-block seeds and consume them as reductions: no n x d tensor, "
                        "memory beyond the parameters independent of d (docs/streaming.md). "
                        "Supported: the ball problems (poisson, allen-cahn, sine-gordon; 2- and "
                        "3-body), estimator=stde with dist default|rademacher|gaussian, "
                        "loss biased|unbiased (sdze: subspace=true with rank < width); other "
                        "combinations are refused. Same distribution as false, other numbers"),
    }


#: a weight matrix's momentum term of an old basis is dropped once beta^age falls below this
#: (what is dropped is at most this fraction of that gradient estimate's total effect)
MOMENTUM_DROP = 0.01


class HeavyBall:
    """Heavy-ball momentum, one rule for every parameter: m_t = beta m_{t-1} + g_hat_t,
    theta_t = theta_{t-1} - lr_t m_t (Polyak 1964; beta = 0: no state, plain ZO-SGD).

    Only the storage differs. A dense parameter keeps m as a tensor of its shape. A weight
    matrix with low-rank directions keeps m in the ambient low-rank form
    m = sum_e U_e A_e V_e^T: one r x r matrix A_e per basis e still in the momentum (the basis
    itself is regenerable from its seed; U_e is m x r), so the momentum **survives a basis
    refresh**: when the basis changes, a new term starts and the old ones decay by beta per step.
    A term is dropped once beta^age < :data:`MOMENTUM_DROP` (44 steps at beta = 0.9): state
    O(horizon x (m r + r^2)) per matrix, independent of the input dimension; the update
    regenerates V_e once per live term (the cost of momentum with a short refresh period) and
    passes over the matrix once (:func:`pinnbench.solvers._perturbation.add_lowrank_sum_`).
    We chose this over re-projecting m onto the new basis because two independent random
    r-dimensional bases of R^n are nearly orthogonal: the projection would keep ~r/n of m, i.e.
    reset it."""

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self.dense: dict[int, Tensor] = {}
        self.lowrank: dict[int, list[list]] = {}  # i -> [[basis, A (r x r), beta^age], ...]

    def dense_step(self, i: int, g: Tensor) -> Tensor:
        m = self.dense.get(i)
        m = g if m is None else m.mul_(self.beta).add_(g)
        self.dense[i] = m
        return m

    def lowrank_step(self, i: int, basis, g: Tensor) -> list[list]:
        """Add the r x r coordinates ``g`` (in ``basis``) to parameter i's momentum; returns the
        live [basis, A, weight] terms, whose sum of U A V^T is the momentum."""
        terms = self.lowrank.setdefault(i, [])
        for term in terms:
            term[1] = term[1] * self.beta
            term[2] *= self.beta
        terms[:] = [term for term in terms if term[2] >= MOMENTUM_DROP]
        if terms and terms[-1][0] is basis:
            terms[-1][1] = terms[-1][1] + g
            terms[-1][2] = 1.0
        else:
            terms.append([basis, g.clone(), 1.0])
        return terms

    def state_tensors(self) -> list[Tensor]:
        return list(self.dense.values()) + [t[1] for ts in self.lowrank.values() for t in ts]


class ZerothOrderSolver(Solver):
    """Two-point SPSA training of the PINN (docs/domain.md §3): the one algorithm of zo and sdze.

    Step t draws a step seed s from the solver's generator; everything else is derived from it:

    * directions z_1..z_q (:meth:`directions`, seeds (s, 1, k)): full Gaussian, or low rank where
      the subclass gives a basis (:meth:`bases`);
    * the spatial sample of evaluation (k, +/-) (:meth:`evaluation_seeds`): with ``crns`` one
      (points, probes) seed pair (s, 2), (s, 3) for all 2q evaluations, else (s, 4, k, +/-),
      (s, 5, k, +/-), independent for each;
    * quotients c_k = [L(theta + eps z_k) - L(theta - eps z_k)] / (2 eps), optionally
      normalised by a running scalar (``normalize``, :class:`QuotientScale`), kept on the
      device as 0-d float64 tensors (the float64 arithmetic of Python floats, bit for bit), so
      that a step reads one number back, its loss, at its end (docs/roofline.md);
    * g_hat = (1/q) sum_k c_k z_k and one heavy-ball step (:class:`HeavyBall`) for every
      parameter alike.

    Subclasses decide how L(theta + c z) is evaluated (:meth:`_pair`) and which parameters get
    low-rank directions (:meth:`bases`); the rest is shared, so two specs that describe the same
    algorithm (``zo[crns=false]`` and ``sdze[subspace=false,crns=false]`` with equal lr, q,
    eps, momentum, normalize) take the same steps from the same seed, up to rounding."""

    #: one-factor-at-a-time variants: (parameter, values); see
    #: :meth:`pinnbench.solver.Solver.ablation_variants`
    ablations: tuple[tuple[str, tuple], ...] = (("crns", (True, False)), ("momentum", (0.0, 0.9)),
                                                ("normalize", (False,)))

    autograd = False

    def diagnostics(self, problem, model, spec):
        """The gradient-estimate and quotient variances (:mod:`pinnbench.solvers._zo_diagnostics`)."""
        from pinnbench.solvers._zo_diagnostics import zeroth_order_diagnostics

        return zeroth_order_diagnostics(self, problem, model, spec)

    def validate(self) -> None:
        why = self._stream_unsupported() if self.stream else []
        if why:
            raise ValueError(f"{self.name}[stream=true] does not support " + ", ".join(why)
                             + "; see docs/streaming.md")

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

    def state_bytes(self, n_params: int, input_dim: int, bytes_per_number: int) -> int:
        """No gradient. Dense momentum (``momentum > 0`` with full Gaussian directions): one
        number per parameter. Low-rank directions (sdze's ``subspace``): the first layer's basis
        V (input_dim x rank) held for the step unless streamed; low-rank momentum and the other
        bases are O(width x rank) and not counted."""
        subspace = self.params.get("subspace", False)
        dense = n_params if self.momentum > 0 and not subspace else 0
        held = input_dim * self.params.get("rank", 0) if subspace and not self.stream else 0
        return (dense + held) * bytes_per_number

    def prepare(self) -> None:
        if self.stream:  # compile the streamed source now, not in the first step
            self.problem.warm_up_stream(self.points)
        self.base_seed = draw_seed(self.generator)
        self._scale = QuotientScale() if self.normalize else None
        self._momentum = HeavyBall(self.momentum) if self.momentum > 0 else None
        self._cache: FirstLayerCache | None = None

    # -- what subclasses choose -----------------------------------------------------------------
    def bases(self) -> list:
        """The low-rank basis of each parameter for the current step (None: full Gaussian)."""
        return [None] * len(self.model.params)

    def _pair(self, d: Perturbation, eps: float, sample) -> tuple[float, float]:
        """(L(theta + eps z), L(theta - eps z)); ``sample(plus)`` is the evaluation's
        :class:`pinnbench.step_data.StepData` (drawn on first use; with common random numbers
        the same object for both evaluations and every direction of the step)."""
        raise NotImplementedError

    #: whether the step evaluates through a :class:`FirstLayerCache` even without streamed data
    #: (sdze's matrix-free first layer); with ``stream`` every zeroth-order solver does, since
    #: streamed data is read only through the cache's reductions
    evaluates_through_cache = False

    def _begin_step(self) -> None:
        """Before a step's evaluations (and its update): the step's first-layer cache, keyed on
        W0's version, so zo's in-place perturbations recompute its products (for streamed data
        one pass over the blocks per evaluation, 2q a step) and sdze's shared ones are reused."""
        self._cache = (FirstLayerCache(self.model.params[0], self.bases()[0])
                       if self.evaluates_through_cache or self.stream else None)

    def _end_step(self) -> None:
        """After the step's update (also when it failed): drop what the step held."""
        if self._cache is not None:
            self.data_time_s += self._cache.stream_data_time_s  # streamed blocks and source
            self._cache.clear()
            self._cache = None

    # -- seeds ----------------------------------------------------------------------------------
    def directions(self, step_seed: int) -> list[Perturbation]:
        """The q directions of the step with seed ``step_seed``."""
        bases = self.bases()
        return [Perturbation(self.model.params, derive_seed(step_seed, 1, k), bases)
                for k in range(self.q)]

    def evaluation_seeds(self, step_seed: int, k: int, plus: bool) -> tuple[int, int]:
        """(points seed, estimator seed) of the evaluation at theta +- eps z_k."""
        if self.crns:
            return derive_seed(step_seed, 2), derive_seed(step_seed, 3)
        return derive_seed(step_seed, 4, k, plus), derive_seed(step_seed, 5, k, plus)

    # -- evaluation -----------------------------------------------------------------------------
    def _loss(self, model, data) -> Tensor:
        """L(theta'; omega) as a 0-d float64 tensor on the device: the float32 loss converted
        exactly (the value ``float()`` would read), without reading it."""
        return self.residual_loss(data, model).detach().to(torch.float64)

    @torch.no_grad()
    def _quotients(self, step_seed: int) -> tuple[list[Perturbation], list[Tensor], list[Tensor]]:
        dirs = self.directions(step_seed)
        eps, device = self.eps, self.problem.device
        quotients, losses = [], []
        held: dict[tuple[int, int], object] = {}  # one sample at a time: x is n x D

        def sample(k: int, plus: bool):
            seeds = self.evaluation_seeds(step_seed, k, plus)
            if seeds not in held:
                held.clear()
                held[seeds] = self.draw(generator(seeds[0], device), generator(seeds[1], device))
            return held[seeds]

        for k, d in enumerate(dirs):
            plus_loss, minus_loss = self._pair(d, eps, lambda plus, k=k: sample(k, plus))
            quotients.append((plus_loss - minus_loss) / (2.0 * eps))
            losses.append(0.5 * (plus_loss + minus_loss))
        held.clear()
        return dirs, quotients, losses

    def difference_quotients(self, generator: torch.Generator) -> list[float]:
        """The q difference quotients [L(theta + eps z_k) - L(theta - eps z_k)] / (2 eps) of one
        step, drawn from ``generator`` (not the solver's), without updating anything: the
        parameters, the step count and the solver's generator are left as they were."""
        self._begin_step()
        try:
            return [float(c) for c in self._quotients(draw_seed(generator))[1]]
        finally:
            self._end_step()

    # -- the step -------------------------------------------------------------------------------
    @torch.no_grad()
    def update(self) -> float:
        self._begin_step()
        try:
            dirs, quotients, losses = self._quotients(draw_seed(self.generator))
            if self._scale is not None:
                quotients = self._scale(quotients)
            self._descend(dirs, quotients)
        finally:
            self._end_step()
        return float(sum(losses) / len(losses))  # the step's one read back, at its end

    def _descend(self, dirs: list[Perturbation], quotients: list[Tensor]) -> None:
        """theta -= lr_t m_t with m_t = beta m_{t-1} + (1/q) sum_k c_k z_k, for every parameter
        (:class:`HeavyBall`); a low-rank z = U Xi V^T / r enters through its coordinates
        G = sum_k c_k Xi_k / (q r), so that U G V^T = (1/q) sum_k c_k z_k."""
        lr = self.lr_now
        nq, mom = len(dirs), self._momentum
        for i, p in enumerate(self.model.params):
            basis = dirs[0].bases[i]
            if basis is not None:
                g = sum(c * d.xis[i] for d, c in zip(dirs, quotients)) / (nq * basis.rank)
                terms = [[basis, g]] if mom is None else mom.lowrank_step(i, basis, g)
                add_lowrank_sum_(p, [(b, (-lr) * (b.u @ a)) for b, a, *_ in terms])
            elif mom is None:
                for d, c in zip(dirs, quotients):
                    d.add_shift_to_(i, p, -lr * c / nq)
            else:
                g = sum(c * d.dense(i) for d, c in zip(dirs, quotients)) / nq
                p.sub_(mom.dense_step(i, g), alpha=lr)


def gradient_estimate_variance(solver: ZerothOrderSolver, seed: int, window: int = 10,
                               windows: int = 100) -> dict[str, float]:
    """How far the solver's gradient estimates are from the gradient, at the current theta.

    One spatial sample omega (the one the step seed ``seed`` gives) is held fixed, and
    G = grad_theta L_hat(theta; omega) comes from autograd. The quotients are taken as z . G,
    which is what the common-random-numbers quotient is up to O(eps^2) (tests/test_sdze_reference
    checks it), so the figures describe the directions alone. The directions are drawn exactly
    as the solver draws them at steps t0, t0 + 1, ... (its rank, refresh period and q), and:

    - ``ratio_step`` = E ||g_hat - G||^2 / ||G||^2 for one step's g_hat = (1/q) sum_k (z_k.G) z_k;
    - ``ratio_window`` = E ||g_bar - G||^2 / ||G||^2 for the mean g_bar of ``window`` consecutive
      steps (what momentum with beta = 1 - 1/window integrates, at fixed theta); the held bases
      change every ``refresh`` steps inside the window, and every window starts a new basis;
    - ``ratio_held`` = E ||g_hat - S||^2 / ||S||^2 about the mean S = E_Xi[g_hat] for the held
      basis (S = (U U^T / r) G (V V^T / r) for a low-rank matrix, G elsewhere): the exploration
      variance inside the subspace, O(r^2) per matrix instead of O(m n);
    - ``cos_held`` = mean cos(S, G): how well a held basis's mean points along the gradient;
    - ``n_params`` = P.

    A diagnostic for small models: it materialises z (P numbers) per direction. Leaves theta,
    the step count and the solver's generator as they were."""
    from pinnbench.model import PINN
    from pinnbench.step_data import draw_step_data

    problem, model, p = solver.problem, solver.model, solver.params

    points_seed, est_seed = solver.evaluation_seeds(seed, 0, True) if p["crns"] else (
        derive_seed(seed, 2), derive_seed(seed, 3))
    data = draw_step_data(problem, p["points"], generator(points_seed, problem.device),
                          p["estimator"], p["probes"], solver.estimator_options,
                          sets=2 if p["loss"] == "unbiased" else 1,
                          probe_generator=generator(est_seed, problem.device))
    theta = [w.detach().clone().requires_grad_(True) for w in model.params]
    with torch.enable_grad():
        loss = solver.residual_loss(data, PINN(problem, theta, model.activation))
        grads = [g.detach() for g in torch.autograd.grad(loss, theta)]
    del theta
    g_flat = torch.cat([g.reshape(-1) for g in grads])
    g_sq = float(g_flat @ g_flat)
    t_saved = solver.t
    refresh = p.get("refresh", 1)
    step_err = window_err = held_err = held_norm = cos_sum = 0.0
    n_steps = 0
    try:
        for w in range(windows):
            g_bar = torch.zeros_like(g_flat)
            for j in range(window):
                solver.t = w * window * refresh + j  # every window starts a new basis
                dirs = solver.directions(derive_seed(seed, 7, w, j))
                g_hat = torch.zeros_like(g_flat)
                for d in dirs:
                    z = torch.cat([d.dense(i).reshape(-1) for i in range(len(grads))])
                    g_hat += float(z @ g_flat) * z
                g_hat /= len(dirs)
                sketch = torch.cat([_held_mean(b, g).reshape(-1)
                                    for b, g in zip(dirs[0].bases, grads)])
                step_err += float(((g_hat - g_flat) ** 2).sum())
                held_err += float(((g_hat - sketch) ** 2).sum())
                s_sq = float(sketch @ sketch)
                held_norm += s_sq
                cos_sum += float(sketch @ g_flat) / (s_sq * g_sq) ** 0.5
                n_steps += 1
                g_bar += g_hat
            g_bar /= window
            window_err += float(((g_bar - g_flat) ** 2).sum())
    finally:
        solver.t = t_saved
    return {"ratio_step": step_err / n_steps / g_sq, "ratio_window": window_err / windows / g_sq,
            "ratio_held": held_err / held_norm, "cos_held": cos_sum / n_steps,
            "n_params": float(g_flat.numel())}


def _held_mean(basis, g: Tensor) -> Tensor:
    """E_Xi[(z . G) z] for z = U Xi V^T / r with the basis held: (U U^T / r) G (V V^T / r)."""
    if basis is None:
        return g
    v = basis.v_dense()
    return (basis.u @ (basis.u.T @ g @ v) @ v.T) / basis.rank**2
