"""``pinnbench report``: a static page (index.html + PNG figures) from a results store.

``write_report(source, out_dir, run_id=None, all_runs=False)`` reads the rows (a DataFrame in
the schema of ``pinnbench.cells.schema.COLUMNS`` or the path of a store), keeps one run (the latest by
default, ``run_id`` to choose, ``all_runs`` for every run: then the newest row of each cell id),
aggregates over seeds and writes ``out_dir/index.html`` and ``out_dir/figures/*.png``
(figures: :mod:`pinnbench.report.figures`; verdict: :mod:`pinnbench.judge.verdict`). The page reads nothing outside its folder; every string from the store is
HTML-escaped by the template (Jinja2 autoescape).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pandas as pd

from pinnbench.report.aggregate import ReportError, check_columns, decode_json

__all__ = ["ReportError", "write_report", "select_runs"]

TEMPLATE = "report.html.j2"


def _load(source: Any) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        df = source
        where = "the given DataFrame"
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ReportError(f"no results store at {str(path)!r}; run `pinnbench run ...` "
                              "first, or pass the store with --store PATH")
        if path.is_dir():
            raise ReportError(f"{str(path)!r} is a folder, not a results store; pass the "
                              "store file (e.g. results/pinnbench.sqlite) with --store PATH")
        from pinnbench.cells.store import load_results  # lazy: the store module is optional here

        try:
            df = load_results(path)
        except ReportError:
            raise
        except Exception as exc:  # a corrupt or foreign file: say which and why
            raise ReportError(f"cannot read the results store {str(path)!r}: {exc}") from exc
        where = f"the store {str(path)!r}"
    else:
        raise ReportError(f"source must be a pandas DataFrame or the path of a results store, "
                          f"not {type(source).__name__}")
    if df is None or len(df) == 0:
        raise ReportError(f"{where} holds no results; run `pinnbench run ...` first")
    check_columns(df)
    return df


def select_runs(df: pd.DataFrame, run_id: str | None = None,
                all_runs: bool = False) -> pd.DataFrame:
    """Rows of the chosen run(s), tuning trials left out (:func:`tuning_trials`).

    Default: the latest run (largest first ``started_at``; ties and missing times broken by
    order of appearance). ``all_runs``: every run, keeping for each cell id the row that finished
    last, so a resumed or repeated cell counts once in the seed aggregates.
    """
    if run_id is not None and all_runs:
        raise ReportError("choose one run (--run ID) or all runs (--all), not both")
    trials = tuning_trials(df)
    if trials.any():
        # a tuning trial's error is a validation error at the trial's budget: the study's
        # (pinnbench.tuning.page), never a result beside the runs (an ablation store holds its
        # rows' lr studies and then their runs at the chosen lr: issue 21, item 6)
        if trials.all():
            raise ReportError("every cell in these results is a tuning trial (pinnbench tune): "
                              "their page is the study's (python -m pinnbench.tuning.page "
                              "--study-store STUDIES --store STORE --out README.md)")
        df = df[~trials]
    runs = _run_order(df)
    if all_runs:
        ordered = df.assign(_fin=df["finished_at"].astype(str), _pos=range(len(df)))
        ordered = ordered.sort_values(["_fin", "_pos"], kind="stable")
        return ordered.drop_duplicates("cell_id", keep="last").drop(columns=["_fin", "_pos"])
    if run_id is None:
        run_id = runs[-1]
    elif str(run_id) not in runs:
        raise ReportError(f"no run {str(run_id)!r} in the results; runs held: "
                          + ", ".join(runs[-20:]) + (" (latest last)" if len(runs) > 1 else ""))
    return df[df["run_id"].astype(str) == str(run_id)]


def tuning_trials(df: pd.DataFrame) -> pd.Series:
    """Which rows are trials of a ``pinnbench tune`` study (their provenance's ``tuning_trial``
    mark, pinnbench/cells/cellspec.py)."""
    def trial(prov) -> bool:
        p = decode_json(prov) if isinstance(prov, str) else prov
        return isinstance(p, dict) and bool(p.get("tuning_trial"))

    col = df["provenance"] if "provenance" in df else pd.Series([None] * len(df), index=df.index)
    return pd.Series([trial(p) for p in col], index=df.index, dtype=bool)


def _run_order(df: pd.DataFrame) -> list[str]:
    """Run ids, oldest first: by earliest ``started_at`` of their rows, then first appearance."""
    key: dict[str, tuple[str, int]] = {}
    for pos, (rid, started) in enumerate(zip(df["run_id"].astype(str), df["started_at"])):
        t = started if isinstance(started, str) else ""
        if rid not in key:
            key[rid] = (t, pos)
        elif t and (not key[rid][0] or t < key[rid][0]):
            key[rid] = (t, key[rid][1])
    return sorted(key, key=lambda r: key[r])


#: how a page written by ``write_report`` starts its <head> (see the template)
GENERATOR_MARK = '<meta name="generator" content="pinnbench'


def is_report_folder(out: Path) -> bool:
    """True when ``out`` holds a page that ``write_report`` wrote (its index.html carries the
    generator mark)."""
    try:
        with open(out / "index.html", encoding="utf-8", errors="replace") as fh:
            return GENERATOR_MARK in fh.read(4096)
    except OSError:
        return False


def check_out_dir(out_dir: str | Path, force: bool = False) -> Path:
    """The folder a report may be written to, else ReportError (nothing is written): a folder
    that does not exist yet, an empty one, or one holding an earlier pinnbench report; any
    other folder only with ``force`` (its figures/*.png and index.html are then replaced)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {str(out)!r} is a file; the report is a folder (index.html and "
                          "figures/): give a folder path")
    if out.is_dir() and not force and any(out.iterdir()) and not is_report_folder(out):
        raise ReportError(f"--out {str(out)!r} is a folder that holds no pinnbench report; "
                          "give a new or empty folder, or --force to write the report into it "
                          "(replacing its index.html and figures/*.png)")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ReportError(f"cannot create --out {str(out)!r}: {str(parent)!r} is a file")
    return out


def _ablation_section(df, page, style, sections: list[dict], add, suffix: str) -> None:
    """The section of one solver family's ablation page (:mod:`pinnbench.report.ablation`): its
    claims and variant table, and its figures (file names ending in ``suffix``)."""
    from pinnbench.report import ablation

    abl = ablation.section(df, page)
    # a run of one spec of the family (a plain d-sweep, with bp or zo beside it) has claims to
    # check but nothing ablated: no variant table, no ablation figures, a section named for the
    # claims; the reference families (bp, zo) are rows of the table only beside an ablation
    ablated = abl is not None and len({v["solver"] for v in abl["variants"]
                                       if v["family"] == page.family}) > 1
    if abl is not None and not ablated:
        abl["variants"] = []
        sections.append({"title": abl["title"], "figures": [], "ablation": abl})
    if not ablated:
        return
    title = "Ablations" if not suffix else f"Ablations: {page.family}"
    add(title, ablation.error_vs_time(df, style, page), "ablation_error_vs_time" + suffix,
        f"Error against wall time, every {page.cells} variant",
        "Relative L2 error on the test set against the summed step times, one thin line per "
        "cell (colour: spec; all seeds; dashed and clipped: diverged cells), one panel per "
        "problem and d; grey: the constant (dashed) and affine (dotted) fits, medians over "
        "seeds.")
    add(title, ablation.variance_vs_rank(df, page), "variance_vs_rank" + suffix,
        "Gradient-estimate variance against the rank",
        "E‖ĝ − G‖²/‖G‖² of one step's estimate at the final θ (solid), the exploration "
        f"variance about the mean of a held basis (dashed), and the full Gaussian's "
        f"E‖ĝ − G‖²/‖G‖² (dotted, {page.full}=false); medians over seeds "
        "(pinnbench/cells/diagnostics.py).")
    found = [s for s in sections if s["title"] == title]
    if not found:
        sections.append({"title": title, "figures": []})
        found = sections[-1:]
    found[0]["ablation"] = abl


def write_report(source: Any, out_dir: str | Path, run_id: str | None = None,
                 all_runs: bool = False, force: bool = False) -> Path:
    """Write ``out_dir/index.html`` (and ``out_dir/figures/``) and return the page's path.
    ``out_dir`` must be new, empty or an earlier report unless ``force`` (:func:`check_out_dir`);
    a folder that cannot be written raises OSError."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    import pinnbench
    from pinnbench.judge import verdict
    from pinnbench.report import (ablation, aggregate, figures, headline, protocol, provenance,
                                  tables)

    out = check_out_dir(out_dir, force=force)
    df = select_runs(_load(source), run_id=run_id, all_runs=all_runs)
    df = aggregate.prepare(df)
    fams = aggregate.families(df)
    style = figures.SeriesStyle(dict(zip(df["series"], df["label"])))

    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    if fig_dir.is_dir():  # the folder is the report's own: drop figures of an earlier report
        for old in fig_dir.glob("*.png"):
            old.unlink()

    sections: list[dict] = []

    def add(section: str, fig, name: str, title: str, caption: str) -> None:
        if fig is None:
            return
        file = figures.save(fig, out, name)
        for s in sections:
            if s["title"] == section:
                s["figures"].append(figures.SavedFigure(file, title, caption))
                return
        sections.append({"title": section, "figures": [figures.SavedFigure(file, title,
                                                                             caption)]})

    seeds_note = ("Lines: median over seeds (in log space); bands: interquartile range (with "
                  "several seeds). × in the grey band: cells that did not finish or diverged, "
                  "with their status.")
    add("Scaling with d", figures.metric_vs_d(fams, style, "error"), "error_vs_d",
        "Final error against d",
        "Relative L2 error on the fixed test set at the end of training. Grey lines: the "
        "error of the best trivial fits A(x)·c and A(x)·(a + b·x), medians over seeds for "
        "orientation (each seed has its own; the verdicts judge every seed against its own); "
        "a PINN above them has learned less than a constant. " + seeds_note)
    add("Scaling with d", figures.metric_vs_d(fams, style, "time"), "time_vs_d",
        "Time per step against d",
        "Median time of the timed steps (after warm-up, device synchronised). " + seeds_note)
    if figures.memory_above_baseline(fams):
        base = [f.mem_baseline.median for f in fams if f.mem_baseline is not None]
        mem_what = (
            "Peak memory during training above the cell's baseline after set-up (the "
            "interpreter and its libraries, the problem, the model's parameters and the "
            "solver's state; grey dotted line, median over the series at each d; here "
            f"{provenance.format_bytes(min(base))} to {provenance.format_bytes(max(base))}). "
            "The total peak is the line plus the baseline (summary table). ")
    else:
        mem_what = ("Total peak memory, including the interpreter's baseline (some cells did "
                    "not record their baseline). ")
    add("Scaling with d", figures.metric_vs_d(fams, style, "memory", rows=df), "memory_vs_d",
        "Peak memory against d",
        mem_what + "torch.cuda.max_memory_allocated where a GPU was measured, else the "
        "resident set of the cell process. Dash-dotted: total memory of the device, "
        "from the run's provenance, drawn only within 4× of the measured values (the axis is "
        "scaled to the data; so is the baseline line, off the axis when far below). Hollow markers: cells with fewer than "
        f"{verdict.MIN_TRAINED_STEPS} steps (untrained). " + seeds_note)
    for i, problem in enumerate(sorted(df["problem"].unique())):
        add("Convergence", figures.convergence(df, style, problem), f"convergence_{i}",
            f"Convergence: {problem}",
            "Relative L2 error on the test set against training step (top) and wall time "
            "(bottom), one column per d; cells that timed out or diverged keep their logged "
            "curve.")
    seen_params: set[str] = set()
    for param, what in figures.ABLATION_PARAMS.items():
        if what in seen_params:
            continue
        fig = figures.ablation(df, param)
        if fig is not None:
            seen_params.add(what)
        add("Ablations", fig, f"ablation_{param}", f"Ablation: {what}",
            f"Final error and time per step against {what}, other parameters held fixed "
            "(named in each panel's title); one line per d, median over seeds with "
            "interquartile bars.")
    add("Ablations", figures.variance_vs_eps(df, style), "variance_vs_eps",
        "Variance of the zeroth-order difference quotient against ε",
        "Empirical variance of [L(θ+εz) − L(θ−εz)]/(2ε) with common random numbers (solid) "
        "and without (dashed); without CRNS it grows like 1/ε².")
    for k, page in enumerate(ablation.pages(df)):  # the families that declare a page
        _ablation_section(df, page, style, sections, add, "" if k == 0 else f"_{page.family}")

    compare = protocol.section(df)
    profile = protocol.performance_profile(protocol.time_to_target(df))
    compare["figure"] = None if profile is None else figures.SavedFigure(
        figures.save(protocol.profile_figure(profile, style), out, "performance_profile"),
        "Performance profile: time to the constant fit",
        "Fraction of the workloads (problem, d) that the most solvers ran in full, on which a solver's median "
        "time to its own constant fit is within τ times the best solver's (Dolan & Moré 2002; "
        "AlgoPerf); a missed target never counts. At τ = 1: the fraction on which it is the "
        "fastest to target.")
    prov_head, prov_rows = provenance.provenance_table(df)
    verdicts = verdict.problem_verdicts(df.to_dict("records"))
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                      lstrip_blocks=True)
    html = env.get_template(TEMPLATE).render(
        title="pinnbench report",
        runs=sorted(df["run_id"].astype(str).unique()),
        all_runs=all_runs,
        n_rows=len(df),
        problems=sorted(df["problem"].unique()),
        status_counts=tables.status_counts(df),
        sections=sections,
        summary_headings=tables.headings(), summary_keys=tables.keys(),
        verdicts=sorted(verdicts.items()),
        compare=compare,
        headline=headline.section(fams, df),
        why_not_learned=headline.why_not_learned_href(out),
        floor_tolerance=f"{verdict.FLOOR_TOLERANCE:.0%}",
        min_trained_steps=verdict.MIN_TRAINED_STEPS,
        diverged_rel_l2=f"{verdict.DIVERGED_REL_L2:g}",
        diverged_growth=f"{verdict.DIVERGED_GROWTH:g}",
        summary=tables.summary_rows(fams),
        failures=tables.failure_rows(df),
        published=tables.published_rows(df),
        prov_headings=prov_head,
        prov_rows=prov_rows,
        version=pinnbench.__version__,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    page = out / "index.html"
    page.write_text(html, encoding="utf-8")
    return page
