"""The page's first block (pinnbench/report/headline.py): the head-to-head table per problem and
d and its sentences, recomputed by hand from rows with known medians."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pinnbench.report import aggregate, headline, write_report
from pinnbench.cells.schema import COLUMNS
from report_fixtures import parse_page, spec
from test_report_protocol import P, rows as protocol_rows

#: per solver key: time per step (s) and peak above the baseline (bytes) per seed 0, 1, 2
TIME = {"bp": (0.2, 0.3, 0.25), "sdze8": (0.05, 0.04, 0.06)}
ABOVE = {"bp": (4e8, 5e8, 6e8), "sdze8": (1e8, 1e8, 2e8)}
BASELINE = 1e9


def rows() -> pd.DataFrame:
    df = protocol_rows()
    key = ["bp" if s.startswith("bp") else "sdze8" for s in df["solver"]]
    df["time_per_step_s"] = [TIME[k][s] for k, s in zip(key, df["seed"])]
    df["device"] = "cpu"
    df["steps_done"] = 100  # trained: judged against the fits (the curves stop earlier)
    df["peak_gpu_allocated_bytes"] = None
    df["baseline_cpu_bytes"] = BASELINE
    df["peak_cpu_bytes"] = [BASELINE + ABOVE[k][s] for k, s in zip(key, df["seed"])]
    return df[list(COLUMNS)]


@pytest.fixture(scope="module")
def blocks():
    df = aggregate.prepare(rows())
    return {(b["problem"], b["dim"]): b for b in headline.section(aggregate.families(df), df)}


def _mid(v):
    v = sorted(v)
    return v[len(v) // 2]


def test_the_table_holds_the_medians(blocks):
    b = blocks[(P, 100)]
    r = {x["series"]: x for x in b["rows"]}
    # d = 100 final errors: bp all three seeds below (0.3), sdze 0.3, 0.3, 0.8 (test_report_protocol)
    assert r[spec("bp")]["err"] == "3.00e-01" and r[spec("sdze8")]["err"] == "3.00e-01"
    assert r[spec("sdze8")]["seeds"] == "2 of 3 seeds below the constant fit"
    assert r[spec("bp")]["time"] == f"{_mid(TIME['bp']) * 1e3:.3g} ms"
    assert float(r[spec("sdze8")]["peak_value"]) == _mid(ABOVE["sdze8"])
    assert r[spec("bp")]["ttt"] == "12 s (3 of 3 seeds reached)"


def test_the_sentences_name_the_winner_by_its_factor(blocks):
    s = blocks[(P, 100)]["sentences"]
    # time to target: sdze 2 s (2 of 3 reached), bp 12 s: 6x
    assert "Faster to target: sdze, 6× sooner than bp (2 s vs 12 s)." in s
    lean = f"{_mid(ABOVE['bp']) / _mid(ABOVE['sdze8']):.3g}×"
    assert any(x.startswith(f"Leaner: sdze, {lean} less peak memory above the baseline than bp")
               for x in s), s
    # d = 1000: sdze reached its fit in 1 of 3 seeds only (median inf), bp in 4 s
    s = blocks[(P, 1000)]["sentences"]
    assert "Faster to target: bp reaches its constant fit in 4 s; sdze does not (1 of 3 seeds " \
        "reached)." in s
    # sdze's final errors at d = 1000: 0.8, 0.8, 0.3 (median 0.8) against bp's 0.3
    assert any(x.startswith(f"More accurate: bp, {0.8 / 0.3:.3g}× lower error than sdze") for x in s)
    assert any("but sdze is below its own constant fit in only 1 of 3 seeds" in x for x in s)


#: per solver key: the tensors' peak above the baseline (bytes), per seed 0, 1, 2
TENSORS = {"bp": (3e6, 3e6, 3e6), "sdze8": (2e7, 2e7, 4e7)}


def test_a_cpu_cells_tensors_stand_beside_its_peak():
    """The exact figure (tensor_peak_above_baseline_bytes, its median over seeds) in the table's peak
    cell and in the leaner sentence, with its own factor and winner (which need not be the
    resident set's); absent where no cell recorded it (a store written before the column, a
    GPU run)."""
    from pinnbench.report.provenance import format_bytes

    df = rows()
    key = ["bp" if s.startswith("bp") else "sdze8" for s in df["solver"]]
    df["tensor_peak_above_baseline_bytes"] = [TENSORS[k][s] for k, s in zip(key, df["seed"])]
    df = aggregate.prepare(df)
    b = {(x["problem"], x["dim"]): x for x in headline.section(aggregate.families(df), df)}
    r = {x["series"]: x for x in b[(P, 100)]["rows"]}
    assert r[spec("bp")]["tensors"] == format_bytes(_mid(TENSORS["bp"]))
    assert r[spec("sdze8")]["tensors"] == format_bytes(_mid(TENSORS["sdze8"]))
    lean = [x for x in b[(P, 100)]["sentences"] if x.startswith("Leaner")]
    # sdze is the leaner by the resident set (1e8 against 5e8 above the baseline), bp by the
    # tensors (3e6 against 2e7): the sentence says both
    factor = f"{_mid(TENSORS['sdze8']) / _mid(TENSORS['bp']):.3g}×"
    assert lean[0].startswith("Leaner: sdze,"), lean
    assert f"tensors' peak above the baseline (exact: the state built in training plus one " \
        f"step's own tensors, where the resident set also holds the heap's slack, which varies " \
        f"from run to run: docs/protocol.md), bp, {factor} ({format_bytes(_mid(TENSORS['bp']))} vs " \
        f"{format_bytes(_mid(TENSORS['sdze8']))}): the other way round" in lean[0], lean
    plain = {(x["problem"], x["dim"]): x for x in
             headline.section(aggregate.families(aggregate.prepare(rows())),
                              aggregate.prepare(rows()))}
    assert all(x["tensors"] == "" for x in plain[(P, 100)]["rows"])
    assert not any("tensors' peak" in x for x in plain[(P, 100)]["sentences"])


def test_without_a_target_reached_speed_is_per_step():
    df = rows()
    df["floor_const_rel_l2"] = 0.01  # nobody reaches it
    df["floor_const_rel_l2_lo"], df["floor_const_rel_l2_hi"] = 0.0099, 0.0101
    df = aggregate.prepare(df)
    (b, _) = headline.section(aggregate.families(df), df)
    factor = f"{_mid(TIME['bp']) / _mid(TIME['sdze8']):.3g}×"
    assert any(x.startswith(f"Faster per step: sdze, {factor}") for x in b["sentences"])
    assert not any("to target" in x and x.startswith("Faster to") for x in b["sentences"])


def test_the_page_opens_with_the_head_to_head_block(tmp_path):
    html = write_report(rows(), tmp_path / "r").read_text(encoding="utf-8")
    assert html.index('id="headline"') < html.index('id="verdict"')
    page = parse_page(html)
    assert "headline-1" in page.tables and "headline-2" in page.tables


def test_provenance_floats_are_rounded():
    from pinnbench.report.provenance import format_value

    assert format_value("floor_time_s", 0.12345678901234567) == "0.1235"
    assert format_value("closed_forms", {"t": 1.0000000000000002, "n": [3.14159265358979]}) \
        == '{"n": [3.142], "t": 1.0}'
    assert format_value("threads", 4) == "4"


def test_specs_are_shown_by_their_non_default_parameters():
    from pinnbench.report.aggregate import nondefault_spec
    from pinnbench.solver import SOLVERS

    declared = SOLVERS.get("sdze").all_parameters()
    full = "sdze[" + ",".join(f"{k}={_text(p.default)}" for k, p in sorted(declared.items())) + "]"
    assert nondefault_spec(full) == "sdze"
    rank = declared["rank"].default
    changed = full.replace(f"rank={rank}", "rank=4")
    assert f"rank={rank}" in full and rank != 4 and nondefault_spec(changed) == "sdze[rank=4]"
    assert nondefault_spec("nosuchsolver[x=1]") == "nosuchsolver[x=1]"


def _text(v):
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def test_a_plain_run_has_claims_but_no_ablation_section(tmp_path):
    html = write_report(rows(), tmp_path / "r").read_text(encoding="utf-8")
    assert "<h2>SDZE&#39;s claims</h2>" in html or "<h2>SDZE's claims</h2>" in html
    assert "<h2>Ablations</h2>" not in html and "variants-table" not in html
    assert "claims-table" in html


def test_a_solver_that_did_not_learn_links_to_the_reason(tmp_path):
    """Where a solver is below its own constant fit in at most half its seeds, the block says it
    did not learn there and links to the docs section that says why; the anchor exists."""
    import re
    from pathlib import Path

    df = aggregate.prepare(rows())
    blocks = {(b["problem"], b["dim"]): b for b in headline.section(aggregate.families(df), df)}
    assert blocks[(P, 1000)]["not_learned"] == ["sdze"]  # 1 of 3 seeds below at d = 1000
    assert blocks[(P, 100)]["not_learned"] == []  # 2 of 3 and 3 of 3
    page = write_report(rows(), tmp_path / "r")
    html = page.read_text(encoding="utf-8")
    links = re.findall(r'class="meta not-learned">sdze: [^<]*<a href="([^"]+)"', html)
    assert len(links) == 1, html[html.find("not-learned") - 200:][:800]
    target, anchor = links[0].split("#")
    doc = (page.parent / target).resolve()
    assert doc == Path(headline.__file__).resolve().parents[2] / "docs" / "protocol.md"
    # the anchor is GitHub's slug of a heading of that file
    slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
             for h in re.findall(r"^#+ (.*)$", doc.read_text(encoding="utf-8"), re.M)}
    assert anchor in slugs, slugs
