"""pinnbench.maths.fused: closed forms compiled at large d, eager otherwise, and never a failure when
compiling is impossible. The real compile (30-60 s on this machine) is in the slow test."""

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch.overrides import TorchFunctionMode

from pinnbench.maths import fused
from pinnbench import make_problem
from pinnbench.problems import _chunked, _many_body


@pytest.fixture
def fresh(monkeypatch):
    """A process state where nothing was compiled or failed yet; torch.compile replaced by a stub
    that records what it was asked to compile (and returns the function itself)."""
    monkeypatch.setattr(fused, "_failure", [])
    monkeypatch.setattr(fused, "_used", [])
    monkeypatch.setattr(_many_body, "_FUSED", {})
    monkeypatch.delenv(fused.ENV, raising=False)
    compiled = []

    def stub(fn, **options):
        compiled.append((fn, options))

        def run(*args):
            run.calls += 1
            return fn(*args)

        run.calls = 0
        return run

    monkeypatch.setattr(torch, "compile", stub)
    return compiled


def test_sums_are_fused_from_min_columns_on_and_eager_below(fresh, monkeypatch):
    monkeypatch.setattr(fused, "MIN_COLUMNS", 64)
    small = make_problem("poisson-2body-v1", dim=63, seed=0)
    small.source(small.sample_interior(4, torch.Generator().manual_seed(0)))
    assert fresh == [] and "eager" in fused.status()
    big = make_problem("poisson-2body-v1", dim=64, seed=0)
    x = big.sample_interior(4, torch.Generator().manual_seed(0))
    f = big.source(x)
    assert [fn for fn, _ in fresh] == [_many_body.TwoBody._block]
    assert fresh[0][1] == {"dynamic": True, "fullgraph": True}
    assert fused.status().startswith("compiled")
    with monkeypatch.context() as m:  # the same numbers as the eager path (the stub is exact)
        m.setenv(fused.ENV, "0")
        assert torch.equal(big.source(x), f)


def test_compile_off_and_function_modes_run_eagerly(fresh, monkeypatch):
    calls = []
    f = fused.Fused(lambda x: calls.append(1) or x + 1)
    monkeypatch.setenv(fused.ENV, "0")
    assert torch.equal(f(torch.zeros(3)), torch.ones(3)) and fresh == []
    assert fused.status() == f"eager ({fused.ENV}=0)"
    monkeypatch.delenv(fused.ENV)
    class PassThrough(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with PassThrough():
        f(torch.zeros(3))
    assert fresh == [] and len(calls) == 2
    f(torch.zeros(3))
    assert len(fresh) == 1


def test_a_failed_compile_warns_once_and_stays_eager(fresh, monkeypatch):
    from torch._dynamo.exc import TorchDynamoException

    class BackendCompilerFailed(TorchDynamoException):
        pass

    def broken(fn, **options):
        def run(*args):
            raise BackendCompilerFailed("no C compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    f = fused.Fused(lambda x: x * 2)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        assert torch.equal(f(torch.ones(2)), torch.full((2,), 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no second try
        assert torch.equal(fused.Fused(lambda x: x - 1)(torch.ones(2)), torch.zeros(2))
    assert fused.status().startswith("eager (compile failed: BackendCompilerFailed")


def test_an_error_of_the_computation_itself_is_not_swallowed(fresh):
    f = fused.Fused(lambda x: x @ torch.ones(5))
    with pytest.raises(RuntimeError, match="size mismatch"):
        f(torch.ones(3, 4))
    assert fused._failure == []


COMPILED_SCRIPT = """
import json, sys, torch
from pinnbench.maths import fused
from pinnbench import make_problem
from pinnbench.memory import current_cpu_bytes, peak_cpu_bytes, reset_peak_cpu
torch.set_num_threads(1)
n, d = 16, 10**5
out = {}
for pid in ("poisson-2body-v1", "poisson-3body-v1"):
    p = make_problem(pid, dim=d, seed=0)
    x = p.sample_interior(n, torch.Generator().manual_seed(1))
    p.warm_up(n)
    reset_peak_cpu(); base = current_cpu_bytes()
    u, f = p.exact(x), p.source(x)
    peak = peak_cpu_bytes() - base
    import os; os.environ[fused.ENV] = "0"
    reset_peak_cpu(); base = current_cpu_bytes()
    ue, fe = p.exact(x), p.source(x)
    eager_peak = peak_cpu_bytes() - base
    del os.environ[fused.ENV]
    rel = max(float((a - b).abs().max() / b.abs().max()) for a, b in ((u, ue), (f, fe)))
    out[pid] = {"rel": rel, "peak": peak, "eager_peak": eager_peak, "input": x.numel() * 4}
out["status"] = fused.status()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_compiled_closed_forms_equal_eager_and_hold_no_temporaries():
    """At d = 1e5 the compiled two- and three-body solution and source agree with eager to 1e-5
    of their largest value (float32, reordered sums) and, once compiled, hold at most about one
    block-sized temporary (here the whole (16, 1e5) batch fits one block), no more than eager."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    env.pop(fused.ENV, None)
    res = subprocess.run([sys.executable, "-c", COMPILED_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=1200, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out.pop("status").startswith("compiled"), res.stderr[-2000:]
    for pid, m in out.items():
        assert m["rel"] < 1e-5, (pid, m)
        assert m["peak"] <= 1.25 * min(m["input"], 4 * _chunked.BLOCK_ELEMENTS), (pid, m)
        assert m["peak"] <= m["eager_peak"], (pid, m)


def test_by_default_only_cpu_batches_are_compiled(fresh, monkeypatch):
    """auto: CPU only (measured slower on a GPU); 1 compiles GPU batches too; 0 nothing."""
    cuda = torch.device("cuda")
    assert fused.compile_allowed(torch.device("cpu")) and not fused.compile_allowed(cuda)
    monkeypatch.setenv(fused.ENV, "1")
    assert fused.compile_allowed(cuda)
    monkeypatch.setenv(fused.ENV, "0")
    assert not fused.compile_allowed(torch.device("cpu"))
