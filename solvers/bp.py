"""bp: backpropagation with Adam on the PINN residual loss (the STDE / SDGD / HTE baselines).

Each step draws ``points`` collocation points, estimates the operator's linear terms with
``estimator`` (exact autodiff, SDGD dimension sampling, HTE Hutchinson probes, or STDE Taylor
jets, which backprop then differentiates through), forms the residual loss
mean((L_hat u - f)^2) (``loss=unbiased``: the product of two independent estimates,
docs/domain.md §2), and takes one Adam step (Kingma & Ba 2015) with the step size decayed linearly to 0
over ``decay_steps`` steps (0: constant).

Defaults: the committed defaults study (reports/study-defaults; docs/tuning.md), the protocol
every solver is tuned by: lr 1.29e-3, constant (every estimator chose the same). The published
STDE protocol (Shi et al., NeurIPS 2024: Adam, lr 1e-3, linear decay over 10k steps, 100 points,
16 probes) is ``bp[lr=1e-3,decay_steps=10000]``.

Default estimator: ``stde``, the fastest baseline and the one whose published numbers the
benchmark compares with (its forward jets carry no nested autograd graph, so the backward pass
holds one graph of the jets only), with dense Rademacher probes; ``dist=coordinate`` is the
published sparse-STDE configuration (sampled coordinates, SDGD's estimator through jets).
``init=torch`` re-draws the weights as PyTorch's ``nn.Linear`` does, as the published runs were
initialised; the default keeps the model as the harness built it (LeCun normal), the same
starting point for every solver, so that a comparison of solvers is not one of inits.
"""

from __future__ import annotations

import torch

from pinnbench.maths.estimators import exact_unsupported
from pinnbench.maths.model import torch_default_init_
from pinnbench.solver import Param, Solver, register_solver
from pinnbench.solvers._parameters import (decay_steps_param, DISTS, ESTIMATORS_BP,
                                           loss_params, lr_param)
from pinnbench.search_space import LogUniform


@register_solver
class BP(Solver):
    name = "bp"
    parameters = {
        # defaults: the committed defaults study (reports/study-defaults, docs/tuning.md), the
        # same protocol, trials and rule as every other solver's; every estimator chose these.
        # Searched (ours): lr from a decade below the published 1e-3 (Shi et al. 2024) to 30x
        # above it, since a short budget favours larger steps; decay_steps: constant or linear
        # over the budget (_parameters.DECAY_SEARCH)
        "lr": lr_param(1.29e-3, search=LogUniform(1e-4, 3e-2)),
        "decay_steps": decay_steps_param(0),
        "estimator": Param("stde", "spatial estimator of the operator's linear terms",
                           choices=ESTIMATORS_BP),
        "dist": Param("default", "probe distribution for stde (default: the estimator's)",
                      choices=DISTS),
        **loss_params(),
        "init": Param("lecun", "initial weights: lecun (the model as built: N(0, 1/fan_in), "
                      "biases 0, the same for every solver) or torch (re-drawn as nn.Linear "
                      "does, U(+-1/sqrt(fan_in)) for W and b, as the published STDE runs)",
                      choices=("lecun", "torch")),
        "cuda_graph": Param(False, "on CUDA: capture the step as a CUDA graph after 3 eager "
                            "steps and replay it (one launch a step; Adam capturable with its "
                            "step size in a device tensor; the data is then not timed apart; "
                            "pinnbench/cuda_graph.py). Ignored off CUDA"),
    }

    def validate(self) -> None:
        allowed = {"stde": DISTS, "hte": ("default", "rademacher", "gaussian")}.get(
            self.estimator, ("default",))
        if self.dist not in allowed:
            raise ValueError(f"parameter dist={self.dist!r} with estimator={self.estimator!r}: "
                             f"expected one of {'|'.join(allowed)}")

    def skip(self, problem) -> tuple[bool, str]:
        why = exact_unsupported(problem) if self.estimator == "exact" else ""
        return (True, why) if why else super().skip(problem)

    def state_bytes(self, n_params: int, input_dim: int, bytes_per_number: int) -> int:
        """The gradient and Adam's two moments: three numbers per parameter."""
        return 3 * n_params * bytes_per_number

    def prepare(self) -> None:
        if self.init == "torch":
            torch_default_init_(self.model, self.generator)
        # fused: one kernel per parameter group and device for the whole update (m, v and
        # theta in one pass over each tensor), the step count kept on the device, so no
        # host read of it per parameter (docs/roofline.md, "Ops per step")
        self.graphed = None
        # d loss / d loss = 1, made once: autograd.grad would make it (ones_like) every step
        self.loss_seed = torch.ones((), dtype=self.model.dtype, device=self.problem.device)
        if self.cuda_graph and self.problem.device.type == "cuda":
            from pinnbench.cuda_graph import GraphedStep

            # the step size a replay reads: a device tensor, refilled before each step (a
            # Python float would be frozen into the graph at capture)
            self.lr_tensor = torch.tensor(self.lr, dtype=torch.float32, device=self.problem.device)
            self.optimizer = torch.optim.Adam(self.model.params, lr=self.lr_tensor, fused=True,
                                              capturable=True)
            self.time_data = False  # draw() must not synchronise inside the graph
            self.graphed = GraphedStep(
                self._step_body, lambda: self.optimizer.zero_grad(set_to_none=True),
                [self.generator], warmup=self.graph_warmup_steps)
            return
        self.optimizer = torch.optim.Adam(self.model.params, lr=self.lr, fused=True)

    def step_cost(self, dim: int, width: int, depth: int):
        """Forward F1 + the weight gradient F1, forward H + backward 2H; the data D and W0 read
        by the forward, the backward (twice) and Adam (param, grad, two moments read, three
        written): D + 9W (docs/roofline.md)."""
        from pinnbench.bench import roofline as rf

        n, v = self.points, self.probes
        f1 = rf.first_layer_flops(n, v, dim, width)
        return rf.StepCost(flops=2 * f1 + 3 * rf.hidden_flops(n, v, width, depth),
                           bytes=rf.data_bytes(n, v, dim) + 9 * rf.weight_bytes(dim, width))

    def update(self) -> torch.Tensor:
        """One Adam step; returns the loss as a 0-d tensor (no host read: the step launches its
        work and returns). With ``cuda_graph`` on CUDA, the step size is written into the
        optimizer's device tensor and the captured step replayed."""
        if self.graphed is not None:
            self.lr_tensor.fill_(self.lr_now)
            return self.graphed()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_now
        return self._step_body()

    def _step_body(self, first: bool = True) -> torch.Tensor:
        """Draw, the loss, its gradient, the Adam update: what a CUDA graph captures (``first``,
        the graph's warm-up flag, changes nothing here). The gradients come from
        ``torch.autograd.grad`` and are assigned to each parameter's ``.grad``: a new tensor each
        step, as ``zero_grad(set_to_none=True)`` then ``backward()`` give (inside a captured graph
        the graph's own), the same numbers, without backward's accumulation into ``.grad`` (a
        ``detach`` per parameter) and zero_grad's profiler range: 10 ops fewer a step; the
        backward pass seeded with a 1 made once (``loss_seed``), not a ``ones_like`` a step."""
        data = self.draw()
        loss = self.residual_loss(data)
        params = self.model.params
        grads = torch.autograd.grad(loss, params, grad_outputs=self.loss_seed, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        self.optimizer.step()
        return loss.detach()

    def shard_unsupported(self) -> str:
        """bp runs as one rank of a sharded cell (its first layer row-parallel, docs/sharding.md)
        with the stde (any dist), hte and sdgd estimators: dense probes drawn per column block,
        or sampled coordinates, each owned by one rank (the owner's column of W0 gives W0 e_j,
        the others add zero). exact differentiates in x itself (a small-d reference one
        process holds); the gPINN term differentiates the residual in x along sampled
        coordinates, not written as shard sums; a captured CUDA graph would replay the
        collectives outside the process group."""
        from pinnbench.cells.sharded_ball import SHARDED_METHODS

        if self.estimator not in SHARDED_METHODS:
            return (f"{self.spec} is not sharded: estimator={self.estimator} differentiates in x "
                    "itself, d reverse passes of a small-d reference that one process holds "
                    f"(sharded: estimator={'|'.join(SHARDED_METHODS)})")
        if self.loss == "gpinn":
            return (f"{self.spec} is not sharded: the gPINN term differentiates the residual in "
                    "x by reverse mode, and on a shard A, B and f reach x through all-reduced "
                    "sums that have no backward (its d_j f is not written as shard sums)")
        if self.cuda_graph:
            return (f"{self.spec} is not sharded: a captured CUDA graph would replay the "
                    "collectives outside the process group; drop cuda_graph=true")
        return ""
