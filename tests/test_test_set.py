"""The fixed test set: drawn by a CPU generator, kept in host memory (never on the GPU) and, for
GPU cells, kept whatever its size so that D = 10^7 is not drawn again at every evaluation."""

import torch

import pinnbench.maths.problem as problem_mod
from pinnbench import make_problem
from pinnbench.judge.metrics import evaluate


def _count_draws(p, monkeypatch):
    calls = []
    real = p.sample_interior

    def counting(n, generator):
        calls.append(n)
        return real(n, generator)

    monkeypatch.setattr(p, "sample_interior", counting)
    return calls


def _pretend_cuda(p, monkeypatch):
    """The problem believes it is on a GPU; the copies to the device are identities here."""
    p.device = torch.device("cuda")
    monkeypatch.setattr(p, "_to_device", lambda t: t)


def test_large_test_set_is_drawn_again_on_cpu_but_kept_in_host_memory_for_gpu_cells(monkeypatch):
    monkeypatch.setattr(problem_mod, "TEST_SET_ELEMENTS", 1000)  # 100 points x 50 > 1000
    model = lambda x: x.sum(dim=1) * 0.0  # noqa: E731 - a fixed "model": u = 0

    cpu = make_problem("poisson-2body-v1", dim=50, seed=0)
    cpu_draws = _count_draws(cpu, monkeypatch)
    first = evaluate(model, cpu)
    assert not cpu.keeps_test_points() and evaluate(model, cpu) == first
    assert len(cpu_draws) == 2  # drawn again: a CPU cell's resident memory stays small

    gpu = make_problem("poisson-2body-v1", dim=50, seed=0)
    _pretend_cuda(gpu, monkeypatch)
    gpu_draws = _count_draws(gpu, monkeypatch)
    assert gpu.keeps_test_points()
    assert evaluate(model, gpu) == first  # same set on every device (CPU generator)
    assert evaluate(model, gpu) == first and len(gpu_draws) == 1  # drawn once, then kept
    assert all(t.device.type == "cpu" for t in gpu._test_points + gpu._test_exact)


def test_gpu_cells_do_not_keep_a_test_set_larger_than_half_the_free_host_memory(monkeypatch):
    p = make_problem("poisson-2body-v1", dim=50, seed=0)
    p.device = torch.device("cuda")
    nbytes = p.n_test * p.input_dim * 4
    monkeypatch.setattr(problem_mod.memory, "available_host_bytes", lambda: 2 * nbytes)
    assert p.keeps_test_points()
    monkeypatch.setattr(problem_mod.memory, "available_host_bytes", lambda: 2 * nbytes - 2)
    assert not p.keeps_test_points()
