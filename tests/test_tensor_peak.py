"""pinnbench.memory.cpu_tensor_peak_bytes, the exact CPU tensor peak of a call (the ``peak MiB``
column of ``python -m pinnbench.bench ops``), against programs whose peak is known by hand."""

import pytest
import torch

from pinnbench.bench.ops import count_step
from pinnbench.memory import cpu_tensor_peak_bytes

F32 = 4


def test_the_peak_of_a_known_program():
    """a (1000) and b (3000) alive together, then a freed before c (500): the peak is a + b."""

    def program():
        a = torch.empty(1000)
        b = torch.empty(3000)
        del a
        c = torch.empty(500)
        return b, c

    assert cpu_tensor_peak_bytes(program) == (1000 + 3000) * F32


def test_temporaries_of_an_expression_count():
    """x * two + one holds x, the product and the sum at once: three (n,) tensors at the peak
    (the product is freed only once the sum exists; ``two`` and ``one`` are tensors made before
    the call, where Python numbers would add their wrapped 0-d tensors)."""
    n = 10_000
    two, one = torch.tensor(2.0), torch.tensor(1.0)

    def program():
        x = torch.ones(n)
        return x * two + one

    assert cpu_tensor_peak_bytes(program) == 3 * n * F32


def test_tensors_allocated_before_the_call_and_their_frees_do_not_count():
    """The call's own tensors only: freeing an older (10000) tensor does not lower the level
    below the call's start, so the later (2000) tensor is the whole peak."""
    older = [torch.ones(10_000)]

    def program():
        older.clear()
        return torch.ones(2000)

    assert cpu_tensor_peak_bytes(program) == 2000 * F32


def test_the_step_peak_is_deterministic_and_grows_with_what_a_step_holds():
    """Two counts of the same step give the same bytes (what asv tracks exactly), and sdze's
    peak grows with its 2q networks (q = 4 to 8: the hidden jets of 16 networks instead of 8,
    about twice the peak), where bp's does not depend on q."""
    a = count_step("sdze[points=20,probes=4,momentum=0]", 50, width=32)
    b = count_step("sdze[points=20,probes=4,momentum=0]", 50, width=32)
    assert a.step_peak_bytes == b.step_peak_bytes > 0
    q4 = count_step("sdze[points=20,probes=4,momentum=0,q=4]", 50, width=32).step_peak_bytes
    q8 = count_step("sdze[points=20,probes=4,momentum=0,q=8]", 50, width=32).step_peak_bytes
    assert 1.6 * q4 < q8 < 2.4 * q4, (q4, q8)


@pytest.mark.usefixtures("one_thread")
def test_sdze_and_bp_step_peaks_at_the_quick_starts_d_do_not_grow():
    """The step's own tensors at the defaults, d = 100 (poisson-2body-v1, width 128, 100
    points, 16 probes): sdze 120.3 MiB (its 2q = 16 networks' jets, evaluated as one batch),
    bp 14.0 MiB, measured 2026-12-05; bounded so that neither grows unseen. A cell's CPU peak
    (the resident set) read 414, 196 and 621 MiB for sdze in three runs of the quick start at
    d = 100 (bp 31 to 35): the heap's slack, not the step's tensors (docs/protocol.md, "Peak
    memory")."""
    sdze, bp = (count_step(s, 100).step_peak_bytes / 2**20 for s in ("sdze", "bp"))
    assert 100 < sdze <= 121, sdze
    assert 5 < bp <= 15, bp


def test_live_tensor_bytes_count_each_storage_once():
    """pinnbench.memory.cpu_tensor_bytes: a new (1000) tensor, a view of it and a (500) tensor
    in a list add 1500 numbers (the view shares its base's storage); freeing them takes the
    figure back."""
    from pinnbench.memory import cpu_tensor_bytes

    before = cpu_tensor_bytes()
    x = torch.ones(1000)
    view = x[:10]
    held = [torch.ones(500)]
    assert cpu_tensor_bytes() - before == 1500 * F32
    del x, view, held
    assert cpu_tensor_bytes() == before


def test_live_tensor_bytes_after_torch_compile():
    """A process that has compiled holds dead weak proxies and fake tensors among its objects:
    ``isinstance`` on the first raises ReferenceError, a data pointer of the second raises.
    The scan skips both instead of failing the cell it runs in (it did: every cell of a test
    worker that had compiled before became an error)."""
    from pinnbench.memory import cpu_tensor_bytes

    @torch.compile
    def f(x):
        return (x * 2).sin() + 1

    f(torch.ones(10))
    before = cpu_tensor_bytes()
    x = torch.ones(100)
    assert cpu_tensor_bytes() - before == 100 * F32
    del x
