"""asv: what one training step dispatches, counted exactly (``python -m pinnbench.bench ops``,
:mod:`pinnbench.bench.ops`): ATen ops, matrix products, host syncs (all, and those in the middle
of the step), kernels (the ops that move data: what a GPU launches), allocations, passes over
W0 and d-sized traffic (both x 100, in units of W0's bytes, so that they are integers), and the
most KiB the step's own tensors hold at once (exact: the profiler's memory events); for the
profile's solvers and for bp with each of its randomized estimators (:class:`BpEstimatorOps`).

The counts are deterministic for a commit, so asv flags any growth exactly (no noise to wait
out): a change that adds a launch, a sync or a pass over W0 to a step shows here the commit it
lands; :class:`SdzeQOps` tracks sdze at q = 1, 4, 16. The fast profile counts at its small d
(width 32; a few seconds in all); the counts that scale with d (the closed forms compiled from
d = 65,536) are in docs/roofline.md.
"""

from pinnbench.bench.ops import count_step

from .profiles import DIMS, PROBLEM, SOLVERS, WIDTH

POINTS = 100


def _counts(solver: str, dim: int) -> dict:
    spec = f"{solver[:-1]},points={POINTS}]" if solver.endswith("]") else \
        f"{solver}[points={POINTS}]"
    c = count_step(spec, dim, PROBLEM, width=WIDTH)
    if isinstance(c, str):
        raise RuntimeError(f"{solver} skips {PROBLEM} at d = {dim}: {c}")
    return {"ops": c.ops, "kernels": c.kernels, "matrix_products": c.matrix_products,
            "host_syncs": c.host_syncs,
            "mid_step_syncs": c.mid_step_syncs, "allocations": c.allocations,
            "w0_sweeps_x100": round(100 * c.w0_sweeps),
            "d_traffic_w0_x100": round(100 * c.d_traffic_w0),
            "step_peak_kib": round(c.step_peak_bytes / 1024)}


class StepOps:
    """The counts of one stationary step (after the solver's ``steady_state_steps``), each
    solver at each d of the profile (v2: v1 counted after one warm-up step, before sdze's
    momentum had more than one term)."""

    params = (SOLVERS, DIMS)
    param_names = ["solver", "dim"]
    version = "step-ops-v2"
    unit = "count"
    timeout = 600

    def setup_cache(self):
        return {f"{s}@{d}": _counts(s, d) for s in SOLVERS for d in DIMS}

    def _get(self, cache, solver, dim, key):
        return cache[f"{solver}@{dim}"][key]

    def track_aten_ops(self, cache, solver, dim):
        return self._get(cache, solver, dim, "ops")

    def track_kernels(self, cache, solver, dim):
        return self._get(cache, solver, dim, "kernels")

    def track_matrix_products(self, cache, solver, dim):
        return self._get(cache, solver, dim, "matrix_products")

    def track_host_syncs(self, cache, solver, dim):
        return self._get(cache, solver, dim, "host_syncs")

    def track_mid_step_syncs(self, cache, solver, dim):
        return self._get(cache, solver, dim, "mid_step_syncs")

    def track_allocations(self, cache, solver, dim):
        return self._get(cache, solver, dim, "allocations")

    def track_w0_sweeps_x100(self, cache, solver, dim):
        return self._get(cache, solver, dim, "w0_sweeps_x100")

    def track_d_traffic_w0_x100(self, cache, solver, dim):
        return self._get(cache, solver, dim, "d_traffic_w0_x100")

    def track_step_peak_kib(self, cache, solver, dim):
        """The most KiB the step's own tensors hold at once (``peak MiB`` of the command):
        exact, so a step that keeps one more batch alive shows here the commit it lands."""
        return self._get(cache, solver, dim, "step_peak_kib")

    track_step_peak_kib.unit = "KiB"


#: bp with each randomized estimator (the default, bp[estimator=stde], is in StepOps)
BP_ESTIMATORS = ["bp[dist=coordinate]", "bp[estimator=hte]", "bp[estimator=sdgd]"]


class BpEstimatorOps(StepOps):
    """The same counts for bp's other estimators (sparse STDE, HTE, SDGD): their steps must stay
    free of host syncs too (tests/test_bench_ops.py)."""

    params = (BP_ESTIMATORS, DIMS)
    version = "bp-estimator-ops-v1"

    def setup_cache(self):
        return {f"{s}@{d}": _counts(s, d) for s in BP_ESTIMATORS for d in DIMS}


#: sdze with 1, 4 and 16 perturbations a step: its 2q evaluations run as one batch, so its
#: matrix products must not grow with q (tests/test_bench_ops.py), and its ops only by the
#: perturbations' own draws and update terms
SDZE_Q = ["sdze[q=1]", "sdze[q=4]", "sdze[q=16]"]


class SdzeQOps(StepOps):
    """The same counts for sdze at q = 1, 4, 16 (docs/roofline.md, "sdze's 2q evaluations as one
    batch"): a change that makes a step's launches grow with q again shows here."""

    params = (SDZE_Q, DIMS)
    version = "sdze-q-ops-v2"  # v2: counted at the stationary step (StepOps)

    def setup_cache(self):
        return {f"{s}@{d}": _counts(s, d) for s in SDZE_Q for d in DIMS}


#: the zeroth-order solvers whose step can be captured as a CUDA graph (cuda_graph=true)
GRAPHED = ["sdze", "zo", "zo[crns=true]"]


class GraphGenerators:
    """How many generators a captured zeroth-order step registers with its graph (the length of
    its schedule, ``generator_seeds()``, at the stationary step): each is seeded before every
    replay and costs two small fills on the device there (docs/roofline.md, "sdze's step can be
    captured as a CUDA graph"), so a change that adds regenerable pieces to a step shows here.
    52 for sdze at its defaults (3 bases' U and V, the small parts, the points, the probes, the
    momentum's 43 older V of W0), 41 for zo. Counted on the CPU (the schedule is a function of
    the step's index alone)."""

    params = (GRAPHED,)
    param_names = ["solver"]
    version = "graph-generators-v1"
    unit = "count"

    def track_generators(self, solver):
        from pinnbench.bench.solvers import build

        _, _, s, why = build(dict(problem=PROBLEM, dim=DIMS[0], width=128, depth=3,
                                  solver=solver, device="cpu"))
        if why:
            raise RuntimeError(why)
        s.t = s.steady_state_steps
        return len(s.generator_seeds())
