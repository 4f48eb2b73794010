"""``python -m pinnbench.bench roofline``: each solver's time per step against this machine's limit.

For each d the bench measures, in one run, (1) the machine: the GEMM rate of the first-layer
product at the step's shape, (n + V) x d times d x h, and at the hidden layers' shape, and the
copy bandwidth of a large ``copy_``; (2) each solver's time per step in a fresh process (one
warm-up step, the median of ``--steps``), and in the same process the time of producing the
step's data alone (``problem.sample_interior`` of the n points, ``problem.source`` f(x), and the
V dense probes); and prints measured / bound, where the bound is what the step must at least
cost on this machine (docs/domain.md §8):

    bound_s = max(FLOPs / R, bytes / B)

R: the highest GEMM rate measured at the step's shapes, B: the copy bandwidth, counted as bytes
read + bytes written per second. Both are the machine's best: the fastest of ``--repeats`` runs
(contention on a shared machine only ever slows a run down, and a true lower bound needs the
fastest rate the machine reaches), and R is the larger of the first-layer and hidden-layer
rates at that d. One torch thread throughout; all ratios are within one run. The table also
gives the step and the data in units of G, the time of one first-layer GEMM at that d (the
yardstick of issue 13's targets).

What a step must do (d spatial dimensions, n points, V probes, h width, L hidden layers
(``--depth``), K = 2 the jet order of the Laplacian, numbers in float32, 4 bytes):

- F1 = 2 (n + V) d h: the first-layer products of one forward jet: W0 x for the n points and
  W0 v for the V probes (the jet of z = W0 (x + t v) + b0 has exactly these two coefficients,
  :meth:`pinnbench.maths.model.PINN.net_jet`).
- H = 2 (L - 1) n (1 + K V) h^2: the hidden (h x h) layers of one forward jet. After the first
  tanh the jet has 1 + K coefficient rows per point: the value (n rows) and K coefficients per
  probe (n V rows each). The output layer (1 x h) and all elementwise work are not counted.
- D = 4 (n + V) d bytes: the batch x and the probes, each touched once (they must at least be
  written once when drawn; a sampler fused into the GEMM would need nothing more).
- W = 4 d h bytes: one pass over the first-layer weights W0 (or over a state array of its size).

Per solver (each formula from the solver's own algorithm, declared by the solver as
:meth:`pinnbench.solver.Solver.step_cost`; see its module docstring). The default rows: every
registered solver (``--import`` adds a plugin's) whose default spec declares a bound
(:func:`default_specs`); today:

- ``bp`` (stde jets, backprop, Adam; Kingma & Ba 2015):
  FLOPs = F1 + F1 + H + 2 H: forward; the weight gradient dL/dW0 = G^T [x; v], one more F1 (no
  input gradient: x and v are data, so the first layer's backward is 1x its forward, not the
  generic 2x of docs/domain.md §8); each hidden layer's backward is an input and a weight gradient,
  2 H. Bytes = D + 9 W: the forward reads W0, the backward writes its gradient g, Adam reads
  W0, g, m, v and writes W0, m, v (docs/domain.md §8: "Adam reads and writes 4 d h numbers").
- ``sdze`` (CRNS, low-rank directions of rank r, q directions; docs/domain.md §4, solvers/sdze.py):
  FLOPs = F1 + 2 (n + V) d r + 2q [2 (n + V) r (r + h) + H] + 2 d h r: the shared first-layer
  products once per step (``pinnbench.solvers._zo_evaluation.FirstLayerCache``), with their projections
  V^T x, V^T v onto the d x r basis; each of the 2q +- evaluations adds its low-rank term
  U (Xi (V^T y)) and passes the hidden layers at its perturbed weights; the update
  W0 += U G V^T is one rank-r product (momentum terms of older bases, which the implementation
  adds, are not counted). Bytes = D + 3 W: the forward reads W0, the update reads and writes it.
  With ``crns=false`` each evaluation draws its own points and probes: F1, the projections and
  D are paid 2q times.
- ``zo`` (two-point SPSA with in-place perturbations, MeZO; solvers/zo.py): every evaluation
  sees its own W0 + eps z, so nothing is shared: FLOPs = 2q (F1 + H). Bytes = 2q D (``crns``
  false, the default: each evaluation draws its own data; D once with ``crns=true``) + 10q W:
  2q forward reads of W0, 3q in-place perturbations (+eps, -2 eps, +eps) and q update passes,
  each reading and writing W0; dense momentum (``momentum > 0``) adds reading and writing m.
  Generating the Gaussian z costs no FLOPs or bytes in the bound (a lower bound may ignore it).

Not counted anywhere (so the bound stays a lower bound): random-number generation, the source's
transcendentals, the problem's ansatz jet (x . v: 2 n V d FLOPs) and everything elementwise.
The ``data`` column is measured, not bounded: it shows how much of the step is pinnbench's own
data generation (issue 13: at large d it dominated the step).

Usage: ``python -m pinnbench.bench roofline --dims 1e3..1e6`` (``--dims`` in the CLI's syntax,
:func:`pinnbench.commands.axes.parse_dims`; 1e7 takes minutes per solver on a CPU and needs ~10 GB for
the GEMM measurement alone, so it is not in the default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass

from pinnbench.bench import WARM

DEFAULT_DIMS = "1e3..1e6"
BYTES_PER_NUMBER = 4  # float32
JET_ORDER = 2  # the Laplacian's: D_v^2 u
#: numbers in the tensor whose copy_ measures the bandwidth (256 MiB of float32, far past any
#: cache, small enough for a shared machine)
COPY_NUMBERS = 2**26


# -- the bound ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepCost:
    """What one solver step must at least do: ``flops`` and ``bytes`` moved (see the module
    docstring for each formula)."""

    flops: float
    bytes: float

    def bound_s(self, flops_per_s: float, bytes_per_s: float) -> tuple[float, str]:
        """(max(flops / R, bytes / B), "flops" or "bytes": whichever limits)."""
        t_flops, t_bytes = self.flops / flops_per_s, self.bytes / bytes_per_s
        return (t_flops, "flops") if t_flops >= t_bytes else (t_bytes, "bytes")


def first_layer_flops(n: int, probes: int, dim: int, width: int) -> float:
    """F1 = 2 (n + V) d h: W0 x for n points and W0 v for V probes."""
    return 2.0 * (n + probes) * dim * width


def hidden_flops(n: int, probes: int, width: int, depth: int, order: int = JET_ORDER) -> float:
    """H = 2 (L - 1) n (1 + K V) h^2: the (h x h) layers of one forward jet of order K."""
    return 2.0 * (depth - 1) * n * (1 + order * probes) * width**2


def data_bytes(n: int, probes: int, dim: int) -> float:
    """D = 4 (n + V) d: the batch and the probes, each once."""
    return float(BYTES_PER_NUMBER * (n + probes) * dim)


def step_cost(spec: str, dim: int, width: int = 128, depth: int = 3) -> StepCost:
    """The lower-bound FLOPs and bytes of one step of solver ``spec`` (e.g. ``"sdze[q=8]"``) at
    dimension ``dim`` on a Laplacian problem, as the solver declares it
    (:meth:`pinnbench.solver.Solver.step_cost`); ValueError for a configuration with no model."""
    from pinnbench.solver import solver_from_spec

    solver = solver_from_spec(spec)
    p = solver.params
    if p.get("dist", "default") not in ("default", "rademacher", "gaussian"):
        raise ValueError(f"roofline models dense probes; {solver.spec} has dist={p['dist']}")
    if p.get("estimator", "stde") != "stde" or p.get("loss", "biased") != "biased":
        raise ValueError(f"roofline models the stde estimator and the biased loss; got "
                         f"{solver.spec}")
    cost = solver.step_cost(dim, width, depth)
    if cost is None:
        raise ValueError(f"roofline has no bound model for solver {solver.name!r}: it declares "
                         "no Solver.step_cost")
    return cost


def default_specs(dim: int = 1000, width: int = 128, depth: int = 3) -> str:
    """The ``--solvers`` default: every registered solver, at its defaults, that declares a
    bound model (:meth:`pinnbench.solver.Solver.step_cost`), ';'-separated by name."""
    from pinnbench.solver import list_solvers

    out = []
    for name in list_solvers():
        try:
            step_cost(name, dim, width, depth)
        except ValueError:
            continue
        out.append(name)
    return ";".join(out)


def weight_bytes(dim: int, width: int) -> float:
    """W = 4 d h: the bytes of the first layer's weights, W0."""
    return float(BYTES_PER_NUMBER * dim * width)


# -- the machine ----------------------------------------------------------------------------------
def _best_time(fn, repeats: int, device) -> float:
    """The fastest of ``repeats`` calls of ``fn`` after one warm-up call, synchronised."""
    from pinnbench.timing import clock

    fn()
    times = []
    for _ in range(repeats):
        t0 = clock(device)
        fn()
        times.append(clock(device) - t0)
    return min(times)


def gemm_rate(rows: int, inner: int, cols: int, repeats: int = 5,
              device: str = "cpu") -> tuple[float, float]:
    """(FLOP/s, seconds) of the fastest of ``repeats`` ``torch.mm`` of a (rows x inner) by an
    (inner x cols) float32 matrix (the second stored as (cols, inner) and transposed, as
    ``x @ W0.T``), after a warm-up; in the calling process's torch threads."""
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(rows, inner, generator=g, device=device)
    w = torch.randn(cols, inner, generator=g, device=device)
    out = torch.empty(rows, cols, device=device)
    t = _best_time(lambda: torch.mm(a, w.T, out=out), repeats, device)
    return 2.0 * rows * inner * cols / t, t


def copy_rate(numbers: int = COPY_NUMBERS, repeats: int = 5, device: str = "cpu") -> float:
    """Bytes per second (read + written) of ``dst.copy_(src)`` for float32 tensors of ``numbers``
    elements, the fastest of ``repeats`` after a warm-up copy that faults the pages in."""
    import torch

    src = torch.ones(numbers, device=device)
    dst = torch.empty(numbers, device=device)
    return 2.0 * BYTES_PER_NUMBER * numbers / _best_time(lambda: dst.copy_(src), repeats, device)


def _machine_worker(spec: dict, report=None) -> dict:
    """The copy bandwidth and the GEMM rate at each of ``shapes``, in a fresh process."""
    import torch

    torch.set_num_threads(spec["threads"])
    device = spec.get("device", "cpu")
    return {"status": "ok",
            "bytes_per_s": copy_rate(spec["copy_numbers"], spec["repeats"], device),
            "gemm": [gemm_rate(*shape, repeats=spec["repeats"], device=device)
                     for shape in spec["shapes"]]}


# -- one solver ----------------------------------------------------------------------------------
def _step_worker(spec: dict, report=None) -> dict:
    """Time per step of one solver and, within the same steps, the part spent drawing the step's
    data (its points, source values and probes: ``Solver.draw``, all the draws a step makes), in
    a fresh process; medians over the timed steps."""
    import torch

    from pinnbench.bench.solvers import build

    problem, model, solver, why = build(spec)
    if why:
        return {"status": "skipped", "message": why}
    from pinnbench.timing import clock

    device = problem.device
    for _ in range(solver.steady_state_steps):  # compiles the closed forms at large d, and
        solver.step()  # fills sdze's low-rank momentum (a step's cost is stationary after it)
    # on CUDA the warm-up's data intervals are settled here, not into the first timed step's
    solver.settle_data_time()
    times, data_times = [], []
    for _ in range(spec["steps"]):
        d0 = solver.data_time_s
        t0 = clock(device)
        solver.step()
        times.append(clock(device) - t0)
        data_times.append(solver.settle_data_time() - d0)  # CUDA: the events, after the sync
    return {"status": "ok", "time_s": statistics.median(times),
            "data_s": statistics.median(data_times), "threads": torch.get_num_threads()}


# -- the command ----------------------------------------------------------------------------------
class UsageError(Exception):
    """Bad arguments: one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(message)


def _with_shape(spec: str, points: int, probes: int) -> str:
    """The spec with ``points`` and ``probes`` added where it does not give them."""
    from pinnbench.solver import parse_spec, format_spec

    name, given = parse_spec(spec)
    given.setdefault("points", points)
    given.setdefault("probes", probes)
    return format_spec(name, given)


def _fmt_rate(x: float) -> str:
    return f"{x / 1e9:.1f} G"


def _parse_args(argv: list[str]) -> argparse.Namespace:
    ap = _Parser(prog="python -m pinnbench.bench roofline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default=DEFAULT_DIMS, help="dimensions, e.g. 1e3..1e7 or 100,1e4 "
                    f"(default {DEFAULT_DIMS})")
    ap.add_argument("--solvers", help="';'-separated solver specs (default: every registered "
                    "solver that declares a bound model, by name)")
    ap.add_argument("--import", dest="imports", action="append", default=[],
                    metavar="MODULE_OR_FILE", help="import a plugin module or file (repeatable)")
    ap.add_argument("--problem", default="poisson-2body-v1")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--points", type=int, default=100, help="n, unless a spec gives points=")
    ap.add_argument("--probes", type=int, default=16, help="V, unless a spec gives probes=")
    ap.add_argument("--steps", type=int, default=3,
                    help="timed steps after the solver's warm-up (Solver.steady_state_steps)")
    ap.add_argument("--repeats", type=int, default=5, help="timed GEMMs and copies (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index>: where the GEMMs, "
                    "the copies and the steps run (default cpu; on CUDA every timing is "
                    "synchronised and --mem-limit-gb does not apply)")
    ap.add_argument("--mem-limit-gb", type=float, default=16.0,
                    help="address-space headroom of each measurement process (RLIMIT_AS)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
    args = ap.parse_args(argv)
    from pinnbench.plugins import import_plugins

    try:
        import_plugins(args.imports)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is the user's to fix
        raise UsageError(f"cannot import plugin: {type(exc).__name__}: {exc}") from None
    if args.solvers is None:
        args.solvers = default_specs(width=args.width, depth=args.depth)
    for name in ("width", "depth", "points", "probes", "steps", "repeats", "threads"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if not args.mem_limit_gb > 0 or not args.timeout > 0:
        raise UsageError("--mem-limit-gb and --timeout must be > 0")
    from pinnbench.maths.problem_registry import resolve_device

    try:
        args.device = str(resolve_device(args.device))
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None
    from pinnbench.commands.axes import parse_dims

    try:
        args.dims = parse_dims(args.dims)
    except ValueError as exc:
        raise UsageError(f"--dims: {exc}") from None
    try:
        args.specs = {s.strip(): _with_shape(s.strip(), args.points, args.probes)
                      for s in args.solvers.split(";") if s.strip()}  # label -> full spec
        if not args.specs:
            raise ValueError("--solvers is empty")
        for s in args.specs.values():
            step_cost(s, args.dims[0], args.width, args.depth)  # a bound model exists
        import pinnbench

        problem = pinnbench.make_problem(args.problem, dim=args.dims[0], seed=0)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if problem.operator.names != ("laplacian",) or problem.time_dependent:
        raise UsageError(f"roofline models Laplacian problems (jet order 2); {args.problem} has "
                         f"{', '.join(problem.operator.names)}")
    return args


def _measure(target: str, spec: dict, args) -> dict:
    from pinnbench.cells.isolation import measure_isolated

    limit = int(args.mem_limit_gb * 2**30) if args.device == "cpu" else None  # CUDA maps huge
    return measure_isolated(f"pinnbench.bench.roofline:{target}", {**spec, "device": args.device},
                            timeout_s=args.timeout, memory_limit_bytes=limit)


def main(argv: list[str]) -> int:
    try:
        args = _parse_args(argv)
    except UsageError as exc:
        print(f"python -m pinnbench.bench roofline: {exc}", file=sys.stderr)
        return 2
    from pinnbench.solver import solver_from_spec

    first = solver_from_spec(next(iter(args.specs.values()))).params
    n, v = first["points"], first["probes"]  # the GEMM shapes are the first solver's
    hidden_shape = (n * (1 + JET_ORDER * v), args.width, args.width)
    where = (f"{args.threads} torch thread(s)" if args.device == "cpu" else args.device)
    print(f"# roofline: {args.problem}, MLP {args.width}x{args.depth} tanh; {where}; median of "
          f"{args.steps} steps after {WARM}, fresh process per row; data = the part of those "
          "steps spent drawing points, source and probes (Solver.draw)"
          + ("; shared CPU: noisy" if args.device == "cpu" else ""))
    print("# bound = max(FLOPs / R, bytes / B); R = the faster of the two GEMM rates, B = copy "
          "bandwidth (read + write); G = one first-layer GEMM", flush=True)
    header = (f"{'d':>9} {'solver':<8} {'s/step':>9} {'bound s':>9} {'meas/bound':>10} "
              f"{'data s':>8} {'data/bound':>10} {'step/G':>7} {'data/G':>7} {'bound by':>8}")
    for dim in args.dims:
        first_shape = (n + v, dim, args.width)
        machine = _measure("_machine_worker", dict(
            threads=args.threads, repeats=args.repeats, copy_numbers=COPY_NUMBERS,
            shapes=[first_shape, hidden_shape]), args)
        if machine["status"] != "ok":
            print(f"# d = {dim}: machine measurement {machine['status']}: "
                  f"{machine.get('message', '')}", flush=True)
            continue
        bw = machine["bytes_per_s"]
        (first_rate, g_s), (hidden_rate, _) = machine["gemm"]
        rate = max(first_rate, hidden_rate)
        print(f"# d = {dim}: GEMM {first_rate / 1e9:.1f} GFLOP/s at the first layer "
              f"{' x '.join(map(str, first_shape))} (G = {g_s:.4g} s), {hidden_rate / 1e9:.1f} "
              f"GFLOP/s at the hidden layers {' x '.join(map(str, hidden_shape))}; copy "
              f"bandwidth {bw / 1e9:.1f} GB/s ({COPY_NUMBERS * BYTES_PER_NUMBER // 2**20} MiB)",
              flush=True)
        print(header)
        for label, s in args.specs.items():
            bound, by = step_cost(s, dim, args.width, args.depth).bound_s(rate, bw)
            res = _measure("_step_worker", dict(solver=s, dim=dim, width=args.width,
                                                depth=args.depth, problem=args.problem,
                                                steps=args.steps, threads=args.threads,
                                                imports=args.imports), args)
            if res["status"] != "ok":
                print(f"{dim:>9} {label:<8} {res['status']}: {res.get('message', '')}  "
                      f"(bound {bound:.3g} s)", flush=True)
                continue
            step, data = res["time_s"], res["data_s"]
            print(f"{dim:>9} {label:<8} {step:9.4g} {bound:9.4g} {step / bound:10.1f} "
                  f"{data:8.4g} {data / bound:10.1f} {step / g_s:7.1f} {data / g_s:7.1f} "
                  f"{by:>8}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
