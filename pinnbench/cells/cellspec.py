"""A cell's spec: the plain dict (JSON round-trip) that says which cell to run and how.

Keys and defaults: ``DEFAULTS``; the keys in ``IDENTITY_KEYS`` define the cell and hash to its
``cell_id``; the others say how to run it:

- ``timeout_s``: wall-clock limit of the whole cell process (isolated only) -> status ``timeout``.
- ``memory_limit_bytes``: address-space headroom (RLIMIT_AS) granted to the cell process on top
  of what it has mapped once torch and the plugins are imported; CPU cells only (CUDA maps huge
  virtual ranges). Exceeding it makes allocations fail -> status ``oom``.
- ``imports``: plugin modules (``package.module``) or files (``path/to/plugins.py``) to import in
  the cell process before the registries are used (third-party or test problems and solvers).
- ``threads``: ``torch.set_num_threads`` in the cell (None: torch's default).
- ``floors``: compute the trivial reference fits (:mod:`pinnbench.judge.floors`) after training.
- ``warmup``: the first steps, excluded from the step timing (they are still training steps).
- ``diagnostics``: after training, record the estimator diagnostics of :mod:`pinnbench.cells.diagnostics`
  (column ``diagnostics``); outside the measurements, so not part of the cell's identity.
- ``validation``: after training, record the error on the validation set (columns
  ``final_val_rel_l2``, its interval; :meth:`pinnbench.maths.problem.Problem.validation_chunks`), what
  ``pinnbench tune`` selects on; outside the measurements, so not part of the cell's identity.
- ``tuned_study`` / ``tuning_trial``: marks, copied to the provenance, of a cell that runs a
  study's chosen configuration (``pinnbench run --tuned``: the study's name) or one trial of a
  study (``pinnbench tune``: ``"<study name>#<trial number>"``); they change nothing it does.
- ``untuned``: why a ``run --tuned`` cell has no configuration to run (its study has no trial
  that trained on every seed); the plan stores it ``skipped`` with that reason, unrun, the mark
  in its provenance (the report reads its values as defaults, not a choice). Not part of the
  identity.
- ``tf32``: allow TensorFloat-32 matmuls and convolutions (CUDA cells only; a CPU cell with it
  is refused). It changes the numbers, so it is part of the identity, but only when true: the
  ids of cells without it are those they always had.
- ``ranks``: shard the input dimension over this many processes (issue 25; docs/sharding.md):
  the cell runs as ``ranks`` processes under torch.distributed (gloo on CPU, NCCL with one GPU
  per rank on CUDA), each holding its coordinates of W0, the points and the probes. A sharded
  cell draws its data by the streamed, per-block definition (:mod:`pinnbench.cells.sharded_ball`), so
  ``ranks`` > 1 is part of the identity (1, the default, keeps the ids cells always had); its
  ranks must agree on when to stop, so it needs ``steps`` and no ``time_budget_s``.

:func:`normalize_spec` fills the defaults and validates every field once.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from pinnbench.plugins import import_plugins

#: the spec keys that define a cell and hash to its cell_id
IDENTITY_KEYS = ("problem", "dim", "solver", "seed", "steps", "time_budget_s", "width", "depth",
                 "device", "dtype", "warmup")
#: keys that define a cell only when not at their default (added after cells were stored: a spec
#: without them keeps the id it always had)
OPTIONAL_IDENTITY_KEYS = ("tf32", "ranks")

@dataclass(frozen=True)
class CellSpec:
    """One cell, validated: its fields and their defaults are declared here once (``DEFAULTS``
    is derived from them; the sweep's configuration and the CLI read them from here).

    ``CellSpec.from_dict(d)`` fills the defaults and validates every field (ValueError naming
    what is allowed); ``to_dict()`` is the plain, JSON round-tripping form that the sweep, the
    executors, the store and the cell process pass along; ``cell_id`` hashes the identity."""

    problem: str
    dim: int
    solver: str
    seed: int = 0
    steps: int | None = 100
    time_budget_s: float | None = None
    width: int = 128
    depth: int = 3
    device: str = "cpu"
    dtype: str = "float32"
    warmup: int = 2
    timeout_s: float | None = None
    memory_limit_bytes: int | None = None
    imports: tuple[str, ...] = ()
    threads: int | None = None
    floors: bool = True
    command: str | None = None
    run_id: str = ""
    diagnostics: bool = False
    tf32: bool = False
    validation: bool = False
    tuned_study: str | None = None
    tuning_trial: str | None = None
    untuned: str | None = None
    ranks: int = 1
    #: filled by validation from ``solver``
    solver_name: str = ""
    solver_params: dict = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "CellSpec":
        d = normalize_spec(spec)
        d["imports"] = tuple(d["imports"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["imports"] = list(self.imports)
        d["solver_params"] = dict(self.solver_params)
        return d

    @property
    def cell_id(self) -> str:
        return cell_id(self.to_dict())


#: the marks a cell carries into its provenance (module docstring): they change nothing it does
MARKS = ("tuned_study", "tuning_trial", "untuned")


def provenance_marks(spec: dict[str, Any]) -> dict[str, str]:
    """The :data:`MARKS` that ``spec`` sets, as its row's provenance records them."""
    return {k: spec[k] for k in MARKS if spec.get(k)}


#: the defaults of every optional field of a cell spec (from :class:`CellSpec`)
DEFAULTS: dict[str, Any] = {
    f.name: (f.default if f.default is not MISSING else f.default_factory())
    for f in fields(CellSpec)
    if (f.default is not MISSING or f.default_factory is not MISSING)
    and f.name not in ("solver_name", "solver_params")}
DEFAULTS["imports"] = []


def normalize_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Fill the defaults, validate every field and canonicalise the solver spec (every parameter
    written out) and the device (``auto`` resolved). Raises ValueError with what is allowed."""
    from pinnbench.maths.problem_registry import problem_class, resolve_device, resolve_dtype
    from pinnbench.solver import solver_from_spec

    unknown = set(spec) - set(DEFAULTS) - set(IDENTITY_KEYS) - {"solver_name", "solver_params"}
    if unknown:
        raise ValueError(f"unknown cell spec key(s) {sorted(unknown)}; allowed: "
                         f"{sorted(set(DEFAULTS) | set(IDENTITY_KEYS))}")
    for key in ("problem", "dim", "solver"):
        if key not in spec:
            raise ValueError(f"cell spec needs {key!r}")
    out = {**DEFAULTS, **spec}
    out["imports"] = list(out["imports"] or [])
    import_plugins(out["imports"])
    cls = problem_class(out["problem"])
    _check_int(out, "dim", minimum=1)
    if out["dim"] < cls.min_dim:
        raise ValueError(f"{out['problem']} needs d >= {cls.min_dim}, got d = {out['dim']}")
    _check_int(out, "seed", minimum=0)
    _check_int(out, "width", minimum=1)
    _check_int(out, "depth", minimum=1)
    _check_int(out, "warmup", minimum=0)
    if out["steps"] is not None:
        _check_int(out, "steps", minimum=1)
    for key in ("time_budget_s", "timeout_s"):
        if out[key] is not None:
            v = out[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 \
                    or not math.isfinite(v):
                raise ValueError(f"{key} must be a number > 0 or None, got {v!r}")
            out[key] = float(v)
    if out["steps"] is None and out["time_budget_s"] is None:
        raise ValueError("a cell needs steps, time_budget_s, or both")
    if out["memory_limit_bytes"] is not None:
        _check_int(out, "memory_limit_bytes", minimum=1)
    if out["threads"] is not None:
        _check_int(out, "threads", minimum=1)
    out["dtype"] = str(resolve_dtype(out["dtype"])).replace("torch.", "")
    out["device"] = str(resolve_device(out["device"]))
    if out["memory_limit_bytes"] is not None and out["device"] != "cpu":
        raise ValueError("memory_limit_bytes (--memory-limit, RLIMIT_AS) works for CPU cells "
                         f"only, not device {out['device']!r}")
    for key in MARKS:
        if out[key] is not None and not isinstance(out[key], str):
            raise ValueError(f"{key} must be a string or None, got {out[key]!r}")
    for key in ("diagnostics", "tf32", "validation"):
        if not isinstance(out[key], bool):
            raise ValueError(f"{key} must be true or false, got {out[key]!r}")
    if out["tf32"] and not out["device"].startswith("cuda"):
        raise ValueError(f"tf32 works for CUDA cells only, not device {out['device']!r}; drop "
                         "--tf32 or use a CUDA device")
    _check_int(out, "ranks", minimum=1)
    if out["ranks"] > 1:
        _check_sharded(out)
    solver = solver_from_spec(out["solver"])
    out["solver"] = solver.spec
    out["solver_name"] = solver.name
    out["solver_params"] = dict(solver.params)
    return out


def _check_sharded(spec: dict) -> None:
    """What a sharded cell (ranks > 1) cannot do: stop on a time budget (its ranks would not
    agree on the step to stop at), diagnostics (estimates on full-width probes)."""
    n = spec["ranks"]
    if spec["time_budget_s"] is not None:
        raise ValueError(f"ranks={n}: a sharded cell stops after steps, not a time budget (its "
                         "ranks must stop at the same step); drop --time-budget")
    if spec["diagnostics"]:
        raise ValueError(f"ranks={n}: diagnostics are not sharded; drop --diagnostics")


def _check_int(spec: dict, key: str, minimum: int) -> None:
    v = spec[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {v!r}")


def cell_id(spec: dict[str, Any]) -> str:
    """Hash of the canonical identity of a (normalised) spec: same cell, same id."""
    identity = {k: spec.get(k, DEFAULTS.get(k)) for k in IDENTITY_KEYS}
    for key in OPTIONAL_IDENTITY_KEYS:  # hashed only off their default: older ids stay the same
        if spec.get(key, DEFAULTS[key]) != DEFAULTS[key]:
            identity[key] = spec[key]
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
