"""Result DataFrames in the schema of pinnbench.cells.schema.COLUMNS, with known numbers, for the
report tests. Values follow closed formulas so the tests can state the expected medians:

    final_rel_l2(seed)    = ERR[solver] * (d / 1000) ** 0.1 * (1 + 0.1 * seed)
    time_per_step_s(seed) = TIME[solver] * (d / 1000) * (1 + 0.05 * seed)
    data_time_per_step_s  = DATA_SHARE * time_per_step_s,  solver_time_per_step_s the rest
    peak_gpu_allocated    = MEM[solver] * (d / 1000) ** 0.5 * (1 + 0.01 * seed)   (bytes)

Families (problem P1 unless stated; seeds 0, 1, 2 unless stated):
- bp at d = 1e3, 1e4 ok; at d = 1e5 every seed OOM;
- zo (its spec carries a ``<script>`` parameter) at 1e3 ok; at 1e4 every seed diverged; at 1e5
  seed 0 timed out, seeds 1 and 2 ok;
- sdze rank 8, CRNS on at 1e3, 1e4, 1e5 ok;
- sdze rank 8, CRNS off at 1e3 (seeds 0 and 1 only, both ok) and 1e4 (seeds 0, 1 diverged);
- sdze rank 16, CRNS on at 1e3: a single seed (0);
- problem P2: bp and sdze rank 8 CRNS on at 1e3 and 1e4.
"""

from __future__ import annotations

import json
import math

import pandas as pd

from pinnbench.cells.schema import COLUMNS

P1 = "poisson-2body-v1"
P2 = "allen-cahn-2body-v1"
SCRIPT = "<script>window.__pwned = 1</script>"
OOM_MESSAGE = "CUDA out of memory. Tried to allocate 20.00 GiB <img src=x onerror='window.__pwned=2'>"
DEVICE_MEMORY = 85_520_809_984  # what torch reports for an H100 80GB HBM3

COMMON = {"points": 100, "probes": 16}
SOLVERS = {
    "bp": ("bp", {**COMMON}),
    "zo": ("zo", {**COMMON, "eps": 0.001, "tag": SCRIPT}),
    "sdze8": ("sdze", {**COMMON, "crns": True, "eps": 0.001, "rank": 8}),
    "sdze8off": ("sdze", {**COMMON, "crns": False, "eps": 0.001, "rank": 8}),
    "sdze16": ("sdze", {**COMMON, "crns": True, "eps": 0.001, "rank": 16}),
}
ERR = {"bp": 2e-3, "zo": 3e-1, "sdze8": 1e-2, "sdze8off": 2e-1, "sdze16": 8e-3}
TIME = {"bp": 4e-3, "zo": 2e-3, "sdze8": 1e-3, "sdze8off": 1e-3, "sdze16": 1.5e-3}
MEM = {"bp": 2e9, "zo": 3e8, "sdze8": 3e8, "sdze8off": 3e8, "sdze16": 3.2e8}
FLOOR_CONST, FLOOR_AFFINE = 0.9, 0.6

#: keys as pinnbench.cells.provenance.collect writes them (``pid`` differs per cell)
PROVENANCE = {
    "pinnbench_version": "0.1.0", "git_sha": "0123abcd", "git_dirty": False, "python": "3.11.2",
    "torch": "2.11.0", "cuda": "12.8", "cudnn": 91002, "device": "cuda",
    "device_name": "NVIDIA H100 80GB HBM3", "gpu_total_memory_bytes": DEVICE_MEMORY,
    "cpu": "Intel Xeon Platinum 8480+", "cpu_count": 16, "torch_threads": 16,
    "host": "gpu-node-1", "platform": "Linux-6.1-x86_64",
    "command": f"pinnbench run --problems {P1} --dims 1e3,1e4,1e5", "pid": 4242,
}

#: (key, problem, dim, seeds, status)
PLAN = [
    ("bp", P1, 1000, (0, 1, 2), "ok"),
    ("bp", P1, 10000, (0, 1, 2), "ok"),
    ("bp", P1, 100000, (0, 1, 2), "oom"),
    ("zo", P1, 1000, (0, 1, 2), "ok"),
    ("zo", P1, 10000, (0, 1, 2), "diverged"),
    ("zo", P1, 100000, (0,), "timeout"),
    ("zo", P1, 100000, (1, 2), "ok"),
    ("sdze8", P1, 1000, (0, 1, 2), "ok"),
    ("sdze8", P1, 10000, (0, 1, 2), "ok"),
    ("sdze8", P1, 100000, (0, 1, 2), "ok"),
    ("sdze8off", P1, 1000, (0, 1), "ok"),
    ("sdze8off", P1, 10000, (0, 1), "diverged"),
    ("sdze16", P1, 1000, (0,), "ok"),
    ("bp", P2, 1000, (0, 1, 2), "ok"),
    ("bp", P2, 10000, (0, 1, 2), "ok"),
    ("sdze8", P2, 1000, (0, 1, 2), "ok"),
    ("sdze8", P2, 10000, (0, 1, 2), "ok"),
]

CURVE_STEPS = (0, 1, 10, 100, 1000)


def spec(key: str) -> str:
    name, params = SOLVERS[key]
    body = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(params.items()))
    return f"{name}[{body}]"


def _fmt(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def err(key: str, dim: int, seed: int) -> float:
    return ERR[key] * (dim / 1000) ** 0.1 * (1 + 0.1 * seed)


def time_per_step(key: str, dim: int, seed: int) -> float:
    return TIME[key] * (dim / 1000) * (1 + 0.05 * seed)


#: the part of a step spent drawing its data, in the fixture rows
DATA_SHARE = 0.3


def data_time(key: str, dim: int, seed: int) -> float:
    return DATA_SHARE * time_per_step(key, dim, seed)


def solver_time(key: str, dim: int, seed: int) -> float:
    return time_per_step(key, dim, seed) - data_time(key, dim, seed)


def mem(key: str, dim: int, seed: int) -> int:
    return int(MEM[key] * (dim / 1000) ** 0.5 * (1 + 0.01 * seed))


def base_row() -> dict:
    """A finished cell with every schema column set (override what a test needs); columns a
    newer schema adds start empty."""
    row = {
        "run_id": "run-b", "cell_id": "", "problem": P1, "dim": 1000, "solver": spec("bp"),
        "solver_name": "bp", "solver_params": dict(SOLVERS["bp"][1]), "seed": 0,
        "steps": 1000, "time_budget_s": math.nan, "width": 128, "depth": 3, "device": "cuda",
        "dtype": "float32", "status": "ok", "message": "", "steps_done": 1000,
        "setup_time_s": 0.5, "time_per_step_s": 1e-3, "time_per_step_iqr_s": 1e-4,
        "total_time_s": 2.0, "peak_cpu_bytes": 2_000_000_000, "baseline_cpu_bytes": 1_500_000_000,
        "peak_gpu_allocated_bytes": 300_000_000, "peak_gpu_reserved_bytes": 400_000_000,
        "n_params": 128 * 1000 + 128 * 128 * 2 + 128 * 3 + 129, "param_bytes": 4 * 161_665,
        "final_rel_l2": 1e-2, "final_rel_l1": 1e-2, "final_max_abs": 1e-2, "best_rel_l2": 1e-2,
        "best_step": 1000, "final_loss": 1e-3, "curve": [], "floor_const_rel_l2": FLOOR_CONST,
        "floor_affine_rel_l2": FLOOR_AFFINE, "provenance": dict(PROVENANCE),
        "started_at": "2026-03-02T10:00:00Z", "finished_at": "2026-03-02T10:05:00Z",
    }
    return {**{k: None for k in COLUMNS}, **row}


def n_params(dim: int, width: int = 128, depth: int = 3) -> int:
    return dim * width + width + (depth - 1) * (width * width + width) + width + 1


def make_row(key: str, problem: str, dim: int, seed: int, status: str) -> dict:
    name, params = SOLVERS[key]
    row = base_row()
    e = err(key, dim, seed)
    t = time_per_step(key, dim, seed)
    steps_done = {"ok": 1000, "diverged": 100, "timeout": 10, "oom": 0}[status]
    row.update(
        cell_id=f"{problem}|{dim}|{spec(key)}|{seed}", problem=problem, dim=dim,
        provenance={**PROVENANCE, "pid": 4242 + 7 * seed + dim % 97},
        solver=spec(key), solver_name=name, solver_params=dict(params), seed=seed,
        status=status, steps_done=steps_done, n_params=n_params(dim),
        param_bytes=4 * n_params(dim), time_per_step_s=t, total_time_s=1000 * t + 0.5,
        data_time_per_step_s=data_time(key, dim, seed),
        solver_time_per_step_s=solver_time(key, dim, seed),
        peak_gpu_allocated_bytes=mem(key, dim, seed),
        peak_gpu_reserved_bytes=int(1.2 * mem(key, dim, seed)),
        final_rel_l2=e, final_rel_l1=0.8 * e, final_max_abs=3 * e, best_rel_l2=e,
        curve=[{"step": s, "time_s": s * t, "loss": e, "rel_l2": e * (1000 / max(s, 1)) ** 0.3,
                "rel_l1": e, "max_abs": e} for s in CURVE_STEPS],
    )
    if status == "oom":
        row.update(message=OOM_MESSAGE, time_per_step_s=math.nan, total_time_s=3.0,
                   data_time_per_step_s=None, solver_time_per_step_s=None,
                   peak_gpu_allocated_bytes=None, peak_gpu_reserved_bytes=None,
                   final_rel_l2=math.nan, final_rel_l1=math.nan, final_max_abs=math.nan,
                   best_rel_l2=math.nan, final_loss=math.nan, curve=[])
    elif status == "diverged":
        row.update(message="loss is nan at step 100", final_rel_l2=math.nan,
                   final_rel_l1=math.nan, final_max_abs=math.nan, final_loss=math.nan,
                   curve=[c for c in row["curve"] if c["step"] <= 100]
                   + [{"step": 100, "time_s": 100 * t, "loss": math.nan, "rel_l2": math.nan}])
    elif status == "timeout":
        row.update(message="time budget of 60 s exceeded after 10 steps",
                   curve=[c for c in row["curve"] if c["step"] <= 10])
    if name == "sdze":
        crns = params["crns"]
        row["diagnostics"] = {"zo_quotient_variance": [
            {"eps": eps, "crns": crns, "samples": 64,
             "variance": (12.0 if crns else 1e-2 / (2 * eps**2)) * (dim / 1000) ** 0.2
             * (1 + 0.1 * seed)} for eps in (1e-4, 1e-3, 1e-2, 1e-1)]}
    else:
        row["diagnostics"] = None
    return row


def known_results(diagnostics: bool = True, json_text: bool = False) -> pd.DataFrame:
    """The PLAN above as a DataFrame with exactly the schema columns (plus ``diagnostics``).

    ``json_text``: JSON columns as JSON text, as the raw store holds them.
    """
    rows = [make_row(key, problem, dim, seed, status)
            for key, problem, dim, seeds, status in PLAN for seed in seeds]
    cols = [c for c in COLUMNS if diagnostics or c != "diagnostics"]
    df = pd.DataFrame(rows)[cols]
    if json_text:
        for col in ("solver_params", "curve", "provenance"):
            df[col] = [json.dumps(v) for v in df[col]]
    return df


def expected_families() -> dict[tuple[str, str, int], dict]:
    """(problem, solver spec, d) -> seeds, statuses and the ok seeds' values, from PLAN."""
    out: dict[tuple[str, str, int], dict] = {}
    for key, problem, dim, seeds, status in PLAN:
        fam = out.setdefault((problem, spec(key), dim), {"key": key, "seeds": [], "status": {},
                                                          "ok_seeds": []})
        fam["seeds"] += list(seeds)
        fam["status"][status] = fam["status"].get(status, 0) + len(seeds)
        if status == "ok":
            fam["ok_seeds"] += list(seeds)
    return out


# ------------------------------------------------------------------- reading the page back


class _PageParser:
    """Tables (by id) as rows of cells {tag, attrs, text, spread}, plus every start tag, via
    html.parser; ``spread`` is the text of a cell's ``<span class="spread">`` (the IQR)."""

    def __init__(self, html: str) -> None:
        from html.parser import HTMLParser

        page = self

        class P(HTMLParser):
            def handle_starttag(self, tag, attrs):
                page.on_start(tag, dict(attrs))

            def handle_endtag(self, tag):
                page.on_end(tag)

            def handle_data(self, data):
                page.on_data(data)

        self.tags: list[tuple[str, dict]] = []
        self.tables: dict[str, list[dict]] = {}
        self._table: str | None = None
        self._row: dict | None = None
        self._cell: dict | None = None
        self._span: str | None = None
        self.text: list[str] = []
        p = P(convert_charrefs=True)
        p.feed(html)
        p.close()

    def on_start(self, tag, attrs):
        self.tags.append((tag, attrs))
        if tag == "table":
            self._table = attrs.get("id", "")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = {"attrs": attrs, "cells": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"tag": tag, "attrs": attrs, "parts": [], "spread_parts": []}
        elif tag == "span" and self._cell is not None:
            self._span = attrs.get("class", "")

    def on_end(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._cell["text"] = " ".join("".join(self._cell.pop("parts")).split())
            self._cell["spread"] = " ".join("".join(self._cell.pop("spread_parts")).split())
            self._row["cells"].append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "span":
            self._span = None

    def on_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            key = "spread_parts" if self._span == "spread" else "parts"
            self._cell[key].append(data)


def parse_page(html: str) -> _PageParser:
    return _PageParser(html)


def summary_table(page: _PageParser) -> dict[tuple[str, str, int], dict[str, dict]]:
    """(problem, solver spec, d) -> {data-col: cell} for the summary table's body rows."""
    out = {}
    for row in page.tables["summary-table"]:
        a = row["attrs"]
        if "data-problem" not in a:
            continue
        key = (a["data-problem"], a["data-solver"], int(a["data-dim"]))
        assert key not in out, f"duplicate summary row {key}"
        out[key] = {c["attrs"]["data-col"]: c for c in row["cells"] if "data-col" in c["attrs"]}
        out[key]["_cells"] = row["cells"]
    return out


_FULL_REPORT: dict[str, object] = {}


def full_report(tmp_path_factory):
    """index.html of ``known_results()``, rendered once per test session (it takes seconds)."""
    if "page" not in _FULL_REPORT:
        from pinnbench.report import write_report

        _FULL_REPORT["page"] = write_report(known_results(),
                                            tmp_path_factory.mktemp("full-report"))
    return _FULL_REPORT["page"]
