"""COIN and CrossTask in paper tables: the reference's numbers with their trivial baselines in the chance column."""

from __future__ import annotations

from norton_core.evaluation import chance_level, render_report

COIN = {"coin/frame_acc": 58.93, "coin/frame_acc_chance": 58.1, "coin/fg_frame_acc": 3.2,
        "coin/fg_frame_acc_chance": 100 / 778, "coin/class_acc": 1.5, "coin/class_acc_chance": 100 / 700,
        "coin/predicted_bg": 97.0, "coin/videos": 2797.0, "coin/frames": 426000.0, "coin/labels": 778.0,
        "coin/threshold": 0.91, "coin/label_gaps": 0.0, "coin/duplicate_labels": 12.0, "coin/segments_cut": 40.0,
        "coin/skipped_missing_features": 0.0}
CROSSTASK = {"crosstask/recall": 33.9, "crosstask/recall_chance": 9.5, "crosstask/tasks": 18.0,
             "crosstask/videos": 1850.0, "crosstask/steps": 12000.0, "crosstask/recall_16815": 40.0,
             "crosstask/skipped_missing_features": 3.0}


def test_the_background_share_is_the_chance_of_frame_accuracy():
    assert chance_level("coin/frame_acc", COIN) == 58.1
    assert chance_level("crosstask/recall", CROSSTASK) == 9.5


def test_paper_rows_show_the_metrics_their_baselines_and_nonzero_counters():
    table = render_report({"model": {**COIN, **CROSSTASK}}, fmt="markdown")
    lines = table.splitlines()
    assert lines[0] == "| task | metric | chance | model |"
    rows = [line.split(" | ")[1] for line in lines[2:]]
    assert rows == ["frame_acc", "fg_frame_acc", "class_acc", "predicted_bg", "videos", "frames",
                    "duplicate_labels", "recall", "videos", "tasks", "steps", "skipped_missing_features"]
    assert "| coin | frame_acc | 58.10 | 58.93 |" in table
    assert "| crosstask | recall | 9.50 | 33.90 |" in table
    assert "| frames |  | 426000 |" in table  # a count, without decimals
