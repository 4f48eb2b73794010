"""The ops counter (pinnbench.bench.ops): its counts on hand-made programs whose every op is known,
and what a step of each default solver may dispatch: no ``aten::equal``, no host sync in the
middle of a step beyond the ones named here (a new ``.item()``, ``float()`` or ``bool()`` of a
tensor inside a step fails these tests)."""

import pytest
import torch

from pinnbench.maths import fused
from pinnbench.bench import ops
from pinnbench.bench.ops import count, count_step
from pinnbench.solver import format_spec, parse_spec

H, D, N = 4, 1000, 3


def _with(spec: str, **params) -> str:
    """``spec`` with ``params`` added: ``_with("sdze[stream=true]", points=10)`` ->
    ``"sdze[points=10,stream=true]"``."""
    name, given = parse_spec(spec)
    return format_spec(name, {**given, **params})


@pytest.fixture
def w0():
    return torch.ones(H, D)


def test_products_sweeps_and_traffic_of_a_known_program(w0):
    x = torch.ones(N, D)

    def program():
        x @ w0.T              # 1 product, reads W0 (a sweep) and x (N/H of W0's bytes)
        w0.t()                # a view: no sweep, no traffic
        w0.add_(1.0)          # in place: one sweep; W0 read and written: 2 W0 of traffic
        w0[:, : D // 2].mul_(2.0)  # half of W0, in place: half a sweep, 2 x 0.5 W0 traffic
        torch.addmm(torch.zeros(N, H), x, w0.T)  # a second product and sweep
        torch.zeros(N, H).addmm_(x, w0.T)  # in place: a third product and sweep

    c = count(program, w0, D)
    assert c.matrix_products == 3
    assert c.w0_sweeps == pytest.approx(4.5)
    # mm: x (0.75) + W0 (1); add_: W0 in and out (2); mul_: half W0 in and out (1);
    # addmm, addmm_: x + W0 (1.75) each; the (N, H) results are below d elements
    assert c.d_traffic_w0 == pytest.approx(0.75 + 1 + 2 + 1 + 1.75 + 1.75)
    assert c.host_syncs == 0
    # results in new storages: mm's and addmm's, and the two zeros
    assert c.allocations == 4


def test_host_syncs_and_where_they_are(w0):
    x = torch.randn(N, D, generator=torch.Generator().manual_seed(0))

    def program():
        float(x.sum())            # _local_scalar_dense, then more ops: mid-step
        torch.equal(x, x)         # aten::equal
        x[x > 0]                  # a boolean mask: nonzero inside, data-dependent shape
        x[0, :3].tolist()         # a Python-side read (no dispatched op on the CPU)
        x.sum().item()            # the last op of the program: not mid-step

    c = count(program, w0, D)
    assert c.sync_ops == {"aten::_local_scalar_dense": 2, "aten::equal": 1,
                          "aten::index (boolean mask)": 1, ".tolist()": 1}
    assert c.host_syncs == 5
    assert c.mid_step_syncs == 4


def test_a_compiled_region_counts_as_one_op_with_its_inputs_and_outputs(w0, monkeypatch):
    """A region that would run compiled is not opened by the mode: one op, and its inputs and
    outputs are its traffic (here the compiled callable is the eager function itself, so that
    the test needs no compiler)."""
    x = torch.ones(N, D)

    def source(t):
        return (t * t).sum(dim=1) + t.mean(dim=1)  # 4 ops if opened

    region = fused.Fused(source)
    region._compiled = source
    monkeypatch.setattr(fused, "compile_allowed", lambda device=None: True)
    c = count(lambda: region(x), w0, D)
    assert c.compiled_regions == 1 and c.ops == 1
    assert c.d_traffic_w0 == pytest.approx(N / H)  # x read; the (N,) result is small
    monkeypatch.setattr(fused, "compile_allowed", lambda device=None: False)
    eager = count(lambda: region(x), w0, D)
    assert eager.compiled_regions == 0 and eager.ops >= 4


def test_counts_are_deterministic():
    a = count_step("sdze[points=5,probes=3]", 50, width=16)
    b = count_step("sdze[points=5,probes=3]", 50, width=16)
    assert a == b


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("solver", ["bp", "sdze", "zo", "sdze[stream=true]", "zo[stream=true]"])
def test_a_default_step_makes_no_host_sync(solver):
    """Nothing is read back in a step: bp returns its loss as a 0-d tensor, which the cell
    runner reads only at the evaluations (pinnbench/cells/loss_watch.py); zo and sdze too, and
    their step seed is derived on the host from the base seed and the step's index (it was drawn
    from the solver's generator: one sync a step, until 2026-12-04). Streamed step data derive
    their points' and probes' seeds from the sample's integer seeds on the host (they drew them
    from two generators on the device: two syncs a step, until 2026-12-05). An `.item()`, a
    `float()`, a `bool()` or an `aten::equal` cache lookup in a step fails here."""
    c = count_step(_with(solver, points=10, probes=4), 200, width=32)
    assert c.sync_ops == {} and c.host_syncs == 0 == c.mid_step_syncs, c.sync_sites


@pytest.mark.usefixtures("one_thread")
def test_sdze_evaluates_its_2q_networks_as_one_batch():
    """The 2q perturbed losses come from one batched pass, so the matrix products of a step do
    not depend on q, and each further perturbation adds only its own draws (one Xi per low-rank
    matrix, one Gaussian per bias and thin matrix), its stacking and its term of the update: at
    most 25 ops without momentum (one at a time, 260: two more evaluations of the network). With
    the study's momentum 0.9 each also adds its term to the dense parameters' g_hat before the
    momentum step (a product and a sum per tensor): 32, counted when the defaults moved."""
    c1, c8 = (count_step(f"sdze[points=10,probes=4,q={q},momentum=0]", 200, width=32)
              for q in (1, 8))
    assert c8.matrix_products == c1.matrix_products
    assert (c8.ops - c1.ops) / 7 <= 25, (c1.ops, c8.ops)


@pytest.mark.usefixtures("one_thread")
def test_sdze_meets_the_step_targets_at_the_issues_configuration():
    """Issue 22's targets for sdze's step, at the configuration they were set for (the defaults
    then: width 128, 100 points, 16 probes, q = 4, rank 8, no momentum): at most 40 matrix
    products and 400 ATen ops. Counted at d = 1000, where the closed forms of the source run
    eagerly, op by op (at d >= 65,536 each compiled call is one op: docs/roofline.md has the
    counts at 1e5, a few ops fewer). At the study's defaults (q = 8, rank 7, momentum 0.9:
    twice the evaluations, and a momentum term of each of the last 44 bases) the stationary
    step (after ``steady_state_steps``) now meets the same targets, with 386 ops and 26 matrix
    products, which the second part bounds so that they do not grow (385 before the quotients'
    scale kept its step count in a device tensor, updated in place, for the captured step: its
    power and its 1 - beta2^t became ops; 26 since the counter
    counts the in-place products, ``addmm_``, as it always should have: 23 of the old count;
    389 ops before the momentum drew its V_e^T into one block instead of concatenating
    them, which took an op and a draw's allocation, as the op a draw into a view takes): 1066
    and 151 with the
    momentum's terms one by one (each scaled, formed and its V regenerated at every update),
    before they were stacked; 475 before the quotients' scale became one tensor's ops (3q + 8
    of them on q 0-d tensors); 455 and 22 before the perturbations' small parts became one
    draw (8 q draws and their stacks; the update's sums over k one product, the 23rd).
    Counted after one warm-up step, as before that, it had 559 and 25 (one term)."""
    c = count_step("sdze[q=4,rank=8,momentum=0]", 1000)
    assert c.matrix_products <= 40, c.matrix_products
    assert c.ops <= 400, c.ops
    c = count_step("sdze", 1000)
    assert c.matrix_products <= 26, c.matrix_products
    assert c.ops <= 386, c.ops


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("spec, target", [("sdze[q=4,rank=8,momentum=0]", 20.0), ("bp", 25.0)])
def test_d_traffic_at_1e5_meets_the_issues_targets(spec, target):
    """Issue 22's d-sized traffic targets at d = 1e5, where they were set: sdze <= 20 W0 at the
    configuration of its targets (q = 4, rank 8, no momentum: 19.00 W0) and bp <= 25 W0 at its
    defaults (20.40), both with at most 3 sweeps over W0. A copy of the (100, 1e5) points
    reads and writes 0.78 W0 each, so one more pass over them fails the first (planted in
    ``radius_uniform_ball``: 20.57). At sdze's study defaults the same step counts 29.58 W0: q = 8 and rank 7 add 5.77
    (the hidden jets of 2q networks count as d-sized at d <= 4e5) and the momentum 4.81 (44 V_e^T drawn into the update's block and read by its product;
    docs/roofline.md)."""
    c = count_step(spec, 100_000)
    assert c.d_traffic_w0 <= target, c.d_traffic_w0
    assert c.w0_sweeps <= 3.0, c.w0_sweeps


@pytest.mark.usefixtures("one_thread")
def test_bp_step_ops_at_its_defaults_do_not_grow():
    """bp's step at its defaults (stde, width 128, 100 points, 16 probes): the ops reached by the
    fused hidden layers' backward on the stacked cotangent (docs/roofline.md, "bp's hidden
    layers as one autograd node) and its gradients by ``torch.autograd.grad`` (no accumulation
    into ``.grad``, no zero_grad), its block sums started from the first block, and no op for
    an exact 0 or 1 (the ball's B = 0, a linear operator's pointwise 0, a coefficient 1, the
    unit ball's 1 / R^2; 1 - J as one op for the value), the first layer inside the node
    (W0's gradient one matrix, the second product accumulated into it by addmm_), the backward
    seeded by a 1 made once, the ball's A jet without a negation per coefficient, and only the
    coefficients of u the residual reads (a linear operator's: D_v^2 u alone, no u_0, u_1):
    200 at d = 1e5, issue 22's target (<= 200) met. Counted at d = 1000: 211 (216 forming every
    coefficient of u, 220 with the first two, 227 with the first layer outside the node: two
    d-sized gradients and their sum; 236 before the 0/1 rules, 238 with a zeros tensor for B,
    246 with zeroed accumulators, 256 with backward(), 294 before the stacked node), with no
    more W0 sweeps and host syncs than before."""
    c = count_step("bp", 1000)
    assert c.ops <= 211, c.ops
    assert c.kernels <= 147, c.kernels
    assert c.allocations <= 120, c.allocations
    # 17 since the counter counts the node's addmm_ (16 of the old count)
    assert c.matrix_products <= 17, c.matrix_products
    assert c.w0_sweeps <= 3.0 and c.host_syncs == 0, (c.w0_sweeps, c.host_syncs)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("spec", ["bp[dist=coordinate]", "bp[dist=gaussian]",
                                  "bp[estimator=hte]", "bp[estimator=sdgd]",
                                  "bp[estimator=sdgd,loss=unbiased]"])
def test_a_bp_step_makes_no_host_sync_with_any_estimator(spec):
    """Sampled coordinates included (SDGD, sparse STDE): Floyd's sampling runs on the device
    (pinnbench/maths/estimators/probes.py), not through a `.tolist()` of its uniforms."""
    c = count_step(spec.replace("]", ",points=10,probes=4]"), 200, width=32)
    assert c.host_syncs == 0, c.sync_sites


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("solver", ["bp", "sdze", "zo"])
def test_a_step_sweeps_w0_at_most_three_times(solver):
    """sdze and bp: W0 read by the products with the points and probes, written by the update
    (zo perturbs it in place, its design: docs/roofline.md: per perturbation three moves and two
    evaluations, then the update: one sweep with its dense momentum, one per perturbation
    without, 7q + 1 or 8q)."""
    from pinnbench.solver import solver_from_spec

    c = count_step(f"{solver}[points=10,probes=4]", 200, width=32)
    s = solver_from_spec(solver)
    limit = 3 if solver != "zo" else (7 * s.q + 1 if s.momentum > 0 else 8 * s.q)
    assert c.w0_sweeps <= limit


def test_the_table_and_json(tmp_path, capsys):
    out = tmp_path / "ops.json"
    assert ops.main(["--dims", "50", "--solvers", "bp[points=5,probes=3]", "--width", "16",
                     "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:6] == ["d", "solver", "ops", "kernels", "mm", "syncs"]
    row = lines[2].split()
    import json

    rec = json.loads(out.read_text())[0]
    assert rec["dim"] == 50 and rec["solver"] == "bp[points=5,probes=3]"
    assert int(row[2]) == rec["ops"] and int(row[3]) == rec["kernels"]
    assert int(row[4]) == rec["matrix_products"]
    assert rec["ops"] > rec["matrix_products"] > 0


def test_views_the_schema_does_not_mark_move_no_data(w0):
    """A batched product folds into mm and unfolds its result with ``_unsafe_view`` (a view the
    schema does not mark): only the mm moves data."""
    a, b = torch.ones(2, N, H), torch.ones(H, D)
    c = count(lambda: a @ b, w0, D)
    assert c.matrix_products == 1
    # mm: b (H x D = 1 W0) in, the (2 N) x D result (1.5 W0) out; a is below d elements
    assert c.d_traffic_w0 == pytest.approx(2.5)
    assert c.allocations == 1
    assert c.kernels == 1 < c.ops  # the views around the mm launch nothing


def test_traffic_by_site_adds_up_to_the_total(w0):
    """--traffic: each (line, op)'s share of the d-sized traffic; the shares sum to the total."""
    x = torch.ones(N, D)

    def program():
        x @ w0.T
        w0.add_(1.0)

    plain, by_site = count(program, w0, D), count(program, w0, D, by_site=True)
    assert plain.traffic_sites == {}
    assert by_site.d_traffic_w0 == pytest.approx(plain.d_traffic_w0)
    assert sum(by_site.traffic_sites.values()) == pytest.approx(by_site.d_traffic_w0)
    ops_seen = {site.rsplit(" ", 1)[1] for site in by_site.traffic_sites}
    assert ops_seen == {"aten::mm", "aten::add_"}
    assert max(by_site.traffic_sites.values()) == pytest.approx(2.0)  # W0 in and out


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("solver", ["sdze", "bp", "zo[crns=true]"])
def test_a_step_reads_its_batch_for_the_squared_norm_once(solver, monkeypatch):
    """s = ||x||^2 of the step's batch serves both the source and the ansatz (one read of the
    n x d batch and one block temporary fewer: 2.3 W0 at d = 1e5)."""
    from pinnbench.bench.solvers import build
    from pinnbench.problems import _chunked

    _, _, s, _ = build(dict(problem="poisson-2body-v1", dim=200, width=32, depth=3,
                            solver=_with(solver, points=10, probes=4), device="cpu"))
    s.step()
    calls = []
    row_sum = _chunked.row_sum
    monkeypatch.setattr(_chunked, "row_sum", lambda *a: calls.append(a[0].shape) or row_sum(*a))
    s.step()
    assert len(calls) == 1, calls


def test_an_out_tensor_is_written_not_read(w0):
    """``torch.mul(a, b, out=c)`` reads a and b and writes c (in place, ``c.mul_(b)``, reads and
    writes c)."""
    a, b, c = torch.ones(N, D), torch.ones(N, D), torch.empty(N, D)
    assert count(lambda: torch.mul(a, b, out=c), w0, D).d_traffic_w0 == pytest.approx(3 * N / H)
    assert count(lambda: c.mul_(b), w0, D).d_traffic_w0 == pytest.approx(3 * N / H)


def test_a_tensor_overwritten_in_place_is_written_not_read(w0):
    """An op that overwrites its tensor without reading it (a random draw in place, a fill, a
    copy into it) writes it as an ``out=`` tensor is: ``torch.randn(..., out=c)`` (a
    ``resize_`` to c's own size, metadata only, then ``normal_``) moves c's bytes once, as the
    fresh ``torch.randn`` does, allocates nothing, and launches one kernel."""
    a, c = torch.ones(N, D), torch.empty(N, D)
    g = torch.Generator().manual_seed(0)
    fresh = count(lambda: torch.randn(N, D, generator=g), w0, D)
    into = count(lambda: torch.randn(N, D, generator=g, out=c), w0, D)
    assert fresh.d_traffic_w0 == into.d_traffic_w0 == pytest.approx(N / H)
    assert (into.ops, into.kernels, into.allocations) == (2, 1, 0)
    for fn in (lambda: c.normal_(generator=g), lambda: c.uniform_(generator=g),
               lambda: c.fill_(2.0), lambda: c.zero_()):
        one = count(fn, w0, D)
        assert one.d_traffic_w0 == pytest.approx(N / H) and one.allocations == 0
    copied = count(lambda: c.copy_(a), w0, D)  # a read, c written
    assert copied.d_traffic_w0 == pytest.approx(2 * N / H) and copied.allocations == 0
    grown = torch.empty(0)
    assert count(lambda: grown.resize_(N, D), w0, D).allocations == 1


def test_writing_an_out_tensor_allocates_nothing(w0):
    """An ``out=`` buffer exists before the op, as an in-place op's operand does: neither
    allocates; the op's own result does."""
    a, b, c = torch.ones(N, D), torch.ones(N, D), torch.empty(N, D)
    two = count(lambda: (torch.mul(a, b, out=c), torch.mul(a, b, out=c)), w0, D)
    assert two.ops == 2 and two.allocations == 0
    assert count(lambda: c.mul_(b), w0, D).allocations == 0
    assert count(lambda: torch.mul(a, b), w0, D).allocations == 1


def test_an_allocation_alone_moves_no_data(w0):
    """``torch.empty`` allocates (one in ``allocations``) but launches nothing and moves no
    bytes; ``torch.zeros`` writes its result."""
    c = count(lambda: torch.empty(N, D), w0, D)
    assert (c.ops, c.kernels, c.allocations, c.d_traffic_w0) == (1, 0, 1, 0.0)
    z = count(lambda: torch.zeros(N, D), w0, D)
    assert z.kernels == 1 and z.d_traffic_w0 == pytest.approx(N / H)


@pytest.mark.parametrize("order", [0, 2, 4])
def test_block_sums_start_from_the_first_block(w0, monkeypatch, order):
    """Row sums over k column blocks dispatch k blocks' ops and k - 1 additions per sum: no
    zeroed accumulator and no addition of the first block to it (two ops a sum fewer, the same
    numbers: 0 + s = s)."""
    from pinnbench.problems import _chunked
    from pinnbench.problems._many_body import TwoBody

    monkeypatch.setattr(_chunked, "BLOCK_ELEMENTS", 4 * 10)  # 4 rows: blocks of 10 columns
    x = torch.randn(4, 30, generator=torch.Generator().manual_seed(0))
    c = torch.randn(TwoBody.n_coefficients(30), generator=torch.Generator().manual_seed(1))
    blocks = list(_chunked.column_blocks(4 * TwoBody.temporaries(order), c.shape[0]))
    assert len(blocks) >= 3
    one = [count(lambda a=a, b=b: TwoBody._block(x[:, a:b + 1], c[a:b], order), w0, 30).ops
           for a, b in blocks]
    keys = TwoBody._keys(order)
    sums = count(lambda: TwoBody.sums(x, c, order), w0, 30)
    assert sums.ops == sum(one) + (len(blocks) - 1) * len(keys)
    per_block = [TwoBody._block(x[:, a:b + 1], c[a:b], order) for a, b in blocks]
    got = TwoBody.sums(x, c, order)
    for k in keys:
        want = per_block[0][k].clone()
        for part in per_block[1:]:
            want += part[k]
        assert torch.equal(got[k], want)

    s_blocks = list(_chunked.column_blocks(4, 30))
    assert count(lambda: _chunked.row_sum(x, torch.square), w0, 30).ops == \
        3 * len(s_blocks) + len(s_blocks) - 1  # slice, square, sum per block; the additions
    assert torch.equal(_chunked.row_sum(x, torch.square),
                       sum((x[:, a:b] ** 2).sum(1) for a, b in s_blocks))


@pytest.mark.usefixtures("one_thread")
def test_a_step_is_counted_where_its_cost_is_stationary():
    """sdze's low-rank momentum keeps one term per basis until beta^age < MOMENTUM_DROP (44 at
    beta 0.9) and regenerates every live term's V at each update, so a step costs more each step
    until that horizon is full: at d = 1e5 after 1 warm-up step 548 ops and 22 matrix products,
    after 60 steps 1055 and 148 (measured with the terms one by one; stacked since, the ops stay
    near 433-475 and the traffic grows with the terms). A step counted after one warm-up is not
    the step the solver runs; the bench warms up for the solver's ``steady_state_steps``
    (before: 1)."""
    spec = "sdze[points=5,probes=3]"
    from pinnbench.solver import solver_from_spec

    n = solver_from_spec(spec).steady_state_steps
    assert n == 45  # 44 live terms at beta 0.9, then one refresh period
    default, later = count_step(spec, 50, width=16), count_step(spec, 50, width=16, warmup=n + 7)
    assert (default.ops, default.matrix_products, default.d_traffic_w0) == \
        (later.ops, later.matrix_products, later.d_traffic_w0)
    early = count_step(spec, 50, width=16, warmup=1)  # what the old default counted
    # 452 vs 722 W0 (44 terms' state; 456 vs 787 before the V_e^T were drawn into one block)
    assert early.d_traffic_w0 < 0.7 * default.d_traffic_w0
    # no growing state: one warm-up step is the stationary step
    assert solver_from_spec("sdze[momentum=0]").steady_state_steps == 1
    assert solver_from_spec("sdze[subspace=false]").steady_state_steps == 1
    assert solver_from_spec("zo").steady_state_steps == 1
    assert solver_from_spec("bp").steady_state_steps == 1
    assert solver_from_spec("sdze[refresh=10]").steady_state_steps == 54
