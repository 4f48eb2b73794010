"""``python -m pinnbench.bench estimators``: time and peak memory of one Laplacian estimate.

For each d and each method (exact where d allows, sdgd, hte, stde with Rademacher and with
coordinate probes, fd, and the torch.func route ``jvp(jvp(u))`` for the same Rademacher probe
contraction, plus a plain forward pass as the yardstick), one fresh subprocess builds the
problem and the model, samples the points, resets the CPU high-water mark
(:func:`pinnbench.memory.reset_peak_cpu`), runs one warm-up and ``--repeats`` timed estimates
under ``torch.no_grad()`` (the autodiff methods switch grad on for x internally), and reports the
median time and the peak resident memory above what the model and points already held.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

METHODS = ("forward", "exact", "sdgd", "hte", "stde", "stde-coord", "fd", "jvp-of-jvp")


def _route_jvp_of_jvp(model, x, dirs):
    """(1/V) Σ_k v_kᵀ∇²u v_k by torch.func: a jvp of a jvp per probe (each (n, D) tangent is an
    expanded view of the shared probe, not a copy)."""
    from torch.func import jvp

    acc = 0.0
    for v in dirs.v:
        t = v.expand_as(x)
        acc = acc + jvp(lambda y: jvp(model, (y,), (t,))[1], (x,), (t,))[1]
    return acc / dirs.count


def _worker(spec: dict, report=None) -> dict:
    """One measurement, in its own process (:func:`pinnbench.cells.isolation.measure_isolated`)."""
    import torch

    import pinnbench
    from pinnbench import memory
    from pinnbench.maths.estimators import EXACT_MAX_DIM, estimate
    from pinnbench.maths.estimators.probes import dense_probes

    method, dim = spec["method"], spec["dim"]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if method == "exact" and dim > EXACT_MAX_DIM["laplacian"]:
        return {"status": "skipped", "message": f"exact needs d <= {EXACT_MAX_DIM['laplacian']}"}
    dtype = getattr(torch, spec["dtype"])
    problem = pinnbench.make_problem(spec["problem"], dim=dim, seed=0, dtype=dtype)
    model = pinnbench.make_model(problem, width=spec["width"], depth=spec["depth"],
                                 generator=torch.Generator().manual_seed(0))
    x = problem.sample_interior(spec["points"], torch.Generator().manual_seed(1))
    probes = spec["probes"]

    def run(seed: int):
        gen = torch.Generator().manual_seed(seed)
        if method == "forward":
            return model(x)
        if method == "jvp-of-jvp":
            dirs = dense_probes("rademacher", probes, dim, problem.input_dim, gen, dtype, x.device)
            return _route_jvp_of_jvp(model, x, dirs)
        name, opts = method, {}
        if method == "stde-coord":
            name, opts = "stde", {"dist": "coordinate"}
        return estimate("laplacian", model, x, name, generator=gen, probes=probes, **opts)

    resettable = memory.reset_peak_cpu()
    base = memory.current_cpu_bytes()
    times, value = [], None
    with torch.no_grad():
        for r in range(spec["repeats"] + 1):
            t0 = time.perf_counter()
            out = run(r)
            dt = time.perf_counter() - t0
            if r:
                times.append(dt)
            value = float(out[0])
    return {"status": "ok", "time_s": statistics.median(times), "times_s": times,
            "extra_peak_bytes": memory.peak_cpu_bytes() - base if resettable else None,
            "x_bytes": x.numel() * x.element_size(), "model_bytes": model.param_bytes,
            "value0": value, "threads": torch.get_num_threads()}


def _run_cell(spec: dict, timeout_s: float) -> dict:
    from pinnbench.cells.isolation import measure_isolated

    return measure_isolated("pinnbench.bench.estimators:_worker", spec, timeout_s=timeout_s)


def _mb(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:9.1f}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m pinnbench.bench estimators",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default="1e3,1e4,1e5,1e6", help="dimensions as for `pinnbench run`: 1e3,1e4 or 1e3..1e6")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up")
    ap.add_argument("--problem", default="poisson-2body-v1")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads per measurement (0: torch's default); 1 is steadiest "
                         "on a shared machine")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per measurement")
    args = ap.parse_args(argv)
    from pinnbench.commands.axes import parse_dims

    try:
        dims = parse_dims(args.dims)
    except ValueError as exc:
        ap.error(f"--dims: {exc}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    print(f"# one Laplacian estimate: {args.problem}, {args.dtype}, MLP {args.width}x{args.depth} "
          f"tanh, n = {args.points} points, V = {args.probes} probes; median of {args.repeats} "
          f"after 1 warm-up; CPU, {args.threads or 'default'} thread(s)")
    print("# extra peak = resident high-water mark above model + points (reset after building them)")
    header = f"{'d':>9} {'method':<11} {'time ms':>10} {'vs stde':>8} {'extra peak MB':>14} " \
             f"{'x MB':>8} {'model MB':>9}  u0/estimate[0]"
    print(header)
    ok = True
    for dim in dims:
        rows = {}
        for method in methods:
            spec = dict(method=method, dim=dim, width=args.width, depth=args.depth,
                        points=args.points, probes=args.probes, repeats=args.repeats,
                        problem=args.problem, dtype=args.dtype, threads=args.threads)
            rows[method] = res = _run_cell(spec, args.timeout)
            if res["status"] != "ok":
                print(f"{dim:>9} {method:<11} {res['status']}: {res.get('message', '')}",
                      flush=True)
                continue
            stde = rows.get("stde", {}).get("time_s")
            rel = f"{res['time_s'] / stde:7.1f}x" if stde else f"{'':>8}"
            print(f"{dim:>9} {method:<11} {res['time_s'] * 1e3:10.1f} {rel} "
                  f"{_mb(res['extra_peak_bytes']):>14} {_mb(res['x_bytes']):>8} "
                  f"{_mb(res['model_bytes']):>9}  {res['value0']:.5g}", flush=True)
        a, b = rows.get("stde", {}), rows.get("jvp-of-jvp", {})
        if a.get("status") == "ok" and b.get("status") == "ok":
            speed = b["time_s"] / a["time_s"]
            print(f"# d = {dim}: stde is {speed:.1f}x faster than jvp-of-jvp "
                  f"({'meets' if speed >= 5 else 'MISSES'} the 5x target)")
            ok &= speed >= 5
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
