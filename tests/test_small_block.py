"""The small parts of a step's perturbations as one draw (solvers/_zo_perturbations.py,
``SmallBlock``): which numbers each perturbation reads, that a step draws them once whatever q,
and that the update's sum over the block (one product) is the in-order sum of the
perturbations one by one, to rounding."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pinnbench import make_model, make_problem, make_solver
from pinnbench.solvers._zo_optimiser import descend
from pinnbench.solvers._zo_perturbations import (Perturbation, draw_perturbations, make_bases,
                                                 one_block, stacked_small)


def _params(gen, dtype=torch.float64):
    shapes = [(12, 30), (12,), (12, 12), (12,), (1, 12), (1,)]
    return [torch.randn(*s, generator=gen, dtype=dtype) for s in shapes]


def test_each_perturbation_reads_its_own_row_in_parameter_order():
    params = _params(torch.Generator().manual_seed(0))
    bases = make_bases(params, rank=3, seed=1)
    assert [b is not None for b in bases] == [True, False, True, False, False, False]
    zs = draw_perturbations(params, step_seed=7, q=5, bases=bases)
    block = one_block(zs)
    assert block is not None and block.flat.shape == (5, 9 + 12 + 9 + 12 + 12 + 1)
    for k, z in enumerate(zs):
        row, at = block.flat[k], 0
        for i, part in enumerate([(3, 3), (12,), (3, 3), (12,), (1, 12), (1,)]):
            n = torch.Size(part).numel()
            assert torch.equal(z.part(i), row[at:at + n].view(part)), (k, i)
            at += n
        assert torch.equal(z.xis[0], z.part(0)) and z.xis[1] is None
        # a low-rank z_i is U Xi V^T / r of its row's Xi, a full Gaussian one is the row itself
        torch.testing.assert_close(z.dense(2), bases[2].u @ z.part(2) @ bases[2].v_dense().T / 3)
        assert torch.equal(z.dense(4), z.part(4))
    # the rows are the perturbations' own: no two alike, and another step seed draws others
    assert not torch.equal(zs[0].part(1), zs[1].part(1))
    assert not torch.equal(draw_perturbations(params, 8, 5, bases)[0].part(1), zs[0].part(1))
    # the batched evaluation reads the block's columns, the same numbers as stacking the rows
    for i in range(1, 6):
        assert torch.equal(stacked_small(zs, i), stacked_small(zs[::-1], i).flip(0)), i


def test_a_standalone_perturbation_draws_its_own_row_and_z0_from_its_seed():
    params = _params(torch.Generator().manual_seed(0))
    bases = [None] * len(params)
    a, b = Perturbation(params, 11, bases), Perturbation(params, 11, bases)
    assert a.block.flat.shape[0] == 1
    assert all(torch.equal(a.dense(i), b.dense(i)) for i in range(len(params)))
    assert not torch.equal(a.dense(1), Perturbation(params, 12, bases).dense(1))
    with pytest.raises(ValueError, match="block"):
        a.gaussian(1)


@pytest.mark.parametrize("momentum", [None, 0.9])
@pytest.mark.parametrize("subspace", [True, False])
def test_the_update_over_the_block_is_the_in_order_sum(subspace, momentum):
    """descend on one block's rows (the sum over k one product, c^T block) against the same
    perturbations in reverse order (not one block: the in-order sums, perturbation by
    perturbation, as before the block): the same update to float64 rounding."""
    from pinnbench.solvers._zo_optimiser import HeavyBall

    gen = torch.Generator().manual_seed(3)
    params = _params(gen)
    bases = make_bases(params, rank=3, seed=1) if subspace else [None] * len(params)
    zs = draw_perturbations(params, 5, 4, bases)
    c = torch.randn(4, generator=gen, dtype=torch.float64)
    a, b = [p.clone() for p in params], [p.clone() for p in params]
    ma, mb = (None, None) if momentum is None else (HeavyBall(momentum), HeavyBall(momentum))
    for _ in range(2):
        descend(a, zs, c, 1e-2, ma)
        descend(b, zs[::-1], c.flip(0), 1e-2, mb)
    moved = max((x - p).abs().max().item() for x, p in zip(b, params))
    assert moved > 1e-4
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12 * max(1.0, moved))


class _Randn(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += func.overloadpacket.__name__ in ("randn", "normal", "normal_")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("spec", ["sdze[momentum=0,points=8,probes=2]",
                                  "zo[points=8,probes=2]"])
def test_a_step_draws_its_small_parts_once_whatever_q(spec):
    """The step's draws do not grow with q but for W0's own (zo's full Gaussian z0_k, one per
    perturbation): 8 q + 8 draws for sdze's step at the defaults before the block."""

    def draws(q):
        name = spec.split("[")[0]
        problem = make_problem("poisson-2body-v1", dim=20, seed=0)
        g = torch.Generator().manual_seed(0)
        model = make_model(problem, width=16, depth=3, generator=g)
        s = make_solver(spec.replace("[", f"[q={q},"), problem, model, generator=g)
        s.step()
        with _Randn() as mode:
            s.step()
        return mode.n, name

    (n1, name), (n8, _) = draws(1), draws(8)
    # zo, per perturbation: W0's z0_k for +eps, -2 eps, +eps and the update (4 draws), and the
    # probes of its two evaluations (without common random numbers each draws its own sample)
    assert n8 - n1 == (0 if name == "sdze" else (4 + 2) * 7), (n1, n8)


def test_the_block_seed_is_no_other_draw_of_the_step():
    """The step's other seeds (s, 1, k) (perturbations), (s, 2), (s, 3) (the common sample) and
    (s, 4 | 5, k, +-) (the samples without common random numbers) must not give the block's
    numbers: a shared seed would make the perturbations the points' own random numbers. A first
    version drew the block from (s, 2), the common sample's points."""
    from pinnbench.seeds import derive_seed, generator

    params = _params(torch.Generator().manual_seed(0), dtype=torch.float32)
    s = 12345
    flat = draw_perturbations(params, s, 2, [None] * len(params))[0].block.flat
    others = [(s, 1, 0), (s, 1, 1), (s, 2), (s, 3), (s, 4, 0, 1), (s, 5, 0, 1)]
    for parts in others:
        # the first 8 numbers of a generator's draw do not depend on the draw's size
        first = torch.randn(flat.numel(), generator=generator(derive_seed(*parts), "cpu"))
        assert not torch.equal(first[:8], flat.flatten()[:8]), parts
