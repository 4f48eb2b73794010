"""The commands that read what is stored or registered: ``pinnbench list``, ``show``,
``export`` and ``report`` (and the report a run writes at its end). Bad input is a
:class:`pinnbench.commands.usage.UsageError` (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from pinnbench.report.console import console as _console, escape, print_verdict, summary_table
from pinnbench.cells.store import StoreError
from pinnbench.commands.usage import UsageError, import_plugins

#: where reports go by default (an ignored folder: generated pages never land in the repository)
REPORTS_DIR = Path("results") / "reports"


def write_report_or_note(store: str, out: str | None, run_id: str | None,
                         all_runs: bool) -> tuple[Path | None, str]:
    """Write the report page of a run (or of every run); (its path, "") or (None, a note why
    none was written), never an exception: a run's results are stored whatever the report does."""
    try:
        from pinnbench.report import ReportError, write_report
    except ImportError as exc:
        return None, f"no report written: the report module is not available ({exc})"
    out_dir = Path(out) if out else REPORTS_DIR / ("all" if all_runs else (run_id or "latest"))
    try:
        return write_report(store, out_dir, run_id=run_id, all_runs=all_runs), ""
    except ReportError as exc:
        return None, f"no report written: {exc}"
    except OSError as exc:
        return None, f"no report written: {os_error_text(exc, out_dir)}"


def os_error_text(exc: OSError, path: Path) -> str:
    """One line for a failed write: what could not be written and why."""
    where = exc.filename if getattr(exc, "filename", None) else path
    return f"cannot write {str(where)!r}: {exc.strerror or exc}"


def cmd_list(args) -> int:
    import_plugins(args.imports)
    con = _console()
    if args.what == "problems":
        from pinnbench.report.console import problem_domain
        from pinnbench.maths.problem_registry import list_problems, problem_class

        ids = list_problems()
        width = max(len(p) for p in ids) if ids else 0
        for pid in ids:
            cls = problem_class(pid)
            terms = "+".join(cls.operator.names) or "-"
            gpinn = "gPINN" if cls.supports_gpinn else ""
            bcs = "; ".join(cls.boundary_conditions)
            con.print(f"{pid:{width}s}  order {cls.order}  terms {terms:12s} d >= {cls.min_dim}  "
                      f"{gpinn:5s}  {problem_domain(pid)}{'  (' + bcs + ')' if bcs else ''}",
                      markup=False)
            if not cls.well_posed:
                con.print(f"{'':{width}s}  ILL-POSED: {cls.ill_posed_reason}", markup=False)
        return 0
    from pinnbench.solver import SOLVERS, format_value, list_solvers

    for name in list_solvers():
        cls = SOLVERS.get(name)
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        con.print(f"[bold]{escape(name)}[/]  {escape(doc[0]) if doc else ''}")
        for pname, p in sorted(cls.all_parameters().items()):
            setting = f"{pname}={format_value(p.default)}"
            con.print(f"    {setting:<20} {p.describe():28s} {p.help}", highlight=False,
                      markup=False)
        for when, values in cls.variant_defaults.items():
            these = ", ".join(f"{k}={format_value(v)}" for k, v in sorted(values.items()))
            con.print(f"    with {when}: {these}", highlight=False, markup=False)
    return 0


def select_run(args) -> str | None:
    from pinnbench.cells import store as store_mod

    try:
        store_mod.check_store(args.store, must_exist=True, writable=False)
        runs = store_mod.list_runs(args.store)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    if args.all:
        if args.run:
            raise UsageError("give --run ID or --all, not both")
        return None
    if not runs:
        raise UsageError(f"the store {args.store!r} holds no run yet")
    ids = [r["run_id"] for r in runs]
    if args.run:
        if args.run not in ids:
            raise UsageError(f"no run {args.run!r} in {args.store!r}; runs: {', '.join(ids[-5:])}")
        return args.run
    return ids[-1]


def cmd_show(args) -> int:
    from pinnbench.cells import store as store_mod
    from pinnbench.cells.run_lease import shown_status

    run_id = select_run(args)
    df = store_mod.load_results(args.store, run_id=run_id)
    rows = [{k: (None if isna(v) else v) for k, v in r.items()} for r in df.to_dict("records")]
    con = _console()
    for r in store_mod.list_runs(args.store):
        if run_id is None or r["run_id"] == run_id:
            status = shown_status(r["status"], r["planner"], r["heartbeat"])
            con.print(f"run {r['run_id']}  {status}  {r['started_at']} -> "
                      f"{r['finished_at'] or '...'}  {r['n_cells']} cells  {r['command']}",
                      markup=False)
    con.print(summary_table(rows))
    if rows:
        print_verdict(con, rows)
    return 0


def isna(v: Any) -> bool:
    try:
        import pandas as pd

        return v is None or (not isinstance(v, (list, dict, str)) and bool(pd.isna(v)))
    except (TypeError, ValueError):
        return False


def cmd_export(args) -> int:
    """Write the rows as CSV or parquet. The output must be a new file or an earlier export
    (same columns) unless --force; a folder or an unwritable path is bad usage (exit 2)."""
    from pinnbench.cells import store as store_mod
    from pinnbench.cells.schema import JSON_COLUMNS

    out = Path(args.out or f"results/pinnbench.{args.format}")
    _check_export_path(out, args.format, args.force)
    run_id = select_run(args) if (args.run or not args.all) else None
    df = store_mod.load_results(args.store, run_id=None if args.all else run_id)
    for name in JSON_COLUMNS:
        df[name] = [json.dumps(v, default=str) for v in df[name]]
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "csv":
            df.to_csv(tmp, index=False)
        else:
            try:
                df.to_parquet(tmp, index=False)
            except ImportError as exc:
                raise UsageError(f"parquet needs pyarrow ({exc}); use --format csv") from None
        os.replace(tmp, out)
    except OSError as exc:
        raise UsageError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    print(f"wrote {len(df)} rows to {out}")
    return 0


def _check_export_path(out: Path, fmt: str, force: bool) -> None:
    if out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a folder; give a file path such as "
                         f"{out / ('pinnbench.' + fmt)}")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot write --out {str(out)!r}: {str(parent)!r} is not a folder")
    if out.exists() and not force and not _is_export(out):
        raise UsageError(f"--out {str(out)!r} exists and is not a pinnbench export; give a new "
                         "path, or --force to overwrite it")


def _is_export(path: Path) -> bool:
    """True for a file that ``pinnbench export`` wrote: CSV with the schema's header, or parquet
    with the schema's columns."""
    from pinnbench.cells.schema import COLUMNS

    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if head.startswith(b"PAR1"):
        try:
            import pyarrow.parquet as pq

            return set(COLUMNS) <= set(pq.read_schema(path).names)
        except Exception:  # noqa: BLE001 - not readable as parquet: not ours
            return False
    first = head.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return first.split(",")[:2] == list(COLUMNS)[:2] and set(first.split(",")) >= set(COLUMNS)


def cmd_report(args) -> int:
    """An empty, missing or unreadable store, or an --out that is not a report folder, is bad
    usage (exit 2), not a blank page or a traceback."""
    from pinnbench.report import ReportError, check_out_dir, write_report

    import_plugins(args.imports)
    run_id = select_run(args)
    out_dir = Path(args.out) if args.out else (
        REPORTS_DIR / ("all" if args.all else (run_id or "latest")))
    try:
        check_out_dir(out_dir, force=args.force)
        path = write_report(args.store, out_dir, run_id=run_id, all_runs=args.all,
                            force=args.force)
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(os_error_text(exc, out_dir)) from None
    print(f"Report: {path}")
    return 0
