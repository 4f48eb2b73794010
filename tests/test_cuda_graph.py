"""bp's step captured as a CUDA graph (pinnbench/cuda_graph.py), checked on the CPU: the step that
would be captured, run inside the CUDA simulation (tests/cuda_sim.py) under tests/capture_check.py,
makes no host sync, touches no host tensor, and is the same op for op (shapes, dtypes, Python
scalars) at every step, so one captured graph replays it. What only a GPU shows (the capture
itself, graph-safe random streams, timings) is scripts/gpu-validate's stage "graphs"."""

from __future__ import annotations

import contextlib

import pytest
import torch

import pinnbench
from capture_check import capture_check, first_difference
from cuda_sim import simulated_cuda
from pinnbench.cuda_graph import GraphedStep
from pinnbench.seeds import cell_generator
from pinnbench.solver import solver_from_spec

D = 40
SMALL = "points=8,probes=4"


class SimGraphs:
    """The CUDA runtime's graph calls as the simulation can run them: ``capture`` runs the body
    once under :func:`capture_check` on a snapshot of the solver's state and restores it (a
    capture runs no kernel); ``replay`` runs the body again, under the check, with the gradients
    reset to None first (a captured backward writes them afresh, it does not accumulate), and
    copies its loss into the captured output."""

    def __init__(self, solver) -> None:
        self.solver = solver
        self.reports = []
        self.generators = None

    def side_stream(self):
        return contextlib.nullcontext()

    def new_graph(self, generators):
        self.generators = list(generators)
        return object()

    def capture(self, graph, fn):
        state = _snapshot(self.solver)
        with capture_check() as report:
            out = fn()
        self.reports.append(report)
        _restore(self.solver, state)
        self.fn, self.out = fn, out.clone()
        return self.out

    def replay(self, graph) -> None:
        for p in self.solver.model.params:
            p.grad = None
        with capture_check() as report:
            out = self.fn()
        self.reports.append(report)
        self.out.copy_(out.detach())


def _snapshot(solver):
    opt = solver.optimizer
    return ([p.detach().clone() for p in solver.model.params],
            {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in solver.model.params},
            solver.generator.get_state())


def _restore(solver, state) -> None:
    params, opt_state, gen = state
    with torch.no_grad():
        for p, saved in zip(solver.model.params, params):
            p.copy_(saved)
            p.grad = None
            for k, v in opt_state[id(p)].items():
                solver.optimizer.state[p][k].copy_(v)
    solver.generator.set_state(gen)


def _bp(spec: str, device: str):
    problem = pinnbench.make_problem("poisson-2body-v1", dim=D, seed=0, device=device)
    model = pinnbench.make_model(problem, width=16, depth=2,
                                 generator=cell_generator(0, "model", device))
    solver = solver_from_spec(spec)
    solver.setup(problem, model, cell_generator(0, "solver", device))
    return solver


@pytest.mark.parametrize("estimator", ["stde", "stde,dist=coordinate", "hte", "sdgd"])
def test_bp_step_is_capture_safe_and_replays_the_eager_trajectory(estimator):
    spec = f"bp[estimator={estimator},{SMALL},decay_steps=10,cuda_graph=true]"
    with simulated_cuda() as sim:
        solver = _bp(spec, "cuda")
        sims = SimGraphs(solver)
        solver.graphed.backend = sims
        graphed = [float(solver.step()) for _ in range(7)]  # 3 eager, the capture, 3 replays
    assert sim.errors == []
    assert solver.graphed.captured and sims.generators == [solver.generator]
    assert len(sims.reports) == 1 + 4  # the capture, then a replay for each step from the 4th
    for r in sims.reports:
        assert r.syncs == [] and r.host_tensors == [], (r.syncs, r.host_tensors)
    for r in sims.reports[1:]:  # every step is the captured one, op for op
        assert first_difference(sims.reports[0].trace, r.trace) is None
    assert solver.time_data is False and solver.data_time_s == 0.0
    # the same numbers as the eager step on the CPU (the step size as a float32 tensor: rounding)
    eager = _bp(spec.replace("cuda_graph=true", "cuda_graph=false"), "cpu")
    losses = [float(eager.step()) for _ in range(7)]
    torch.testing.assert_close(torch.tensor(graphed), torch.tensor(losses), rtol=1e-5, atol=0)


def test_the_check_finds_what_a_graph_cannot_replay():
    """Teeth: the eager step (a Python-float step size that decays) differs from one step to the
    next in a scalar argument; a planted read of the loss is a sync. The eager step itself makes
    none: its data is timed by CUDA events (pinnbench.timing.Stopwatch), not synchronisations."""
    with simulated_cuda() as sim:
        solver = _bp(f"bp[{SMALL},decay_steps=10]", "cuda")
        solver.step()
        reports = []
        for _ in range(2):
            with capture_check() as r:
                loss = solver.step()
            reports.append(r)
        with capture_check() as read:
            float(loss)
        assert solver.settle_data_time() > 0.0
    assert sim.errors == []
    assert [r.syncs for r in reports] == [[], []]
    assert read.syncs == ["aten::_local_scalar_dense"]
    where = first_difference(reports[0].trace, reports[1].trace)
    assert where is not None and "fused_adam" in where, where


def test_graphed_step_warms_up_then_captures_once_and_returns_copies():
    calls = []

    class Replays:
        side_stream = staticmethod(contextlib.nullcontext)

        def new_graph(self, generators):
            return "graph"

        def capture(self, graph, fn):
            calls.append("capture")
            self.out = torch.zeros(())
            return self.out

        def replay(self, graph):
            calls.append("replay")
            self.out.add_(1.0)

    def body(first):
        calls.append(f"body first={first}")
        return torch.tensor(-1.0)

    step = GraphedStep(body, lambda: calls.append("before"), [], warmup=2, backend=Replays())
    out = [step() for _ in range(4)]
    assert calls == ["body first=True", "body first=True", "before", "capture", "replay",
                     "replay"]
    assert [float(v) for v in out] == [-1.0, -1.0, 1.0, 2.0]  # copies, not the static output


def test_cuda_graph_is_ignored_off_cuda():
    solver = _bp(f"bp[{SMALL},cuda_graph=true]", "cpu")
    assert solver.graphed is None and solver.time_data
    assert torch.isfinite(solver.step())


def test_a_cell_on_simulated_cuda_reports_the_data_time_from_events():
    """The harness reads the data's events after each step's synchronisation
    (Solver.settle_data_time), so the column survives the sync-free step."""
    from pinnbench.cells.cellspec import CellSpec
    from pinnbench.cells.measurement import execute

    with simulated_cuda() as sim:
        spec = CellSpec.from_dict({"problem": "poisson-2body-v1", "dim": D, "steps": 4,
                                   "width": 8, "depth": 2, "threads": 1, "warmup": 1,
                                   "solver": f"bp[{SMALL}]", "device": "cuda"}).to_dict()
        row = execute(spec)
    assert sim.errors == [] and row["status"] == "ok", row["message"]
    assert 0.0 < row["data_time_per_step_s"] < row["time_per_step_s"]
