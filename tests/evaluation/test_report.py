"""Paper tables: which rows are shown, chance levels, and the table / Markdown / LaTeX / JSON renderings."""

from __future__ import annotations

import json
import math

import pytest

from norton_core.evaluation import chance_level, render_report, report_rows

RESULTS = {
    "youcook2_clip/R@1": 12.0, "youcook2_clip/R@5": 30.0, "youcook2_clip/R@10": 41.0, "youcook2_clip/MR": 17.0,
    "youcook2_clip/pairs": 343.0, "youcook2_clip/videos": 50.0, "youcook2_clip/skipped_missing_features": 0.0,
    "youcook2_clip/skipped_empty_segment": 2.0,
    "youcook2_video/videos": 50.0, "youcook2_video/capavg_R@1": 40.0, "youcook2_video/dtw_R@1": 30.0,
    "youcook2_video/dtw_exact_R@1": 31.0, "youcook2_video/dtw_centred_R@1": 33.0,
    "youcook2_video/bg_videos": 8.0, "youcook2_video/bg_otam_R@10": 100.0, "youcook2_video/bg_otam_R@1": 25.0,
    "htm_align/recall": 20.0, "htm_align/recall_chance": 13.5, "htm_align/auc": 60.0, "htm_align/videos": 4.0,
    "htm_align/alignable": 19.0, "htm_align/unscored": 0.0,
    "plugin_task/score": 0.5, "plugin_task/score_chance": 0.25, "plugin_task/skipped_bad": 0.0,
}


def test_paper_rows_hide_exact_variants_zero_counters_and_chance_rows():
    rows = report_rows({"a": RESULTS})
    assert rows[:6] == ["youcook2_clip/R@1", "youcook2_clip/R@5", "youcook2_clip/R@10", "youcook2_clip/MR",
                        "youcook2_clip/pairs", "youcook2_clip/videos"]
    assert "youcook2_clip/skipped_empty_segment" in rows  # non-zero: shown
    assert "youcook2_clip/skipped_missing_features" not in rows and "htm_align/unscored" not in rows
    # the shift-invariant DTW is shown beside the reference's (its level-dependence is why); the exact one is not
    assert "youcook2_video/dtw_exact_R@1" not in rows
    order = ["capavg_R@1", "dtw_R@1", "dtw_centred_R@1", "videos", "bg_otam_R@1", "bg_otam_R@10"]
    positions = [rows.index(f"youcook2_video/{m}") for m in order]
    assert positions == sorted(positions)
    assert "htm_align/recall_chance" not in rows and "plugin_task/score_chance" not in rows
    assert "plugin_task/score" in rows and "plugin_task/skipped_bad" not in rows
    # a counter that is zero in one column and not in another is shown
    other = {**RESULTS, "htm_align/unscored": 3.0}
    assert "htm_align/unscored" in report_rows({"a": RESULTS, "b": other})
    assert set(report_rows({"a": RESULTS}, rows="all")) == set(RESULTS)


@pytest.mark.parametrize("key, expected", [
    ("youcook2_clip/R@1", 100 / 343), ("youcook2_clip/R@10", 1000 / 343), ("youcook2_clip/MR", 172.0),
    ("youcook2_video/dtw_centred_R@1", 2.0), ("youcook2_video/bg_otam_R@1", 12.5),
    ("youcook2_video/bg_otam_R@10", 100.0),  # 10 of 8 candidates: certain
    ("htm_align/recall", 13.5), ("htm_align/auc", 50.0), ("plugin_task/score", 0.25),
    ("youcook2_clip/pairs", None), ("htm_align/videos", None),
])
def test_chance_levels(key, expected):
    value = chance_level(key, RESULTS)
    assert value == (pytest.approx(expected) if expected is not None else None)


def test_plain_table_has_a_chance_column_and_one_column_per_target():
    trained = {k: v + 1 for k, v in RESULTS.items()}
    lines = render_report({"untrained": RESULTS, "runs/a step-9 (latest)": trained}).splitlines()
    assert lines[0].split()[:3] == ["task", "metric", "chance"] and lines[0].endswith("runs/a step-9 (latest)")
    row = next(line for line in lines if line.split()[:2] == ["youcook2_clip", "R@1"]).split()
    assert row[2:] == ["0.29", "12.00", "13.00"]
    pairs = next(line for line in lines if " pairs " in line).split()
    assert pairs[-2:] == ["343", "344"]  # counts without decimals, no chance
    # chance levels that differ between columns are listed per column
    smaller = {**RESULTS, "youcook2_clip/pairs": 100.0}
    row = next(line for line in render_report({"a": RESULTS, "b": smaller}).splitlines()
               if line.split()[:2] == ["youcook2_clip", "R@1"])
    assert "0.29 / 1.00" in row


def test_markdown_latex_and_json():
    columns = {"A": RESULTS, "B": {**RESULTS, "htm_align/auc": math.nan}}
    md = render_report(columns, fmt="markdown").splitlines()
    assert md[0] == "| task | metric | chance | A | B |" and md[1] == "|---|---|---:|---:|---:|"
    assert "| youcook2_clip | R@1 | 0.29 | 12.00 | 12.00 |" in md
    assert "|  | auc | 50.00 | 60.00 | n/a |" in md
    assert len(md) == 2 + len(report_rows(columns))
    tex = render_report(columns, fmt="latex", chance=False).splitlines()
    assert tex[0] == r"\begin{tabular}{llrr}" and tex[-1] == r"\end{tabular}"
    assert r"youcook2\_clip & R@1 & 12.00 & 12.00 \\" in tex
    one = json.loads(render_report({"A": columns["B"]}, fmt="json"))
    assert one["htm_align/auc"] is None and one["htm_align/unscored"] == 0.0  # every metric, NaN as null
    both = json.loads(render_report(columns, fmt="json"))
    assert set(both) == {"A", "B"} and both["A"] == RESULTS
