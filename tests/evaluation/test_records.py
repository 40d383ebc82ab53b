"""One JSON record per (model, task), written by ``norton evaluate`` and merged by ``norton compare``."""

from __future__ import annotations

import json
import math

import pytest

from norton_core import __version__
from norton_core.cli import main
from norton_core.errors import DataError
from norton_core.evaluation.records import merge_records, record_name, task_records, write_records
from tests.evaluation.test_cli import evaluate, run_dir  # noqa: F401  (fixtures)
from tests.evaluation.test_cli import plugins as plugins  # noqa: F401


def test_records_round_trip_one_file_per_task_with_what_made_them(tmp_path):
    results = {"msrvtt/R@1": 12.5, "msrvtt/videos": 40.0, "msrvtt_qa/accuracy": float("nan")}
    records = task_records("runs/a step-7 (latest)", results, {"msrvtt": "msrvtt", "msrvtt_qa": "msrvtt-qa"},
                           {"checkpoint": "runs/a/checkpoints/step-7/model.safetensors", "generated": True},
                           {"msrvtt": {"max_video_len": 32}})
    paths = write_records(tmp_path, records)
    assert [p.name for p in paths] == ["runs_a_step-7_latest--msrvtt.json", "runs_a_step-7_latest--msrvtt-qa.json"]
    data = json.loads(paths[0].read_text())
    assert data["metrics"] == {"R@1": 12.5, "videos": 40.0} and data["options"] == {"max_video_len": 32}
    assert data["norton_version"] == __version__ and data["generated"] is True and data["task"] == "msrvtt"
    assert json.loads(paths[1].read_text())["metrics"] == {"accuracy": None}  # NaN is null, and reads back as NaN
    columns, _ = merge_records(paths)
    assert columns["runs/a step-7 (latest)"]["msrvtt/R@1"] == 12.5
    assert math.isnan(columns["runs/a step-7 (latest)"]["msrvtt_qa/accuracy"])


def test_merging_refuses_a_second_record_of_the_same_model_and_task_and_foreign_json(tmp_path, capsys):
    record = task_records("m", {"msrvtt/R@1": 1.0}, {"msrvtt": "msrvtt"}, {}, {})
    first = write_records(tmp_path / "a", record)
    second = write_records(tmp_path / "b", record)
    with pytest.raises(DataError, match="a second record of model 'm' on 'msrvtt'"):
        merge_records([*first, *second])
    (tmp_path / "a" / "notes.json").write_text("{}")  # beside records in a directory: left out, and said
    from norton_core.evaluation.records import record_files

    assert record_files([tmp_path / "a"]) == first
    assert "1 JSON file(s) that are not evaluation records left out: notes.json" in capsys.readouterr().err
    (tmp_path / "other.json").write_text('{"R@1": 3}')
    with pytest.raises(DataError, match="not an evaluation record"):
        merge_records([tmp_path / "other.json"])
    (tmp_path / "bad.json").write_text(json.dumps({**record["msrvtt"], "metrics": {"R@1": "high"}}))
    with pytest.raises(DataError, match="'metrics' must map metric names to numbers"):
        merge_records([tmp_path / "bad.json"])
    assert record_name("a/b c", "coin") == "a_b_c--coin.json"
    long = record_name("/very" * 40 + "/run step-9 (latest)", "coin")
    assert len(long) < 130 and long.endswith("_run_step-9_latest--coin.json")
    assert long != record_name("/other" * 40 + "/run step-9 (latest)", "coin")


def test_evaluate_writes_records_that_compare_merges_into_one_table(run_dir, tmp_path, capsys):  # noqa: F811
    evaluate([str(run_dir), "--tasks", "youcook2-clip,msrvtt", "--eval-root", str(tmp_path / "eval")], capsys)
    written = sorted(p.name for p in (run_dir / "evaluations").iterdir())
    label = f"{run_dir} step-7 (latest)"
    assert written == [record_name(label, "msrvtt"), record_name(label, "youcook2-clip")]
    assert written[0].endswith("_runs_demo_step-7_latest--msrvtt.json")
    assert "wrote 2 evaluation record(s)" in evaluate.err  # type: ignore[attr-defined]
    record = json.loads((run_dir / "evaluations" / written[0]).read_text())
    assert record["model"] == f"{run_dir} step-7 (latest)" and record["target"] == str(run_dir)
    assert record["checkpoint"].endswith("step-7/model.safetensors") and record["generated"] is False
    assert record["options"]["max_video_len"] == 32 and record["precision"] == "fp32"
    # a second model, evaluated elsewhere into its own directory
    weights = run_dir / "checkpoints" / "step-7" / "model.safetensors"
    evaluate([str(weights), "--recipe", str(run_dir / "recipe.json"), "--tasks", "msrvtt",
              "--output-dir", str(tmp_path / "collected")], capsys)
    assert main(["compare", str(run_dir / "evaluations"), str(tmp_path / "collected"), "--markdown"]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[0].splitlines()
    assert table[0] == f"| task | metric | chance | {run_dir} step-7 (latest) | {weights} |"
    assert any(line.startswith("| msrvtt | R@1 | 8.33 | 100.00 | 100.00 |") for line in table)
    assert any(line.startswith("| youcook2_clip | R@1 |") and line.endswith("| 100.00 | - |") for line in table)
    # rows and the sources table's task list follow the papers' table, whatever order the files were read in
    assert [line.split("|")[1].strip() for line in table[2:] if line.split("|")[1].strip()] == ["youcook2_clip",
                                                                                                "msrvtt"]
    assert "youcook2-clip, msrvtt" in out
    # a directory that is neither a run nor records is named
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty")]) == 2
    assert "not a run directory (no recipe.json)" in capsys.readouterr().err


def test_compare_puts_a_runs_last_evaluation_beside_records(tmp_path, capsys):
    from tests.runs.test_cli import EVAL_A, fake_run

    run = fake_run(tmp_path, "a", lr=1e-3, steps=8, evaluation=EVAL_A)
    records = task_records("imported", {"htm_align/recall": 44.0, "htm_align/recall_chance": 10.0},
                           {"htm_align": "htm-align"}, {"checkpoint": "videoclip.safetensors"}, {})
    paths = write_records(tmp_path / "records", records)
    assert main(["compare", str(run), str(paths[0]), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| task | metric | chance | a | imported |" in out
    assert "| htm_align | recall | 10.00 | 60.00 | 44.00 |" in out
    assert "| imported | htm-align | videoclip.safetensors |" in out
