"""example-zo: two-point zeroth-order training (SPSA, Spall 1992), a whole solver plugin in one
file that the harness asks for its ablation page, claims, diagnostics and roofline bound:
``pinnbench ablate example-zo --import docs/examples/zo_solver.py --diagnostics``.
Per step one sample (common random numbers) and q Gaussian z_k: c_k = [L(θ+εz_k) − L(θ−εz_k)]/(2ε),
ĝ = (1/q) Σ c_k z_k, θ ← θ − lr ĝ/||ĝ|| (normalized: the loss spans decades). Diagnostics at the
final θ, G by autograd on one sample: ratio_step = mean ||ĝ − G||²/||G||² over 2W draws (for
Gaussian z it is (P + 1)/q, Isserlis), ratio_window the same for means of W draws (/W); no held
basis, so ratio_held = ratio_step and cos_held = 1."""

import torch

from pinnbench.ablation_page import AblationPage, CheaperPerStep, LeanerThan
from pinnbench.solver import Param, Solver, positive, register_solver

W = 10  # draws per window of the diagnostics


@register_solver
class ExampleZO(Solver):
    name, autograd, ablations = "example-zo", False, (("q", (1, 4)), ("eps", (1e-2,)))
    parameters = {"lr": Param(1e-2, "step length", **positive()),
                  "eps": Param(1e-3, "ε", **positive()),
                  "q": Param(2, "directions per step", **positive("an integer > 0"))}

    def estimate(self, data):  # (ĝ as one flat vector, the last loss seen)
        theta = torch.nn.utils.parameters_to_vector(self.model.params)
        g = torch.zeros_like(theta)
        for _ in range(self.q):
            z = torch.randn(theta.shape, generator=self.generator, device=theta.device,
                            dtype=theta.dtype)
            losses = []
            for shift in (self.eps, -self.eps):
                torch.nn.utils.vector_to_parameters(theta + shift * z, self.model.params)
                losses.append(float(self.residual_loss(data)))
            g += (losses[0] - losses[1]) / (2 * self.eps * self.q) * z
        torch.nn.utils.vector_to_parameters(theta, self.model.params)
        return g, losses[1]

    @torch.no_grad()
    def update(self):
        g, loss = self.estimate(self.draw())
        v = torch.nn.utils.parameters_to_vector(self.model.params)
        torch.nn.utils.vector_to_parameters(v - self.lr * g / g.norm().clamp_min(1e-30),
                                             self.model.params)
        return loss

    def diagnostics(self, problem, model, spec):
        data, params = self.draw(), model.params
        with torch.enable_grad():
            [p.requires_grad_(True) for p in params]
            G = torch.autograd.grad(self.residual_loss(data), params)
            G = torch.nn.utils.parameters_to_vector(G)
            [p.requires_grad_(False) for p in params]
        with torch.no_grad():
            gs = torch.stack([self.estimate(data)[0] for _ in range(2 * W)])
        ratio = lambda g: float(((g - G) ** 2).sum(-1).mean() / (G**2).sum())  # noqa: E731
        step, window = ratio(gs), ratio(gs.view(2, W, -1).mean(1))
        return {"gradient_variance": {"window": W, "final": {
            "ratio_step": step, "ratio_window": window, "ratio_held": step, "cos_held": 1.0,
            "n_params": G.numel()}}}

    def step_cost(self, dim, width, depth):  # 2q evaluations (F1 + H), each writing and reading
        from pinnbench.bench import roofline as rf  # W0; data once; the update reads and writes W0

        n, v, q = self.points, self.probes, self.q
        f = rf.first_layer_flops(n, v, dim, width) + rf.hidden_flops(n, v, width, depth)
        w = rf.weight_bytes(dim, width)
        return rf.StepCost(flops=2 * q * f, bytes=rf.data_bytes(n, v, dim) + (4 * q + 2) * w)

    @classmethod
    def ablation_page(cls):
        return AblationPage(family=cls.name, title="example-zo's claims", cells="example-zo")

    @classmethod
    def claims(cls):
        return (CheaperPerStep("Two directions cost less per step than four", than="q=4",
                               dims=(1, 10**7)),
                LeanerThan("Leaner than backprop (training peak)", comparator="bp"))
