"""``python -m pinnbench.bench solvers``: time per step and peak memory of each solver against d.

For each d and each solver spec, one fresh subprocess builds the problem, the model (MLP
``--width`` x ``--depth`` tanh) and the solver, takes one warm-up step, resets the CPU high-water
mark (:func:`pinnbench.memory.reset_peak_cpu`), takes ``--steps`` timed steps and reports the
median time per step, the peak resident memory of the timed steps (absolute, and above what the
process held before them) and the parameter bytes beside it. The process is the cell runner's
(:mod:`pinnbench.cells.isolation`): its address space gets ``--mem-limit-gb`` of headroom (RLIMIT_AS)
so that a solver that does not fit fails with an allocation error reported as ``oom`` instead
of pushing the shared machine into its OOM killer.

Headline (the d = 10^7 claim): ``--dims 1e7 --solvers "sdze;bp" --steps 2``.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from pinnbench.bench import WARM

DEFAULT_SOLVERS = "bp;zo;sdze"


def build(spec: dict) -> tuple:
    """``(problem, model, solver, why_skipped)`` for one bench measurement (seed 0, the spec's
    problem, d, MLP and torch threads, its plugin ``imports`` imported first); model and solver
    are None where the solver skips."""
    import torch

    import pinnbench
    from pinnbench.plugins import import_plugins
    from pinnbench.solver import solver_from_spec

    import_plugins(spec.get("imports") or [])  # a plugin solver, in this fresh process too
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    problem = pinnbench.make_problem(spec["problem"], dim=spec["dim"], seed=0,
                                     device=spec.get("device", "cpu"))
    gen = torch.Generator(device=problem.device).manual_seed(0)
    solver = solver_from_spec(spec["solver"])
    skip, why = solver.skip(problem)
    if skip:
        return problem, None, None, why
    model = pinnbench.make_model(problem, width=spec["width"], depth=spec["depth"], generator=gen)
    solver.setup(problem, model, gen)
    return problem, model, solver, ""


def _worker(spec: dict, report=None) -> dict:
    """One measurement, in its own process (:func:`pinnbench.cells.isolation.measure_isolated`)."""
    import torch

    from pinnbench import memory
    from pinnbench.timing import clock

    problem, model, solver, why = build(spec)
    if why:
        return {"status": "skipped", "message": why}
    # device-synchronised: a step that returns its loss as a tensor ends without waiting for
    # the device (perf_counter alone off CUDA)
    device = problem.device
    t0 = clock(device)
    solver.step()
    warm = clock(device) - t0
    for _ in range(solver.steady_state_steps - 1):  # sdze's low-rank momentum fills up
        solver.step()
    resettable = memory.reset_peak_cpu()
    base = memory.current_cpu_bytes()
    times, losses = [], []
    for _ in range(spec["steps"]):
        t0 = clock(device)
        losses.append(solver.step())  # a float or a 0-d tensor: read after the timing
        times.append(clock(device) - t0)
    peak = memory.peak_cpu_bytes()
    return {"status": "ok", "time_s": statistics.median(times), "warmup_s": warm,
            "peak_bytes": peak, "extra_peak_bytes": peak - base if resettable else None,
            "param_bytes": model.param_bytes, "n_params": model.n_params,
            "batch_bytes": spec["points"] * problem.input_dim * 4, "loss": float(losses[-1]),
            "threads": torch.get_num_threads()}


def _run_cell(spec: dict, timeout_s: float) -> dict:
    from pinnbench.cells.isolation import measure_isolated

    return measure_isolated("pinnbench.bench.solvers:_worker", spec, timeout_s=timeout_s,
                            memory_limit_bytes=int(spec["mem_limit_gb"] * 2**30))


def _mb(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:10.1f}"


def _with_points(spec: str, points: int) -> str:
    if "points=" in spec:
        return spec
    return spec[:-1] + f",points={points}]" if spec.endswith("]") else spec + f"[points={points}]"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m pinnbench.bench solvers",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default="1e3,1e4,1e5,1e6", help="dimensions as for `pinnbench run`: 1e3,1e4 or 1e3..1e6")
    ap.add_argument("--solvers", default=DEFAULT_SOLVERS,
                    help="';'-separated solver specs, e.g. \"bp;sdze[rank=4]\"")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--steps", type=int, default=3,
                    help="timed steps after the solver's warm-up (Solver.steady_state_steps)")
    ap.add_argument("--problem", default="poisson-2body-v1")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--mem-limit-gb", type=float, default=20.0,
                    help="address-space headroom of each measurement above what importing "
                         "torch maps (RLIMIT_AS)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
    args = ap.parse_args(argv)
    from pinnbench.commands.axes import parse_dims

    try:
        dims = parse_dims(args.dims)
    except ValueError as exc:
        ap.error(f"--dims: {exc}")
    from pinnbench.solver import solver_from_spec

    specs = [s.strip() for s in args.solvers.split(";") if s.strip()]
    for s in specs:
        try:
            solver_from_spec(s)  # fail early on a bad spec
        except ValueError as exc:
            ap.error(str(exc))
    print(f"# one solver step: {args.problem}, MLP {args.width}x{args.depth} tanh, "
          f"{args.points} points; median of {args.steps} steps after {WARM}; fresh process "
          f"per row, address space capped at {args.mem_limit_gb:g} GiB; CPU, shared: noisy")
    print(f"{'d':>9} {'solver':<24} {'s/step':>9} {'peak MB':>10} {'step extra MB':>13} "
          f"{'params MB':>10} {'batch MB':>9}  loss")
    for dim in dims:
        for s in specs:
            spec = dict(solver=_with_points(s, args.points), dim=dim, width=args.width,
                        depth=args.depth, points=args.points, steps=args.steps,
                        problem=args.problem, threads=args.threads,
                        mem_limit_gb=args.mem_limit_gb)
            res = _run_cell(spec, args.timeout)
            if res["status"] != "ok":
                print(f"{dim:>9} {s:<24} {res['status']}: {res.get('message', '')}", flush=True)
                continue
            print(f"{dim:>9} {s:<24} {res['time_s']:9.3f} {_mb(res['peak_bytes'])} "
                  f"{_mb(res['extra_peak_bytes']):>13} {_mb(res['param_bytes'])} "
                  f"{_mb(res['batch_bytes']):>9}  {res['loss']:.4g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
