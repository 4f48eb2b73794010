"""``python -m pinnbench.bench ops``: what one training step dispatches, counted exactly on the CPU.

What makes a GPU step slow beyond its arithmetic (docs/domain.md §8, docs/roofline.md) is the
same on every device and can be counted without one: each ATen op is (at least) one kernel
launch, each host sync stalls the launch queue until the device has caught up, each pass over
the first layer's weights W0 (h x d numbers) costs W0's bytes / bandwidth, and every tensor with
d or more elements that is written and read again is traffic of the same order. For each solver
spec at dimension d this builds the problem, the model and the solver (seed 0), takes one
warm-up step, then counts one step under a :class:`torch.utils._python_dispatch.TorchDispatchMode`
(:class:`OpCounter`):

``ops``
    ATen ops dispatched (views and metadata ops included: each is a call into the dispatcher),
    plus one per compiled region (see below).
``kernels``
    the ops that move data (not views, by the rule of ``W0 sweeps`` below), plus one per
    compiled region: what launches a kernel on a GPU (a view or a metadata op is a dispatcher
    call but no launch), so the closer proxy for a launch-bound step's time.
``mm``
    matrix products: the ops in :data:`MATRIX_PRODUCTS` (``linear`` and ``matmul`` reach the
    dispatcher as ``mm``/``addmm``/``bmm``).
``syncs``
    host syncs: a scalar read back (``_local_scalar_dense``: ``.item()``, ``float(t)``,
    ``bool(t)``), ops whose output shape depends on the data (:data:`SYNC_OPS`: ``nonzero``,
    ``masked_select``, ``unique``, ``equal``, ..., and indexing with a boolean mask), and the
    Python-side reads ``.tolist()``, ``.numpy()``, ``.cpu()`` (on the CPU these never reach the
    dispatcher, so they are counted by wrapping the three methods while counting; on a GPU each
    is a copy to the host that waits for the device), and ``torch.cuda.synchronize`` (counted on
    a GPU only: the CPU path never calls it; :meth:`pinnbench.solver.Solver.draw` times the data
    apart with two of them per step on CUDA, unless the solver sets ``time_data`` False). ``mid``: those of them after which the
    step dispatched more ops; each stalls the launch queue in the middle of the step, while a
    read of the step's returned loss at its very end (``Solver.step() -> float``) waits only for
    work the step has already launched, as the timing's own synchronisation does.
``allocs``
    op results whose storage is new (not one of the op's inputs' storages, nor an ``out=``
    buffer it writes). An op that only allocates (:data:`ALLOCATION_ONLY`: ``torch.empty``, ...)
    counts here and in ``ops``, and adds no kernel and no traffic: it moves no data.
``W0 sweeps``
    passes over W0's storage: for every op that moves data (not a view: neither an op the schema
    marks as one nor one whose results all share its inputs' storages without writing them,
    such as ``_unsafe_view``), the bytes of the largest of its
    operands and results that share W0's storage, divided by W0's bytes (an in-place update of
    W0 in four column chunks is one sweep; a product with W0 is one; a view of W0 is none).
``d-traffic``
    bytes of every operand and result (views excluded) with at least d elements, summed and
    divided by W0's bytes: a read of the n x d batch is n/h of a sweep; an in-place op on such
    a tensor counts it read and written, an ``out=`` tensor written only, and so is the tensor
    that an op of :data:`WRITE_ONLY` overwrites without reading it (a random draw in place,
    ``fill_``, ``zero_``, ``copy_``); ``resize_`` (:data:`METADATA_ONLY`) moves nothing and is
    no kernel. With ``--traffic``,
    the source lines (and ops) where it goes, largest first.
``peak MiB``
    the most MiB that the tensors a step allocates hold at once (state it finds not counted:
    :func:`pinnbench.memory.cpu_tensor_peak_bytes`), from one more stationary step after the
    counted one, run under the profiler's memory events: exact and deterministic, where a
    cell's CPU peak (the resident set's high-water mark) also holds what the C heap keeps and
    varies between runs (docs/protocol.md, "Peak memory"). CPU only (``-`` on a GPU).

**Compiled regions.** The closed forms of :mod:`pinnbench.maths.fused` run compiled
(``torch.compile``) on CPU batches of at least :data:`pinnbench.maths.fused.MIN_COLUMNS` coordinates.
A compiled region's inner ops do not reach a dispatch mode, so while counting,
:class:`pinnbench.maths.fused.Fused` is wrapped: the compiled call runs outside the mode, and counts as
one op (``compiled`` column: how many such calls a step makes) whose traffic is its inputs and
outputs, what a fused kernel must read and write at least; its internal temporaries are not
traffic (that is what compiling buys). Where the region would run eagerly (small d,
``PINNBENCH_COMPILE=0``), its ops are counted one by one.

The counts are deterministic for a spec, d and seed (no timing is involved), so asv tracks them
exactly (benchmarks/bench_ops.py) and tests/test_bench_ops.py asserts properties of them (no
``aten::equal`` and no host sync in a step beyond the ones it names). One torch thread; in this process (no isolation:
nothing is timed, and the memory of a step at d <= 1e5 is small).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback
from dataclasses import asdict, dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten

from pinnbench import memory
from pinnbench.bench import WARM

#: ATen ops that are matrix products (each one GEMM-like kernel)
MATRIX_PRODUCTS = frozenset({"mm", "addmm", "bmm", "baddbmm", "addbmm", "matmul", "linear",
                             "mv", "addmv", "dot", "vdot", "addr", "_addmm_activation",
                             "einsum", "tensordot"})
#: ATen ops that read data back to the host or whose output shape depends on the data
SYNC_OPS = frozenset({"_local_scalar_dense", "equal", "nonzero", "masked_select", "unique",
                      "_unique", "_unique2", "unique_dim", "unique_consecutive", "argwhere",
                      "is_nonzero", "allclose", "_assert_async"})
#: ATen ops that only allocate: no data moved, no kernel launched (their storage is counted in
#: ``allocs``)
ALLOCATION_ONLY = frozenset({"empty", "empty_like", "empty_strided", "new_empty",
                             "new_empty_strided"})
#: in-place ATen ops that overwrite their first argument without reading it (a random draw, a
#: fill, a copy into it): it is written, as an ``out=`` tensor is, not read and written
WRITE_ONLY = frozenset({"normal_", "uniform_", "random_", "exponential_", "cauchy_",
                        "log_normal_", "geometric_", "bernoulli_", "fill_", "zero_", "copy_"})
#: ATen ops that change a tensor's metadata only: ``resize_`` to the size a tensor has (what
#: ``torch.randn(..., out=t)`` dispatches before its ``normal_``) moves no data and launches
#: nothing; growing a storage counts in ``allocs``
METADATA_ONLY = frozenset({"resize_"})
#: Tensor methods that read values into Python (or copy to the host) without a dispatched op on
#: the CPU
PYTHON_READS = ("tolist", "numpy", "cpu")

DEFAULT_SPECS = "sdze;zo;bp"
DEFAULT_DIMS = "1e3,1e4"
#: the source files whose lines are reported as the sites of host syncs
_SITE_DIRS = ("/pinnbench/", "/solvers/", "/problems/")


@dataclass
class StepCounts:
    """The counts of one step (see the module docstring for each)."""

    ops: int = 0
    #: ops that move data (not views) and compiled regions: the kernels a GPU would launch
    kernels: int = 0
    matrix_products: int = 0
    host_syncs: int = 0
    #: host syncs after which the step dispatched more ops: each stalls the device's queue in
    #: the middle of a step (a read of the step's result at its very end does not)
    mid_step_syncs: int = 0
    allocations: int = 0
    w0_sweeps: float = 0.0
    d_traffic_w0: float = 0.0
    compiled_regions: int = 0
    #: the step's tensor peak in bytes (``peak MiB``), None where not measured (a GPU)
    step_peak_bytes: int | None = None
    #: op name -> count, for the ops that synchronise (``aten::equal``, ``.item()``, ...)
    sync_ops: dict = field(default_factory=dict)
    #: "file:line op" of each host sync, in order (where to look)
    sync_sites: list = field(default_factory=list)
    #: "file:line aten::op" -> its d-traffic in W0's bytes (where the bytes go; kept only when
    #: counted with ``by_site=True``, as finding the line costs a stack walk per op)
    traffic_sites: dict = field(default_factory=dict)


def _name(func) -> str:
    return func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _site() -> str:
    """file:line of the innermost frame in pinnbench's code outside this module."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        f = frame.filename.replace("\\", "/")
        if any(s in f for s in _SITE_DIRS) and not f.endswith("/bench/ops.py"):
            return f"{f.rsplit('/', 2)[-2]}/{f.rsplit('/', 1)[-1]}:{frame.lineno}"
    return "?"


class OpCounter(TorchDispatchMode):
    """Counts the ops of everything run inside it (see the module docstring).

    ``w0`` is the tensor whose passes are counted; ``dim`` the size from which an operand is
    d-sized traffic. Use :func:`count` rather than entering it directly: that also wraps the
    compiled regions and the Python-side reads."""

    def __init__(self, w0: torch.Tensor, dim: int, by_site: bool = False) -> None:
        super().__init__()
        self.by_site = by_site
        self.w0_storage = w0.untyped_storage().data_ptr()
        self.w0_bytes = w0.numel() * w0.element_size()
        self.dim = int(dim)
        self.counts = StepCounts()
        self._sync_at: list[int] = []  # ops dispatched before each host sync

    # -- what is recorded -----------------------------------------------------------------------
    def _sync(self, what: str) -> None:
        c = self.counts
        c.host_syncs += 1
        c.sync_ops[what] = c.sync_ops.get(what, 0) + 1
        c.sync_sites.append(f"{_site()} {what}")
        self._sync_at.append(c.ops)

    def finish(self) -> StepCounts:
        """The counts, with the syncs that more ops followed marked as mid-step."""
        self.counts.mid_step_syncs = sum(1 for k in self._sync_at if k < self.counts.ops)
        return self.counts

    def _traffic(self, inputs: list[torch.Tensor], outputs: list[torch.Tensor],
                 what: str) -> None:
        c = self.counts
        w0_pass = 0
        traffic = 0.0
        for t in inputs + outputs:
            nbytes = t.numel() * t.element_size()
            if t.numel() >= self.dim:
                traffic += nbytes / self.w0_bytes
            if t.device.type != "meta" and t.untyped_storage().data_ptr() == self.w0_storage:
                w0_pass = max(w0_pass, nbytes)
        c.d_traffic_w0 += traffic
        c.w0_sweeps += w0_pass / self.w0_bytes
        if self.by_site and traffic:
            key = f"{_site()} {what}"
            c.traffic_sites[key] = c.traffic_sites.get(key, 0.0) + traffic

    def record_region(self, inputs, outputs) -> None:
        """A compiled region: one op; its inputs and outputs are its traffic."""
        self.counts.ops += 1
        self.counts.kernels += 1
        self.counts.compiled_regions += 1
        ins, outs = _tensors(inputs), _tensors(outputs)
        self._traffic(ins, outs, "compiled region")
        self._allocations(ins, outs)

    def _allocations(self, ins, outs) -> None:
        seen = {t.untyped_storage().data_ptr() for t in ins}
        for t in outs:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in seen and t.untyped_storage().nbytes() > 0:
                self.counts.allocations += 1
                seen.add(ptr)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        storage_before = args[0].untyped_storage().nbytes() if name in METADATA_ONLY else 0
        out = func(*args, **kwargs)
        c = self.counts
        c.ops += 1
        if name.rstrip("_") in MATRIX_PRODUCTS:  # in place too: ``addmm_`` is a product
            c.matrix_products += 1
        # an ``out=`` tensor is written, not read: a result (it is among ``outs``), not an
        # operand; so is the first argument of an op that overwrites it (WRITE_ONLY)
        ins = _tensors((args[1:] if name in WRITE_ONLY else args,
                        {k: v for k, v in kwargs.items() if k != "out"}))
        if name in SYNC_OPS:
            self._sync(f"aten::{name}")
        elif name in ("index", "index_put", "index_put_") and any(
                t.dtype == torch.bool for t in _tensors(args[1])):
            self._sync(f"aten::{name} (boolean mask)")
        outs = _tensors(out)
        if name in ALLOCATION_ONLY:
            self._allocations(ins, outs)
        elif name in METADATA_ONLY:
            if args[0].untyped_storage().nbytes() > storage_before:  # grown: a new storage
                c.allocations += 1
        elif not _is_view(func, ins, outs):
            c.kernels += 1
            self._traffic(ins, outs, f"aten::{name}")
            # an ``out=`` buffer, or the tensor a WRITE_ONLY op overwrites, exists already:
            # writing it allocates nothing
            written = _tensors(kwargs.get("out")) + (_tensors(args[0]) if name in WRITE_ONLY
                                                     else [])
            self._allocations(ins + written, outs)
        return out


def _is_view(func, ins: list[torch.Tensor], outs: list[torch.Tensor]) -> bool:
    """Whether ``func`` moved no data: a view by its schema, or results that all live in its
    inputs' storages while it writes none of its arguments (``_unsafe_view``, ``_reshape_alias``:
    views the schema does not mark)."""
    if func.is_view:
        return True
    if not outs or any(a.alias_info is not None and a.alias_info.is_write
                       for a in func._schema.arguments):
        return False
    storages = {t.untyped_storage().data_ptr() for t in ins}
    return all(t.untyped_storage().data_ptr() in storages for t in outs)


@contextlib.contextmanager
def _python_reads(counter: OpCounter):
    """Count ``.tolist()``, ``.numpy()`` and ``.cpu()`` while inside."""
    saved = {name: getattr(torch.Tensor, name) for name in PYTHON_READS}

    def wrap(name, method):
        def read(self, *args, **kwargs):
            counter._sync(f".{name}()")
            return method(self, *args, **kwargs)
        return read

    saved_sync = torch.cuda.synchronize

    def synchronize(*args, **kwargs):  # the data timing of Solver.draw on CUDA (a GPU count)
        counter._sync("torch.cuda.synchronize")
        return saved_sync(*args, **kwargs)

    try:
        for name, method in saved.items():
            setattr(torch.Tensor, name, wrap(name, method))
        torch.cuda.synchronize = synchronize
        yield
    finally:
        torch.cuda.synchronize = saved_sync
        for name, method in saved.items():
            setattr(torch.Tensor, name, method)


@contextlib.contextmanager
def _compiled_regions(counter: OpCounter):
    """Run :class:`pinnbench.maths.fused.Fused` calls that would compile outside the mode, recorded as
    one region each (inputs and outputs); eager ones run inside it, op by op."""
    from pinnbench.maths import fused

    original = fused.Fused.__call__

    def call(self, x, *args):
        if not fused.compile_allowed(x.device):
            return original(self, x, *args)
        with _disable_current_modes():
            out = original(self, x, *args)
        counter.record_region((x, *args), out)
        return out

    fused.Fused.__call__ = call
    try:
        yield
    finally:
        fused.Fused.__call__ = original


def count(fn, w0: torch.Tensor, dim: int, by_site: bool = False) -> StepCounts:
    """The counts of ``fn()`` (see the module docstring); with ``by_site``, also the d-traffic
    of each source line and op (``StepCounts.traffic_sites``)."""
    counter = OpCounter(w0, dim, by_site)
    with _compiled_regions(counter), _python_reads(counter), counter:
        fn()
    return counter.finish()


def count_step(solver: str, dim: int, problem: str = "poisson-2body-v1", width: int = 128,
               depth: int = 3, warmup: int | None = None, device: str = "cpu",
               by_site: bool = False) -> StepCounts | str:
    """The counts of one step of ``solver`` at ``dim`` after ``warmup`` steps (default: the
    solver's ``steady_state_steps``, where its step's cost is stationary) (seed 0), or the
    reason the solver skips the problem. On ``device="cuda"`` the same counts (the mode sees
    every op whatever its device; scripts/gpu-validate counts there, beside the step times)."""
    from pinnbench.bench.solvers import build

    _, model, s, why = build(dict(problem=problem, dim=dim, width=width, depth=depth,
                                  solver=solver, device=device))
    if why:
        return why
    for _ in range(s.steady_state_steps if warmup is None else warmup):
        s.step()
    c = count(s.step, model.params[0], dim, by_site)
    if device == "cpu":
        c.step_peak_bytes = memory.cpu_tensor_peak_bytes(s.step)
    return c


# -- the command ----------------------------------------------------------------------------------
def _row(dim: int, spec: str, c: StepCounts | str) -> str:
    if isinstance(c, str):
        return f"{dim:>9} {spec:<22} skipped: {c}"
    return (f"{dim:>9} {spec:<22} {c.ops:>6} {c.kernels:>7} {c.matrix_products:>5} "
            f"{c.host_syncs:>6} "
            f"{c.mid_step_syncs:>4} "
            f"{c.allocations:>7} {c.w0_sweeps:>10.2f} {c.d_traffic_w0:>10.2f} "
            f"{c.compiled_regions:>8} "
            + (f"{c.step_peak_bytes / 2**20:>8.1f}" if c.step_peak_bytes is not None
               else f"{'-':>8}"))


HEADER = (f"{'d':>9} {'solver':<22} {'ops':>6} {'kernels':>7} {'mm':>5} {'syncs':>6} {'mid':>4} "
          f"{'allocs':>7} "
          f"{'W0 sweeps':>10} {'d-traffic':>10} {'compiled':>8} {'peak MiB':>8}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m pinnbench.bench ops",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default=DEFAULT_DIMS, help=f"dimensions (default {DEFAULT_DIMS})")
    ap.add_argument("--solvers", default=DEFAULT_SPECS,
                    help=f"';'-separated solver specs (default \"{DEFAULT_SPECS}\")")
    ap.add_argument("--problem", default="poisson-2body-v1")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--json", metavar="FILE", help="also write every count (and the sites of "
                    "the host syncs) to FILE")
    ap.add_argument("--sites", action="store_true", help="print where each host sync happens")
    ap.add_argument("--traffic", type=int, nargs="?", const=15, default=0, metavar="N",
                    help="print the N source lines (default 15) with the most d-traffic, each "
                         "with its op and W0's")
    args = ap.parse_args(argv)
    from pinnbench.commands.axes import parse_dims
    from pinnbench.solver import solver_from_spec

    try:
        dims = parse_dims(args.dims)
        specs = [s.strip() for s in args.solvers.split(";") if s.strip()]
        for s in specs:
            solver_from_spec(s)
    except ValueError as exc:
        ap.error(str(exc))
    torch.set_num_threads(1)
    from pinnbench.maths import fused

    print(f"# ops of one step after {WARM}: {args.problem}, MLP {args.width}x{args.depth} "
          f"tanh, seed 0, CPU; W0 sweeps and d-traffic in units of W0's bytes; closed forms "
          f"compiled at d >= {fused.MIN_COLUMNS} unless {fused.ENV}=0 (setting now: "
          f"{fused._setting()}), a compiled call counted as one op with its inputs and outputs")
    print(HEADER, flush=True)
    rows = []
    for dim in dims:
        for s in specs:
            c = count_step(s, dim, args.problem, args.width, args.depth,
                           by_site=args.traffic > 0)
            print(_row(dim, s, c), flush=True)
            if args.sites and not isinstance(c, str):
                for site in c.sync_sites:
                    print(f"#   sync at {site}")
            if args.traffic and not isinstance(c, str):
                top = sorted(c.traffic_sites.items(), key=lambda kv: -kv[1])[:args.traffic]
                for site, w0s in top:
                    print(f"#   {w0s:7.2f} W0  {site}")
            rows.append({"dim": dim, "solver": s,
                         **({"skipped": c} if isinstance(c, str) else asdict(c))})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
