"""Figures that depend on the machine say so: the training precision is recorded with the weights, and every
evaluation table a run prints, and `norton compare`, label a column trained in anything but fp32."""

from __future__ import annotations

import json

from norton_core.engine.loop import print_evaluation
from norton_core.evaluation.targets import resolve_targets
from norton_core.runs.cli import compare_evaluations
from norton_core.runs.read import column_labels, read_run
from tests.engine.fakes import run_fake as _run

QUICK = {"retrieval": {"enabled": False}}
RESULTS = {"youcook2_clip/R@1": 12.5, "youcook2_clip/R@10": 70.0}


def _header(table: str) -> str:
    return table.splitlines()[0]


def test_two_stage_columns_name_the_precision_that_trained_them(capsys):
    evaluation = {"stage1/before": RESULTS, "stage1/after": RESULTS, "after": RESULTS}
    labels = column_labels(evaluation, "stage2", True, {"stage1/after": "bf16", "after": "fp32"})
    assert list(labels) == ["untrained", "after stage1 (bf16)", "after stage2"]
    print_evaluation(evaluation, "stage2", True, {"stage1/after": "fp32", "after": "bf16+fp32"})
    header = _header(capsys.readouterr().out)
    assert "after stage1 (" not in header and "after stage2 (bf16+fp32)" in header


def test_a_run_records_its_precision_and_compare_labels_it(tmp_path, plugins):
    bf16 = _run(tmp_path, plugins, train={"precision": "bf16", "max_steps": 2, "checkpoint_every": 2}, **QUICK)
    assert bf16.precision == "bf16"
    state = json.loads((bf16.run_dir / "checkpoints" / "step-2" / "state.json").read_text())
    assert state["precision"] == "bf16"
    starts = [json.loads(line) for line in (bf16.run_dir / "metrics.jsonl").read_text().splitlines()
              if '"start"' in line]
    assert [s["precision"] for s in starts] == ["bf16"]
    # resumed in another precision: both made the weights
    again = _run(tmp_path, plugins, train={"precision": "fp32", "max_steps": 3, "checkpoint_every": 2}, **QUICK,
                 resume=True, allow_recipe_change=("train.precision", "train.max_steps"))
    assert again.precision == "bf16+fp32" and read_run(again.run_dir).precision == "bf16+fp32"
    # norton evaluate's column for a checkpoint says it too
    (target,) = resolve_targets(again.run_dir, None, "latest")
    assert target.label == f"{again.run_dir} step-3 (latest) (bf16+fp32)"

    plain = _run(tmp_path, plugins, run={"name": "plain"}, train={"max_steps": 2}, **QUICK)
    assert plain.precision == "fp32"
    assert resolve_targets(plain.run_dir, None, "latest")[0].label == f"{plain.run_dir} step-2 (latest)"
    for result in (again, plain):  # an evaluation of each (the fakes have no evaluation sets)
        (result.run_dir / "eval.json").write_text(json.dumps({"after": RESULTS}))
    header = _header(compare_evaluations([read_run(again.run_dir), read_run(plain.run_dir)], ["fake", "plain"]))
    assert "fake (bf16+fp32)" in header and header.rstrip().endswith("plain")


def test_a_run_that_did_not_record_its_choice_of_auto_says_auto(tmp_path):
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "recipe.json").write_text(json.dumps({"run": {"name": "old"}, "train": {"precision": "auto"}}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"event": "start", "step": 0, "total_steps": 2}) + "\n")
    (run_dir / "eval.json").write_text(json.dumps({"after": RESULTS}))
    assert "old (auto)" in _header(compare_evaluations([read_run(run_dir)], ["old"]))
