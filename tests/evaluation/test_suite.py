"""``--suite paper``: which tasks run (present datasets) and which are named missing, and the paper table's columns
(published values only on released data)."""

from __future__ import annotations

import json

import pytest

from norton_core import set_default_plugins
from norton_core.errors import DataError, NortonError
from norton_core.evaluation.suite import PAPER_TASKS, is_generated, present_tasks, render_paper_table
from norton_core.recipe.load import Recipe
from tests.evaluation.fakes import eval_plugins, fake_recipe, make_msrvtt, make_youcook2
from tests.evaluation.test_cli import commit, evaluate


@pytest.fixture
def plugins():
    plugins = eval_plugins()
    set_default_plugins(plugins)
    yield plugins
    set_default_plugins(None)


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def test_present_tasks_need_their_own_files_not_only_the_shared_directory(tmp_path, plugins):
    touch(tmp_path / "youcook2" / "annotations.json")
    touch(tmp_path / "msrvtt" / "MSR_MC_test.csv")  # the QA file alone: MSR-VTT retrieval's CSV is absent
    touch(tmp_path / "coin" / "COIN.json")
    (tmp_path / "crosstask").mkdir()  # the directory without crosstask_release/
    selection = present_tasks(PAPER_TASKS, tmp_path)
    assert selection.present == ["youcook2-clip", "youcook2-video", "msrvtt-qa", "coin"]
    assert selection.missing == {"msrvtt": tmp_path / "msrvtt" / "MSRVTT_JSFUSION_test.csv",
                                 "didemo": tmp_path / "didemo",
                                 "crosstask": tmp_path / "crosstask" / "crosstask_release",
                                 "htm-align": tmp_path / "htm_align"}
    line = selection.missing_line()
    assert line.count("\n") == 0 and f"not under {tmp_path}" in line and "4 of 8" in line
    for task, path in selection.missing.items():
        assert f"{task} (no {path})" in line


def test_present_tasks_follow_the_annotation_option(tmp_path, plugins):
    touch(tmp_path / "coin" / "COIN_v2.json")
    assert present_tasks(["coin"], tmp_path).missing == {"coin": tmp_path / "coin" / "COIN.json"}
    assert present_tasks(["coin"], tmp_path, {"coin": {"annotations": "COIN_v2.json"}}).present == ["coin"]


def test_generated_roots_are_recognised_by_the_marker_or_the_ground_truth_beside_them(tmp_path):
    from norton_core.data.synthetic import generate

    paths = generate(tmp_path / "gen", videos=2, val_videos=0, youcook2_videos=0, htm_align_videos=0,
                     msrvtt_clips=0, msrvtt_qa_questions=0, didemo_videos=0, coin_videos=0, crosstask_videos=0)
    assert is_generated(paths.eval_root)
    (paths.eval_root / "GENERATED").unlink()  # a set generated before the marker existed
    assert is_generated(paths.eval_root)
    (tmp_path / "released").mkdir()
    assert not is_generated(tmp_path / "released")


COLUMNS = {"ours": {"msrvtt_qa/accuracy": 80.0, "msrvtt_qa/accuracy_chance": 20.0, "msrvtt_qa/questions": 50.0,
                    "coin/frame_acc": 61.0, "coin/frame_acc_chance": 58.0, "coin/fg_frame_acc": 12.0,
                    "coin/fg_frame_acc_chance": 3.0, "coin/class_acc": 30.0, "coin/class_acc_chance": 25.0,
                    "msrvtt/R@1": 9.0, "msrvtt/R@5": 21.0, "msrvtt/R@10": 33.0, "msrvtt/videos": 100.0}}


def rows(markdown):
    """``{(task, metric): [cells after the metric]}`` of a markdown table (blank task cells filled)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    out, task = {}, ""
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        task = cells[0] or task
        out[task, cells[1]] = cells[2:]
    return header, out


def test_released_data_get_the_published_columns_beside_ours_and_chance():
    header, body = rows(render_paper_table(COLUMNS, generated=False, fmt="markdown"))
    assert header == ["task", "metric", "chance", "ours", "VideoCLIP (published)", "Norton (published)"]
    assert body["msrvtt", "R@1"] == ["1.00", "9.00", "10.40", "10.70"]  # chance 1 of 100 videos
    assert body["msrvtt_qa", "accuracy"] == ["20.00", "80.00", "73.90", "77.10"]
    assert body["coin", "frame_acc"] == ["58.00", "61.00", "58.90", "-"]  # background everywhere; VideoCLIP only
    assert body["coin", "fg_frame_acc"] == ["3.00", "12.00", "-", "-"]
    # the table order of the paper, only the reported metrics (no counts, no *_chance rows)
    assert list(body) == [("msrvtt", "R@1"), ("msrvtt", "R@5"), ("msrvtt", "R@10"), ("msrvtt_qa", "accuracy"),
                          ("coin", "frame_acc"), ("coin", "fg_frame_acc"), ("coin", "class_acc")]


def test_generated_data_leave_the_published_columns_out_and_say_why():
    out = render_paper_table(COLUMNS, generated=True, fmt="markdown", missing={"didemo": "/x/didemo"})
    header, body = rows(out)
    assert header == ["task", "metric", "chance", "ours"]
    assert "73.90" not in out and "77.10" not in out
    assert "not the released datasets" in out and "no dataset for didemo (/x/didemo)" in out
    latex = render_paper_table(COLUMNS, generated=True, fmt="latex")
    assert "Norton (published)" not in latex and "% published VideoCLIP / Norton values left out" in latex
    data = json.loads(render_paper_table(COLUMNS, generated=False, fmt="json"))
    assert data["published"]["Norton (published)"]["msrvtt_qa/accuracy"] == 77.1
    assert data["chance"]["msrvtt_qa/accuracy"] == 20.0 and data["columns"]["ours"]["coin/class_acc"] == 30.0
    assert json.loads(render_paper_table(COLUMNS, generated=True, fmt="json"))["published"] == {}


def test_a_recipes_suite_adds_its_tasks_and_their_options_are_checked(plugins):
    recipe = Recipe.from_dict({**fake_recipe("/nowhere"), "evaluation": {"tasks": ["msrvtt"], "suite": "paper",
                                                                          "task_options": {"coin": {"window": 8}}}},
                              plugins=plugins)
    assert recipe.evaluation.tasks == ["msrvtt", *(t for t in PAPER_TASKS if t != "msrvtt")]
    assert recipe.components["evaluation.task_options.coin"].config.window == 8
    again = Recipe.from_dict(recipe.resolved(), plugins=plugins)  # a run's recipe.json reads back the same
    assert again.evaluation.tasks == recipe.evaluation.tasks


@pytest.fixture
def suite_run(tmp_path, plugins):
    """A run whose eval root holds the YouCook2 and MSR-VTT retrieval sets only (released layout, no marker)."""
    from tests.evaluation.fakes import FakeModel

    eval_root = tmp_path / "eval"
    make_msrvtt(eval_root, videos=12)
    make_youcook2(eval_root, videos=4, steps=3)
    recipe = Recipe.from_dict({**fake_recipe(eval_root), "evaluation": {"suite": "paper"}}, plugins=plugins)
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps({**recipe.resolved(), "source": "demo.toml"}))
    commit(run, 7, FakeModel(FakeModel.Config()))
    return run


def test_suite_from_the_recipe_runs_what_is_present_and_names_the_rest(suite_run, capsys):
    out = evaluate([str(suite_run), "--format", "markdown"], capsys)
    header, body = rows(out)
    assert header == ["task", "metric", "chance", f"{suite_run} step-7 (latest)", "VideoCLIP (published)",
                      "Norton (published)"]
    assert body["msrvtt", "R@1"][:2] == ["8.33", "100.00"] and body["youcook2_clip", "R@1"][1] == "100.00"
    assert {task for task, _ in body} == {"youcook2_clip", "youcook2_video", "msrvtt"}
    err = evaluate.err  # type: ignore[attr-defined]
    assert "5 of 8 tasks skipped" in err and "msrvtt-qa (no " in err and "htm-align (no " in err
    assert "on youcook2-clip, youcook2-video, msrvtt from" in err
    # the recipe's suite is a default: --tasks still picks tasks (and the plain report)
    out = evaluate([str(suite_run), "--tasks", "msrvtt", "--json"], capsys)
    assert json.loads(out)["msrvtt/R@1"] == 100.0


def test_suite_flag_on_generated_data_and_on_a_root_with_nothing(suite_run, tmp_path, capsys):
    (tmp_path / "eval" / "GENERATED").write_text("")
    out = evaluate([str(suite_run), "--suite", "paper", "--format", "markdown"], capsys)
    assert "(published)" not in out.splitlines()[0] and "not the released datasets" in out
    flat = json.loads(evaluate([str(suite_run), "--suite", "paper", "--json"], capsys))  # the one JSON shape
    assert flat["msrvtt/R@1"] == 100.0 and "youcook2_video/capavg_R@1" in flat and "msrvtt/videos" in flat
    with pytest.raises(NortonError, match="--suite or --tasks"):
        evaluate([str(suite_run), "--suite", "paper", "--tasks", "msrvtt"], capsys)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="none of its datasets is under"):
        evaluate([str(suite_run), "--suite", "paper", "--eval-root", str(tmp_path / "empty")], capsys)


def test_a_task_outside_the_papers_table_follows_it_with_its_own_rows():
    columns = {"ours": {**COLUMNS["ours"], "my_task/score": 3.0, "my_task/skipped_bad": 0.0}}
    header, body = rows(render_paper_table(columns, generated=True, fmt="markdown"))
    assert list(body)[-1] == ("my_task", "score") and body["my_task", "score"] == ["", "3.00"]
