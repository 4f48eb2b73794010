"""A training step captured once as a CUDA graph and replayed (``torch.cuda.CUDAGraph``).

At d <= 1e5 a GPU step is bound by kernel launches, not arithmetic (docs/roofline.md, "Ops per
step": bp dispatches a few hundred ATen ops a step, each at least one launch of a few µs). A CUDA
graph records the step's kernels once and replays them with one launch (NVIDIA, "CUDA Graphs",
CUDA C++ Programming Guide; PyTorch's "whole-network capture", docs of ``torch.cuda.graphs``).

What a captured step must satisfy (else the replay computes something else, or capture fails):

- no host sync inside (no ``.item()``, ``float(t)``, ``.cpu()``, ``nonzero``, ...; no
  ``torch.cuda.synchronize``, so the data is not timed apart inside it);
- fixed shapes and fixed Python values: every kernel argument that is not a device tensor is
  frozen at capture (a step size that decays must live in a device tensor, updated before each
  replay);
- random numbers drawn on the device from generators registered with the graph
  (``CUDAGraph.register_generator_state``), so each replay advances their offsets; a draw from a
  CPU generator inside would replay the same numbers forever;
- no tensor created on the host and copied in (its host memory is read at replay time);
- the gradients allocated during capture (``.grad`` is None before it) are the graph's: no
  ``zero_grad`` between replays, the captured backward overwrites them.

tests/capture_check.py checks the first four on the CPU through the CUDA simulation
(tests/cuda_sim.py); the capture itself, the graph-safe random streams and the timings only run
on a GPU (scripts/gpu-validate, stage "graphs").

:class:`GraphedStep` runs ``warmup`` eager steps on a side stream (optimizer state and autograd
buffers are allocated then, and the closed forms compile), captures the next, and replays it from
then on. ``backend`` is the CUDA runtime (:data:`CUDA`); tests pass a stand-in.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch


class _CudaBackend:
    """The CUDA calls :class:`GraphedStep` makes (a seam for the CPU tests)."""

    @contextlib.contextmanager
    def side_stream(self):
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            yield
        torch.cuda.current_stream().wait_stream(stream)

    def new_graph(self, generators: Sequence[torch.Generator]):
        graph = torch.cuda.CUDAGraph()
        for g in generators:
            graph.register_generator_state(g)
        return graph

    def capture(self, graph, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Record ``fn``'s kernels into ``graph`` (none runs); returns its static output."""
        with torch.cuda.graph(graph):
            return fn()

    def replay(self, graph) -> None:
        graph.replay()


CUDA = _CudaBackend()


class GraphedStep:
    """``step = GraphedStep(body, before_capture, generators)``; ``step()`` returns the loss.

    ``body(first)`` is one training step returning its loss as a 0-d device tensor; ``first`` is
    True for the eager warm-up steps (the body may then reset state the graph must not, such as
    ``zero_grad``). ``before_capture()`` runs once, outside the graph, just before it is
    captured (e.g. ``zero_grad(set_to_none=True)``, so the captured backward owns the
    gradients). The returned loss is a copy, so a caller may keep the losses of several steps.
    ``generators``: those the step draws from, or a function that returns them at the capture
    (a pool that grows during the warm-up, :class:`pinnbench.seeds.GeneratorPool`)."""

    def __init__(self, body: Callable[[bool], torch.Tensor], before_capture: Callable[[], None],
                 generators: Sequence[torch.Generator] | Callable[[], Sequence[torch.Generator]],
                 warmup: int = 3, backend=CUDA) -> None:
        if warmup < 1:
            raise ValueError(f"a captured step needs >= 1 eager warm-up step, got {warmup}")
        self.body, self.before_capture = body, before_capture
        self.generators = generators if callable(generators) else tuple(generators)
        self.warmup, self.backend = warmup, backend
        self.eager_steps = 0
        self.graph = None
        self._loss: torch.Tensor | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self) -> torch.Tensor:
        if self.graph is None and self.eager_steps < self.warmup:
            with self.backend.side_stream():
                loss = self.body(True)
            self.eager_steps += 1
            return loss
        if self.graph is None:
            self.before_capture()
            generators = self.generators() if callable(self.generators) else self.generators
            self.graph = self.backend.new_graph(generators)
            self._loss = self.backend.capture(self.graph, lambda: self.body(False))
        self.backend.replay(self.graph)  # capture records the kernels; this step runs them
        return self._loss.clone()
