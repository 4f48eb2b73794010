"""The page of a tuning study (a Markdown README): its protocol, whether every study ran under
it, each study's chosen configuration and every trial, and the wall and CPU time it took.
``python -m pinnbench.tuning.page --study-store S --store R --out DIR/README.md`` (what
scripts/study_defaults runs after its tune)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from pinnbench.solver import format_value
from pinnbench.tuning.defaults import choose, differences
from pinnbench.tuning.study import RULE, protocol_differences, storage_url, summarize


def _fmt(v) -> str:
    if v is None:
        return "-"
    return "inf" if isinstance(v, float) and math.isinf(v) else f"{v:.4g}"


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


def _times(store: Path | None, study_store: Path) -> list[str]:
    """Wall and summed cell CPU times of the tune runs that wrote to ``study_store``."""
    if store is None or not store.is_file():
        return []
    from datetime import datetime

    from pinnbench.cells.store import list_runs, load_results

    lines = []
    df = load_results(store)
    for run in list_runs(store):
        if "pinnbench tune" not in (run["command"] or ""):
            continue
        cells = df[df["run_id"] == run["run_id"]]
        cpu = sum((c or [{}])[-1].get("cpu_time_s") or 0.0 for c in cells["curve"])
        wall = "-"
        if run["finished_at"]:
            wall = (datetime.fromisoformat(run["finished_at"])
                    - datetime.fromisoformat(run["started_at"])).total_seconds()
            wall = f"{wall / 60:.1f} min"
        lines.append(f"| {run['run_id']} | {run['status']} | {run['n_cells']} | {wall} | "
                     f"{sum(cells['total_time_s'].fillna(0)) / 60:.1f} min | {cpu / 60:.1f} min |")
    if not lines:
        return []
    return ["## Time", "", "| run | status | cells | wall | summed cell wall | summed step CPU |",
            "|---|---|---|---|---|---|", *lines, ""]


def progress(studies) -> list[str]:
    """Per d: how many of the planned cells (every asked trial times the protocol's seeds) have
    run, and their statuses, counted from the trials' per-seed records (not from the results
    store, which may hold other runs)."""
    lines = ["## State", "", "| d | studies | trials done | cells run / planned | statuses |",
             "|---|---|---|---|---|"]
    for dim in sorted({s.dim for s in studies}):
        group = [s for s in studies if s.dim == dim]
        planned = sum(s.n_trials * len(s.protocol.get("seeds", ())) for s in group)
        statuses: dict[str, int] = {}
        for s in group:
            for t in s.trials:
                for cell in t["seeds"].values():
                    key = cell.get("status") or "unknown"
                    statuses[key] = statuses.get(key, 0) + 1
        done = sum(s.n_complete for s in group)
        lines.append(f"| {dim} | {len(group)} | {done}/{sum(s.n_trials for s in group)} | "
                     f"{sum(statuses.values())}/{planned} | "
                     f"{', '.join(f'{n} {k}' for k, n in sorted(statuses.items())) or '-'} |")
    return lines + [""]


def page(study_store: Path, store: Path | None = None, title: str = "Tuning study",
         preface: str = "") -> str:
    """The page; ``preface`` (Markdown: what ran where, what it cost) goes under the title."""
    studies = summarize(storage_url(study_store))
    out = [f"# {title}", ""]
    if preface.strip():
        out += [preface.strip(), ""]
    if not studies:
        return "\n".join(out + ["No study in this store yet.", ""])
    proto = studies[0].protocol
    out += progress(studies)
    out += ["## Protocol", "",
            f"- budget {proto['steps']} steps per trial and seed; seeds "
            f"{', '.join(map(str, proto['seeds']))}; sampler {proto['sampler']} (seed "
            f"{proto['sampler_seed']}); MLP {proto['width']}x{proto['depth']}, {proto['dtype']}, "
            f"{proto['device']}",
            f"- selection: {RULE}",
            "- the search space of each solver is the one it declares (docs/tuning.md)", ""]
    diffs = protocol_differences(studies)
    out += ["One protocol for every study: " + ("**yes** (equal trials, budget, seeds, sampler, "
            "rule, model)." if not diffs else "**NO**: " + "; ".join(diffs)), ""]
    out += ["## Chosen configurations", "",
            "| solver | problem | d | trials done | median val rel L2 | chosen (trial) |",
            "|---|---|---|---|---|---|"]
    for s in studies:
        best = s.best
        chosen = f"{_params(best['params'])} (#{best['number']})" if best else "none finite"
        out.append(f"| `{s.solver}` | {s.problem} | {s.dim} | {s.n_complete}/{s.n_trials} | "
                   f"{_fmt(best['value']) if best else '-'} | {chosen} |")
    out += ["", "## The defaults these studies give", "",
            "One configuration per solver spec over all its studies (`pinnbench/tuning/defaults.py`): "
            "the trial with the lowest geometric mean, over the studies, of its objective divided by "
            "that study's best; a trial that failed anywhere or is not done everywhere has none.", "",
            "| solver | configuration | score | studies complete | the solver's defaults now |",
            "|---|---|---|---|---|"]
    for c in choose(studies):
        conf = _params(c.params) if c.score is not None else "none yet"
        state = f"{c.complete}/{c.studies}" + (" (provisional)" if c.provisional else "")
        out.append(f"| `{c.solver}` | {conf} | {_fmt(c.score)} | {state} | {_held(c)} |")
    out += ["", *_times(store, study_store), "## Every trial", ""]
    for s in studies:
        out += [f"### `{s.name}`", "", "space: " + "; ".join(f"{k} {v}" for k, v in
                                                            sorted(s.space.items())), "",
                "| trial | parameters | objective | seeds (status: val rel L2) |",
                "|---|---|---|---|"]
        for t in s.trials:
            seeds = "; ".join(f"{k} {c.get('status')}: {_fmt(c.get('final_val_rel_l2'))}"
                              for k, c in sorted(t["seeds"].items()))
            out.append(f"| {t['number']} | {_params(t['params'])} | {_fmt(t['value'])} | "
                       f"{seeds or t['state']} |")
        out.append("")
    return "\n".join(out)


def _held(choice) -> str:
    """Whether the solver's declared defaults are this choice, or where they differ."""
    if choice.score is None:
        return "-"
    try:
        diff = differences(choice)
    except (KeyError, ValueError) as exc:  # a solver not installed here, or a parameter it no longer has
        return f"not checked ({exc})"
    if not diff:
        return "these"
    return "differ: " + ", ".join(f"{k} {format_value(a)} (chosen {format_value(b)})"
                                  for k, (a, b) in diff.items())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study-store", required=True, type=Path)
    ap.add_argument("--store", type=Path, help="the results store (for the run times)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--title", default="Tuning study")
    ap.add_argument("--preface", type=Path,
                    help="a Markdown file put under the title (kept apart so that the page can "
                         "be rewritten from the stores without losing it)")
    args = ap.parse_args(argv)
    if not args.study_store.is_file():
        print(f"error: no study store at {args.study_store}", file=sys.stderr)
        return 2
    if args.preface is not None and not args.preface.is_file():
        print(f"error: no preface file at {args.preface}", file=sys.stderr)
        return 2
    preface = args.preface.read_text() if args.preface is not None else ""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page(args.study_store, args.store, args.title, preface))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
