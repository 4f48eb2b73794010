"""The PINN: an MLP wrapped in the problem's hard-constraint ansatz u = A(x) N(x) + B(x).

Parameters are plain tensors in ``model.params`` ([W_0, b_0, ..., W_L, b_L], W_l of shape
(out, in)), so backprop solvers can set ``requires_grad`` and zeroth-order solvers can perturb
them in place or evaluate the network at perturbed weights through ``forward(x, params=...)``.

Besides ``model(x)``, :meth:`PINN.jet` propagates Taylor coefficients of u along a set of
directions (forward-mode "Taylor jets", STDE): for the first layer the input jet is affine,
``z(t) = W (x + t v) + b``, so its coefficients are ``W x + b`` and ``W v`` and nothing else;
hidden affine layers act coefficient-wise; tanh uses the O(K^2) recurrence of
:mod:`pinnbench.maths.jets`. Cost: one forward pass for the points plus V first-layer products for the
directions (a gather for coordinate directions), no autograd graph.

**A batch of parameter sets.** Every parameter but W_0 may carry a leading axis of B sets
(W_l (B, out, in), b_l (B, out)) when the first layer is a hook that returns the matching batch,
``points`` (B, n, h) and ``directions`` (B, V, h) (a zeroth-order solver's 2q shifted networks,
:mod:`pinnbench.solvers._zo_evaluation`): the hidden layers then run as batched products
(``bmm``), the elementwise work once over all B, and N, its jets and u gain the leading axis B.
W_0 itself is never batched (the hook shifts its products).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from pinnbench.maths.directions import DenseDirections, Directions
from pinnbench.maths.jets import Jet, plus, product_coefficient
from pinnbench.maths.problem import Problem
from pinnbench.maths.tanh_jet import hidden_jet2, network_jet2

ACTIVATIONS = ("tanh",)


class FirstLayer:
    """How a :class:`PINN` computes its first affine map, the only part whose cost grows with the
    input dimension d: ``points(x, w0, b0) = x W0^T + b0`` (n, m) and ``directions(dirs, w0) =
    W0 v_k`` stacked (V, m), the first layer's response to each jet direction.

    The plain dense product is this class. Other evaluations of the same network plug in here
    instead of copying the layers: a zeroth-order solver's shifted first layer
    (x W0^T + c x z0^T, matrix-free), or a first layer whose columns are sharded over processes
    (each rank's partial product, all-reduced). Everything after the first layer is the PINN's
    own code, shared by all of them.

    Optional hooks (defaults here; override only what differs):

    * :meth:`ansatz_jet`: the problem's (A, B) jets along the directions, the other product with
      x whose cost grows with d (x . v_k); a first layer that caches its products for a step
      may cache these too, one that shards the columns may shard them.
    * streamed step data (:mod:`pinnbench.maths.streaming`, docs/streaming.md), which has no n x d
      tensor: :meth:`reductions` makes the one-pass reductions of a sample (x W0^T, W0 v_k,
      x . v_k, ...), and :meth:`reduced_points` / :meth:`reduced_directions` turn them into the
      same two coefficients as :meth:`points` / :meth:`directions`
      (:meth:`PINN.streamed_jet` reads them).
    * the columns this process holds, for a solver that evaluates the first layer its own way
      (a zeroth-order solver's cached products and regenerated perturbations):
      :attr:`plan` (None: all d columns, one process), :meth:`sum_columns` (a product with
      these columns of x or of a probe, summed over every process's columns) and
      :meth:`check_same` (that every process drew the same seed)."""

    #: the columns of W0 this process holds (a :class:`pinnbench.cells.sharding.ShardPlan`);
    #: None: all of them
    plan = None

    def sum_columns(self, partial: Tensor) -> Tensor:
        """The product over all d columns from this process's ``partial`` product (x[:, cols]
        W0[:, cols]^T, or any other product over the input coordinates): one process holds all
        of them, so ``partial`` itself."""
        return partial

    def check_same(self, what: str, value: int) -> None:
        """Raise when the processes sharing this layer disagree on ``value`` (one process:
        nothing to check)."""

    def points(self, x: Tensor, w0: Tensor, b0: Tensor) -> Tensor:
        return torch.addmm(b0, x, w0.T)

    def directions(self, dirs: Directions, w0: Tensor) -> Tensor:
        return dirs.apply_weight(w0)

    def ansatz_jet(self, problem: Problem, x: Tensor, dirs: Directions,
                   order: int) -> tuple[Jet, Jet]:
        return problem.ansatz_jet(x, dirs, order)

    def reductions(self, data, w0: Tensor):
        """The reductions of streamed step data ``data`` with ``w0``
        (:class:`pinnbench.maths.streaming.Reductions`): one pass over its blocks per call."""
        from pinnbench.maths.streaming import reduce

        return reduce(data, w0)

    def reduced_points(self, red, b0: Tensor) -> Tensor:
        """x W0^T + b0 (n, m) from the reductions ``red``."""
        return red.wx + b0

    def reduced_directions(self, red, k: int) -> Tensor:
        """W0 v stacked (V, m) for probe set ``k`` of the reductions ``red``."""
        return red.wv[k]


#: the dense first layer (stateless, so one instance serves every PINN)
DENSE = FirstLayer()


class PINN:
    def __init__(self, problem: Problem, params: list[Tensor], activation: str = "tanh",
                 first_layer: FirstLayer = DENSE) -> None:
        self.problem = problem
        self.params = params
        self.activation = activation
        self.first_layer = first_layer

    # -- shape ----------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.params) // 2

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def param_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.params)

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    @property
    def input_dim(self) -> int:
        return self.params[0].shape[1]

    # -- evaluation -----------------------------------------------------------------------------
    def net(self, x: Tensor, params: Sequence[Tensor] | None = None) -> Tensor:
        """The raw MLP N(x), (n, D) -> (n,); (B, n) for a batch of B parameter sets (the
        module docstring)."""
        p = self.params if params is None else params
        return self.net_from_first(self.first_layer.points(x, p[0], p[1]), p)

    def net_from_first(self, h: Tensor, params: Sequence[Tensor] | None = None) -> Tensor:
        """N from its first layer's output ``h`` = x W0^T + b0 (n, m): the hidden layers and
        the output layer (a caller that computes the first layer its own way, e.g. a sharded
        test set in column-block order: :mod:`pinnbench.cells.sharded_sets`)."""
        p = self.params if params is None else params
        for layer in range(1, len(p) // 2):
            h = torch.tanh(h)
            w, b = p[2 * layer], p[2 * layer + 1]
            h = (torch.addmm(b, h, w.T) if h.ndim == 2
                 else torch.baddbmm(b.unsqueeze(-2), h, w.mT))
        return h.squeeze(-1)

    def forward(self, x: Tensor, params: Sequence[Tensor] | None = None) -> Tensor:
        """u(x) = A(x) N(x) + B(x), (n, D) -> (n,)."""
        self._check_input(x)
        a, b = self.problem.ansatz(x)
        return a * self.net(x, params) + b

    __call__ = forward

    def net_jet(self, x: Tensor, dirs: Directions, order: int,
                params: Sequence[Tensor] | None = None) -> Jet:
        """Jet of N along each direction; coefficients (n, V)."""
        p = self.params if params is None else params
        # x differentiated (gPINN, a drift term): a second backward pass through the jet, which
        # the hand-written backward of the fused hidden layers does not provide
        if (type(self.first_layer) is FirstLayer and isinstance(dirs, DenseDirections)
                and not x.requires_grad and not dirs.v.requires_grad
                and _fusable(order, p[0].ndim == 2 and x.ndim == 2, p[2:])):
            # the first layer in the same node: W0's gradient one matrix, written in place
            return network_jet2(x, dirs.v, p)
        return self._hidden_jet(self.first_layer.points(x, p[0], p[1]),
                                self.first_layer.directions(dirs, p[0]), p, order,
                                fused=not x.requires_grad)

    def _hidden_jet(self, first: Tensor, first_dirs: Tensor, p: Sequence[Tensor],
                    order: int, fused: bool = False) -> Jet:
        """The jet of N from its first layer's coefficients, ``first`` = x W0^T + b0 (n, h) and
        ``first_dirs`` = W0 v (V, h): tanh by the jet recurrence, the hidden affine maps
        coefficient-wise (:func:`_linear_jet`). With ``fused``, where autograd records and
        ``order`` is 2, the hidden layers are one autograd node
        (:func:`pinnbench.maths.tanh_jet.hidden_jet2`: the same forward numbers, a hand-written
        backward pass in fewer ops)."""
        # (..., n, 1, h), (..., 1, V, h): the leading axis of a batch of parameter sets, if any
        hidden = p[2:]
        if fused and _fusable(order, first.ndim == 2 and first_dirs.ndim == 2, hidden):
            # one autograd node with a hand-written backward (pinnbench.maths.tanh_jet)
            return hidden_jet2(first.unsqueeze(-2), first_dirs.unsqueeze(-3), hidden)
        z = Jet([first.unsqueeze(-2), first_dirs.unsqueeze(-3)], order)
        last = len(p) // 2 - 1
        for layer in range(1, len(p) // 2):
            a = z.tanh()
            w, b = p[2 * layer], p[2 * layer + 1]
            z = _linear_jet(a, w)
            z.coeffs[0] = z.coeffs[0] + (b if b.ndim == 1 else b[:, None, None, :])
            if layer == last:
                z = z.map(lambda c: c.squeeze(-1))
        return z

    def jet(self, x: Tensor, dirs: Directions, order: int,
            params: Sequence[Tensor] | None = None) -> Jet:
        """Jet of u = A N + B along each direction: ``jet[k]`` is (n, V), the k-th Taylor
        coefficient, so the k-th directional derivative is ``jet.derivative(k)``."""
        self._check_input(x)
        a, b = self.first_layer.ansatz_jet(self.problem, x, dirs, order)
        return a * self.net_jet(x, dirs, order, params) + b

    def jet_coefficients(self, x: Tensor, dirs: Directions, ks: Sequence[int],
                         params: Sequence[Tensor] | None = None) -> dict[int, Tensor | float]:
        """{k: the k-th Taylor coefficient of u = A N + B} for the k in ``ks`` only, each
        ``jet(x, dirs, max(ks))[k]`` to the bit: N's jet is taken to max(ks) in full (its
        recurrence needs every order below), the product with A and the sum with B only for
        the coefficients asked (a residual that reads D_v^2 u alone forms neither u_0 nor u_1:
        four ops a step fewer, issue 22)."""
        self._check_input(x)
        order = max(ks)
        a, b = self.first_layer.ansatz_jet(self.problem, x, dirs, order)
        net = self.net_jet(x, dirs, order, params)
        return {k: plus(product_coefficient(a, net, k), b[k]) for k in ks}

    def streamed_jet(self, red, k: int, order: int) -> Jet:
        """The jet of u = A N + B along probe set ``k`` of streamed step data, from its
        reductions ``red`` (:meth:`FirstLayer.reductions`): the first layer's coefficients come
        from :meth:`FirstLayer.reduced_points` / :meth:`FirstLayer.reduced_directions`, A's jet
        from [||x||^2, 2 x.v, ||v||^2] (``problem.ansatz_jet_from``); no point or probe is
        needed (docs/streaming.md)."""
        a, b = self.problem.ansatz_jet_from(red.sqnorm, red.xv[k], red.vsq[k], order)
        p = self.params
        net = self._hidden_jet(self.first_layer.reduced_points(red, p[1]),
                               self.first_layer.reduced_directions(red, k), p, order)
        return a * net + b

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.input_dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be an (n, {self.input_dim}) tensor for {self.problem.id}, "
                             f"got {shape}")
        if x.dtype != self.dtype:
            raise ValueError(f"x has dtype {x.dtype} but the model is {self.dtype}")


def stacked_base(cs: list) -> Tensor | None:
    """The tensor whose consecutive slices along the second-last axis the coefficients ``cs``
    are, in order and covering it (what ``torch.cat(cs, dim=-2)`` would copy them into), or
    None: the activation's jet may write its coefficients into one buffer (no autograd
    recording: :func:`pinnbench.maths.jets.stacked_out`), and the layer's product then reads
    the buffer itself instead of a copy of it (1.6 W0 of sdze's traffic at d = 1e5)."""
    base = cs[0]._base if isinstance(cs[0], Tensor) else None
    if base is None or base.ndim != cs[0].ndim or not base.is_contiguous():
        return None
    start = 0
    row = base.stride(-2)
    for c in cs:
        if (not isinstance(c, Tensor) or c._base is not base or c.stride() != base.stride()
                or c.shape[:-2] != base.shape[:-2] or c.shape[-1] != base.shape[-1]
                or c.storage_offset() != base.storage_offset() + start * row):
            return None
        start += c.shape[-2]
    return base if start == base.shape[-2] else None


def _fusable(order: int, unbatched: bool, hidden: Sequence[Tensor]) -> bool:
    """Whether the order-2 jet may be one autograd node (:mod:`pinnbench.maths.tanh_jet`):
    autograd records, one parameter set (2-D weights, 1-D biases, an unbatched first layer)."""
    return (order == 2 and torch.is_grad_enabled() and unbatched
            and all(t.ndim == 2 - i % 2 for i, t in enumerate(hidden)))


def _linear_jet(a: Jet, w: Tensor) -> Jet:
    """The jet of a W^T (a linear map acts on every Taylor coefficient alike): the coefficients
    (n, 1, h), (n, V, h), ... stacked along their second-last axis into one product with W^T,
    then split again (views), one matrix product a layer instead of one per coefficient. Each
    output is the same dot product as apart (bit for bit on MKL at the step's shapes:
    scripts/trajectory_check.py's specs unchanged when this replaced the per-coefficient form).
    For a batch of B parameter sets (coefficients (B, n, ., h), W (B, h', h)) the product is one
    batched product, (B, n K, h) x (B, h, h'), whose every set is the unbatched product to the
    bit. Coefficients of other shapes are mapped one by one."""
    cs = a.coeffs
    batched = w.ndim == 3
    ndim = 4 if batched else 3
    if not all(isinstance(c, Tensor) and c.ndim == ndim for c in cs) or len(
            {c.shape[:-2] + c.shape[-1:] for c in cs}) != 1:
        wt = w.mT.unsqueeze(1) if batched else w.T  # (B, 1, h, h'): broadcast over n
        return a.map(lambda c: c @ wt)
    stacked = stacked_base(cs)
    if stacked is None:
        stacked = torch.cat(cs, dim=-2)  # (..., n, K, h)
    if batched:
        flat = stacked.flatten(1, 2)
        # A W^T rounds as the unbatched product does (bit for bit on MKL at every shape we
        # tried) but for the one-column output layer, which (W A^T)^T matches; the transposed
        # result of the latter slows the hidden layers' elementwise work (CPU, d = 100: 12 %)
        out = torch.bmm(w, flat.mT).mT if w.shape[1] == 1 else torch.bmm(flat, w.mT)
        out = out.unflatten(1, stacked.shape[1:3])
    else:
        out = stacked @ w.T
    return Jet(list(out.split([c.shape[-2] for c in cs], dim=-2)), a.order)


def make_model(problem: Problem, width: int = 128, depth: int = 3, activation: str = "tanh",
               generator: torch.Generator | None = None) -> PINN:
    """An MLP with ``depth`` hidden tanh layers of ``width`` units, in the problem's dtype and on
    its device. Weights W ~ N(0, 1/fan_in) (LeCun normal), biases 0, drawn from ``generator``
    only (a fresh generator seeded with the problem's seed when None)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    for name, v in (("width", width), ("depth", depth)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if generator is None:
        generator = torch.Generator(device=problem.device).manual_seed(problem.seed)
    sizes = [problem.input_dim] + [width] * depth + [1]
    params: list[Tensor] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = torch.randn(fan_out, fan_in, generator=generator, dtype=problem.dtype,
                        device=problem.device)
        w.mul_(1.0 / math.sqrt(fan_in))
        params += [w, torch.zeros(fan_out, dtype=problem.dtype, device=problem.device)]
    return PINN(problem, params, activation)


def torch_default_init_(model: PINN, generator: torch.Generator) -> None:
    """Re-draw the model's parameters in place as PyTorch's ``nn.Linear`` does by default:
    W and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (``kaiming_uniform_(a=sqrt(5))`` gives that
    bound for W; the bias uses the same), from ``generator`` only. The published STDE runs use
    it (Shi et al., NeurIPS 2024, their code builds the MLP from ``nn.Linear``-style layers);
    pinnbench's default stays LeCun normal with zero biases (:func:`make_model`)."""
    with torch.no_grad():
        for i in range(0, len(model.params), 2):
            w, b = model.params[i], model.params[i + 1]
            bound = 1.0 / math.sqrt(w.shape[1])
            for p in (w, b):
                p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype,
                                   device=p.device).mul_(2.0 * bound).sub_(bound))
