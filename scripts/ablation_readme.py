"""The README of an ablation page, from its store: the protocol first (the folder's PREFACE.md,
written by hand: what ran, where, at which commit and width), then the report's own tables
(pinnbench.report.ablation: the seed-paired differences to the base at equal steps with their
bootstrap intervals, the seeds below their own fits, and the claims), then the commits the
cells recorded. Issue 21, item 6: the re-run's page states its protocol before its results.

    python scripts/ablation_readme.py STORE --preface DIR/PREFACE.md --out DIR/README.md \
        [--title "..."]

Every number comes from the store through the report's tested aggregation, so the committed
README can be recomputed (tests/test_report_tuning_trials.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


DEFAULT_TITLE = "SDZE ablation under the comparison protocol"


def _table(rows: list[dict]) -> list[str]:
    out = ["| factor (one changed) | spec | seeds | final rel L2, median [min, max] | below own "
           "constant / affine fit | paired difference to the base (or the row it is against) "
           "[95 % bootstrap] | pairs | "
           "at step | lowest on the curve (diagnostic) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        note = f" ({r['note']})" if r.get("note") else ""
        out.append(f"| {r['factor']}{note} | `{r['spec']}` | {r['seeds']} | {r['err']} {r['range']} | "
                   f"{r['below_const']} / {r['below_affine']} | {r['diff']} {r['diff_ci']} | "
                   f"{r['pairs']} | {r['pair_steps']} | {r['lowest']} |")
    return out


def _commits(provenance) -> tuple[list[str], int]:
    """(the short commits the cells' provenance records, how many came from a dirty tree)."""
    commits = sorted({p["git_sha"][:7] for p in provenance if p.get("git_sha")})
    return commits, sum(bool(p.get("git_dirty")) for p in provenance)


def _state(df, planned: dict[tuple[str, int], int]) -> list[str]:
    """How much of the plan has run: the run cells in the store per (problem, d) against the
    plan's, and 'incomplete' in words until every planned cell is in."""
    have = df.groupby(["problem", "dim"]).size().to_dict() if len(df) else {}
    done, total = sum(min(have.get(k, 0), n) for k, n in planned.items()), sum(planned.values())
    out = ["## State", ""]
    out.append(f"**Incomplete: {done} of {total} planned run cells are in the store.** The "
               "tables below read those; a row's missing seeds have not run yet." if done < total
               else f"Complete: all {total} planned run cells are in the store.")
    out += ["", "| problem | d | run cells (of the plan) | statuses |", "|---|---|---|---|"]
    for (problem, dim), n in planned.items():
        got = df[(df["problem"] == problem) & (df["dim"] == dim)] if len(df) else df
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(
            got["status"].value_counts().to_dict().items())) if len(got) else "–"
        out.append(f"| {problem} | {dim} | {have.get((problem, dim), 0)} of {n} | {statuses} |")
    return out + [""]


def _in_words(rows: list[dict]) -> list[str]:
    """The table's paired differences in words, grouped by what their intervals say
    (pinnbench.report.ablation.paired_verdict): a difference inside the noise is said to be."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        if r.get("paired_verdict"):
            groups.setdefault(r["paired_verdict"], []).append(r["factor"])
    if not groups:
        return []
    dead = [r["factor"] for r in rows if r.get("learned")]
    return ["In words, each against the base (or the row it is against), at equal steps: " + "; ".join(
        f"{verdict}: {', '.join(factors)}" for verdict, factors in groups.items()) + "." + (
        " Learned nothing (no seed below its own constant fit, so a difference to or from it "
        f"compares runs that did not learn): {', '.join(dead)}." if dead else ""), ""]


def readme(store: str, preface: str, title: str,
           planned: dict[tuple[str, int], int] | None = None) -> str:
    """The page's README; ``planned``: the protocol's run cells per (problem, d), to state how
    much of it the store holds (scripts/ablation_protocol.planned_cells)."""
    from pinnbench.cells.store import load_results
    from pinnbench.report import aggregate, select_runs
    from pinnbench.report.ablation import section

    df = aggregate.prepare(select_runs(load_results(store), all_runs=True))
    out = [f"# {title}", "", preface.strip(), ""]
    if planned is not None:
        out += _state(df, planned)
    sec = section(df) if len(df) else None
    if sec is None:
        return "\n".join(out + ["No ablation cell in this store yet.", ""])
    out += ["## Results at equal steps", "",
            f"Base: `{sec['base_short']}`. Each row changes one factor of it (a row that changes "
            "one factor of another row is named 'X (against Y)' and compared with Y, never "
            "with the base: two factors at once is no comparison); its difference to "
            "the base is the mean over seeds of (variant - base) final error, paired by seed at "
            "the largest evaluated step both cells reached, with a paired bootstrap interval "
            f"({sec['resamples']} resamples, seed {sec['bootstrap_seed']}); a seed counts as "
            "below a fit when its error is below its own seed's fit (docs/protocol.md). The "
            "last column is a diagnostic of the curves' shape, not a result: the median over "
            "seeds of each cell's lowest evaluated test error and of its step (chosen on the "
            "test set, so never compared); a final error far above it means the error rose "
            "after that step.", ""]
    rows = sec["variants"]
    for key in dict.fromkeys((r["problem"], r["dim"]) for r in rows):
        out += [f"### {key[0]}, d = {key[1]:,}", ""]
        these = [r for r in rows if (r["problem"], r["dim"]) == key]
        out += _table(these) + [""] + _in_words(these)
    out += ["## Claims", "", "| claim | verdict | evidence |", "|---|---|---|"]
    out += [f"| {c.claim} | {c.verdict} | {c.evidence} |" for c in sec["claims"]] + [""]
    # the cells on the page (tuning trials left out by select_runs), decoded by prepare
    commits, dirty = _commits(df["provenance"])
    out += ["## Provenance", "",
            f"{len(df)} cells; commits recorded: {', '.join(commits) or 'none'}; cells from a "
            f"tree with uncommitted changes: {dirty}.", ""]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--preface", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default=DEFAULT_TITLE)
    ap.add_argument("--plan", action="store_true",
                    help="state how much of scripts/ablation_protocol.py's plan the store holds")
    args = ap.parse_args(argv)
    for path in (args.store, args.preface):
        if not Path(path).is_file():
            print(f"error: no such file: {path}", file=sys.stderr)
            return 2
    planned = None
    if args.plan:
        from ablation_protocol import planned_cells

        planned = planned_cells()
    text = readme(args.store, Path(args.preface).read_text(encoding="utf-8"), args.title,
                  planned)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
