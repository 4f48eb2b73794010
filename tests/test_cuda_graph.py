"""bp's and sdze's steps captured as CUDA graphs (pinnbench/cuda_graph.py), checked on the CPU: the
step that would be captured, run inside the CUDA simulation (tests/cuda_sim.py) under
tests/capture_check.py, makes no host sync, touches no host tensor, draws only from the
generators registered with the graph, reads its state from the same storage at every step, and
is the same op for op (shapes, dtypes, Python scalars, generators) at every step, so one
captured graph replays it. What only a GPU shows (the capture
itself, graph-safe random streams, timings) is scripts/gpu-validate's stage "graphs"."""

from __future__ import annotations

import contextlib

import pytest
import torch

import pinnbench
from capture_check import capture_check, first_difference
from cuda_sim import simulated_cuda
from pinnbench.cuda_graph import GraphedStep
from pinnbench.seeds import cell_generator, GeneratorPool, ScheduleError, generator as seeded
from pinnbench.solver import solver_from_spec

D = 40
SMALL = "points=8,probes=4"


class SimGraphs:
    """The CUDA runtime's graph calls as the simulation can run them: ``capture`` runs the body
    once under :func:`capture_check` on a snapshot of the solver's state and restores it (a
    capture runs no kernel); ``replay`` runs the body again, under the check, with the gradients
    reset to None first (a captured backward writes them afresh, it does not accumulate), and
    copies its loss into the captured output."""

    def __init__(self, solver, snapshot=None, restore=None) -> None:
        self.solver = solver
        self.snapshot, self.restore = snapshot or _snapshot, restore or _restore
        self.reports = []
        self.generators = None

    def side_stream(self):
        return contextlib.nullcontext()

    def new_graph(self, generators):
        self.generators = list(generators)
        return object()

    def capture(self, graph, fn):
        state = self.snapshot(self.solver)
        with capture_check(self.generators) as report:
            out = fn()
        self.reports.append(report)
        self.restore(self.solver, state)
        self.fn, self.out = fn, out.clone()
        return self.out

    def replay(self, graph) -> None:
        for p in self.solver.model.params:
            p.grad = None
        with capture_check(self.generators) as report:
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


def _replays_the_capture(reports) -> None:
    """What one graph captured from ``reports[0]`` needs of every step it replays."""
    for r in reports:
        assert r.safe, (r.syncs, r.host_tensors, r.unregistered)
    for r in reports[1:]:  # every step is the captured one, op for op, on the same state
        assert first_difference(reports[0].trace, r.trace) is None
        assert first_difference(reports[0].external, r.external) is None


def _solver(spec: str, device: str, depth: int = 2):
    """A solver of ``spec`` set up on a small model (the zeroth-order tests: depth 3, two hidden
    matrices with a basis)."""
    problem = pinnbench.make_problem("poisson-2body-v1", dim=D, seed=0, device=device)
    model = pinnbench.make_model(problem, width=16, depth=depth,
                                 generator=cell_generator(0, "model", device))
    solver = solver_from_spec(spec)
    solver.setup(problem, model, cell_generator(0, "solver", device))
    return solver


@pytest.mark.parametrize("estimator", ["stde", "stde,dist=coordinate", "hte", "sdgd"])
def test_bp_step_is_capture_safe_and_replays_the_eager_trajectory(estimator):
    spec = f"bp[estimator={estimator},{SMALL},decay_steps=10,cuda_graph=true]"
    with simulated_cuda() as sim:
        solver = _solver(spec, "cuda")
        sims = SimGraphs(solver)
        solver.graphed.backend = sims
        graphed = [float(solver.step()) for _ in range(7)]  # 3 eager, the capture, 3 replays
    assert sim.errors == []
    assert solver.graphed.captured and sims.generators == [solver.generator]
    assert len(sims.reports) == 1 + 4  # the capture, then a replay for each step from the 4th
    _replays_the_capture(sims.reports)
    assert solver.time_data is False and solver.data_time_s == 0.0
    # the same numbers as the eager step on the CPU (the step size as a float32 tensor: rounding)
    eager = _solver(spec.replace("cuda_graph=true", "cuda_graph=false"), "cpu")
    losses = [float(eager.step()) for _ in range(7)]
    torch.testing.assert_close(torch.tensor(graphed), torch.tensor(losses), rtol=1e-5, atol=0)


def test_the_check_finds_what_a_graph_cannot_replay():
    """Teeth: the eager step (a Python-float step size that decays) differs from one step to the
    next in a scalar argument; a planted read of the loss is a sync. The eager step itself makes
    none: its data is timed by CUDA events (pinnbench.timing.Stopwatch), not synchronisations."""
    with simulated_cuda() as sim:
        solver = _solver(f"bp[{SMALL},decay_steps=10]", "cuda")
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


def test_the_check_finds_a_host_number_copied_in():
    """A 0-d host tensor is a Python scalar to arithmetic, but copied into a CUDA tensor it is a
    copy from pageable host memory, which a capture refuses."""
    with simulated_cuda():
        x = torch.zeros(3, device="cuda")
        with capture_check() as r:
            x.mul_(torch.tensor(2.0))  # a scalar operand: fine
        assert r.safe
        with capture_check() as r:
            x[0].copy_(torch.tensor(2.0))
    assert r.host_tensors == ["aten::copy_ on host tensors [()]"]


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
    solver = _solver(f"bp[{SMALL},cuda_graph=true]", "cpu")
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


# -- sdze ------------------------------------------------------------------------------------------

def _zeroth_order(spec: str, device: str):
    return _solver(spec, device, depth=3)


def _zo_state(solver) -> list[torch.Tensor]:
    scale = solver._quotient_scale
    momentum = solver._momentum
    return (list(solver.model.params) + ([] if momentum is None else momentum.state_tensors())
            + ([scale.v, scale.t] if scale is not None else []))


def _zo_snapshot(solver):
    momentum = solver._momentum
    return ([t.clone() for t in _zo_state(solver)], getattr(solver, "_epoch", None),
            getattr(solver, "_bases", None), None if momentum is None else dict(momentum.lowrank))


def _zo_restore(solver, state) -> None:
    """The state as before the capture, which runs no kernel, and the Python state too (the
    simulated replay that follows runs the step's Python again, where a real replay runs none
    at all: sdze's bases' epoch, the momentum's terms), and the pool armed again, as it is when
    that replay starts."""
    tensors, epoch, bases, lowrank = state
    if bases is not None:
        solver._epoch, solver._bases = epoch, bases
    with torch.no_grad():
        for t, saved in zip(_zo_state(solver), tensors):
            t.copy_(saved)
    if lowrank is not None:
        solver._momentum.lowrank = lowrank
    solver._pool.arm(solver.generator_seeds())


def _captured_equals_eager(spec: str, steps: int):
    """``steps`` steps of ``spec`` (with cuda_graph=true) on simulated CUDA, captured through
    :class:`SimGraphs`: every captured step and replay is one graph on the same state
    (:func:`_replays_the_capture`), and the losses and final parameters are the eager CPU
    run's, bit for bit. Returns the solver and the stand-in runtime."""
    with simulated_cuda() as sim:
        solver = _zeroth_order(spec, "cuda")
        sims = SimGraphs(solver, _zo_snapshot, _zo_restore)
        solver.graphed.backend = sims
        graphed = [float(solver.step()) for _ in range(steps)]
    assert sim.errors == [] and solver.graphed.captured
    _replays_the_capture(sims.reports)
    eager = _zeroth_order(spec.replace("cuda_graph=true", "cuda_graph=false"), "cpu")
    assert [float(eager.step()) for _ in range(steps)] == graphed
    assert all(torch.equal(a, b) for a, b in zip(eager.model.params, solver.model.params))
    # the schedule is a function of t alone: a solver that never stepped lists the same seeds
    # (after the capture a real replay runs none of the step's Python to update what it reads)
    fresh = _zeroth_order(spec, "cpu")
    fresh.t = solver.t
    assert fresh.generator_seeds() == solver.generator_seeds()
    return solver, sims


@pytest.mark.parametrize("options", ["momentum=0.5", "momentum=0.5,normalize=false,decay_steps=0",
                                     "momentum=0", "momentum=0.5,loss=unbiased,estimator=fd"])
def test_sdze_step_is_capture_safe_and_replays_the_eager_trajectory(options):
    """The captured sdze step (its generators a pool armed before each replay, its momentum
    shifted in place once full, its step size and its quotient scale's step count device
    tensors) is one graph for every later step and gives the eager step's numbers bit for bit
    (on the CPU, where the float64 step size rounds as the Python number does)."""
    spec = f"sdze[{SMALL},{options},cuda_graph=true]"
    steps = 14
    solver, sims = _captured_equals_eager(spec, steps)
    warmup = solver.steady_state_steps + 1  # the momentum full (7 terms at beta 0.5)
    assert solver.graphed.warmup == warmup and solver.graphed.captured
    assert sims.generators == solver._pool.generators and solver._pool.frozen
    assert len(sims.generators) == len(solver.generator_seeds())
    assert len(sims.reports) == 1 + steps - warmup


def test_the_sdze_check_finds_rebound_state_and_a_foreign_generator(monkeypatch):
    """Teeth: the momentum stacks rebuilt each step (the eager default, in_place=False) read
    other storage at every step; a draw from a generator made inside the step is unregistered."""
    from pinnbench.solvers import _zo_perturbations

    with simulated_cuda():
        solver = _zeroth_order(f"sdze[{SMALL},momentum=0.5,cuda_graph=true]", "cuda")
        solver.graphed.backend = SimGraphs(solver, _zo_snapshot, _zo_restore)
        for _ in range(solver.steady_state_steps + 1):  # the eager warm-up
            solver.step()
        solver._momentum.in_place = False
        reports = []
        for _ in range(2):
            solver._lr.fill_(solver.lr_now)
            solver._pool.arm(solver.generator_seeds())
            with capture_check(solver._pool.generators) as r:
                solver._graph_body()
            solver.t += 1
            reports.append(r)
        assert first_difference(reports[0].trace, reports[1].trace) is None
        assert first_difference(reports[0].external, reports[1].external) is not None
        solver._momentum.in_place = True
        real = _zo_perturbations.generator
        monkeypatch.setattr(_zo_perturbations, "generator",
                            lambda seed, device: torch.Generator(device=device).manual_seed(seed)
                            if seed == _zo_perturbations.derive_seed(solver.step_seed(), 6)
                            else real(seed, device))
        solver._pool.arm(solver.generator_seeds())
        with capture_check(solver._pool.generators) as r, pytest.raises(ScheduleError):
            solver._graph_body()
    assert r.unregistered == ["aten::randn"]


def test_the_pool_checks_the_schedule_both_ways():
    pool = GeneratorPool("cpu")
    pool.arm([11, 12])
    with pool.active():
        a = torch.randn(3, generator=seeded(11))
        with pytest.raises(ScheduleError, match="more often"):
            seeded(11)
        with pytest.raises(ScheduleError, match="does not list"):
            seeded(13)
        with pytest.raises(ScheduleError, match="never drawn"):
            pool.check_drawn()
    assert torch.equal(a, torch.randn(3, generator=seeded(11)))  # outside: a fresh generator
    generators = pool.freeze()
    with pytest.raises(ScheduleError, match="2 generators"):
        pool.arm([1, 2, 3])
    pool.arm([12, 11])  # re-armed: slot 0 now plays seed 12's role
    with pool.active():
        assert seeded(12) is generators[0] and seeded(11) is generators[1]
        pool.check_drawn()
    pool.arm([11, 11])  # a seed drawn twice: each draw restarts its stream, on its own generator
    with pool.active():
        first, second = seeded(11), seeded(11)
        assert (first, second) == tuple(generators)
        assert torch.equal(torch.randn(3, generator=first), a)
        assert torch.equal(torch.randn(3, generator=second), a)


@pytest.mark.parametrize("spec", ["zo[q=3]", "zo[crns=true,q=3]", "zo[q=2,estimator=fd]"])
def test_zo_step_is_capture_safe_and_replays_the_eager_trajectory(spec):
    """zo's captured step (theta perturbed in place and back, W0's z0 regenerated four times a
    step from four pool generators armed with one seed; MeZO's setting, crns=true, with its
    dense momentum) is one graph and gives the eager trajectory bit for bit."""
    spec = spec[:-1] + f",{SMALL},cuda_graph=true]"
    steps = 6
    solver, sims = _captured_equals_eager(spec, steps)
    assert len(sims.generators) == len(solver.generator_seeds())
    assert len(sims.reports) == 1 + steps - solver.graphed.warmup


def test_sdze_cuda_graph_options_are_checked():
    for bad in ("refresh=2", "crns=false", "subspace=false", "basis=orthonormal", "stream=true",
                "loss=gpinn", "dist=coordinate"):
        with pytest.raises(ValueError, match=rf"cuda_graph=true\] does not support {bad}"):
            solver_from_spec(f"sdze[{bad},cuda_graph=true]").validate()
    for bad in ("stream=true", "loss=gpinn", "dist=coordinate"):
        with pytest.raises(ValueError, match=rf"cuda_graph=true\] does not support {bad}"):
            solver_from_spec(f"zo[{bad},cuda_graph=true]").validate()
    solver_from_spec("zo[crns=false,cuda_graph=true]").validate()
    for name in ("sdze", "zo"):  # a sharded cell would replay the collectives outside the group
        why = solver_from_spec(f"{name}[cuda_graph=true]").shard_unsupported()
        assert "drop cuda_graph=true" in why
        assert solver_from_spec(name).shard_unsupported() == ""
    solver = _zeroth_order(f"sdze[{SMALL},cuda_graph=true]", "cpu")
    assert solver.graphed is None and torch.isfinite(solver.step())
