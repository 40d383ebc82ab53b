"""``norton evaluate`` on a run directory, a checkpoint directory and a weights file."""

from __future__ import annotations

import argparse
import json

import pytest
from evalfakes import FakeModel, eval_plugins, fake_recipe, make_msrvtt, make_youcook2
from safetensors.torch import save_file

from norton_core import set_default_plugins
from norton_core.errors import CheckpointError, RecipeError
from norton_core.evaluation.cli import register_commands
from norton_core.recipe import Recipe


@pytest.fixture
def plugins():
    plugins = eval_plugins()
    set_default_plugins(plugins)
    yield plugins
    set_default_plugins(None)


@pytest.fixture
def run_dir(tmp_path, plugins):
    """A run directory as the engine writes it, with a planted fake model and an eval root in its data source."""
    eval_root = tmp_path / "eval"
    make_msrvtt(eval_root, videos=12)
    make_youcook2(eval_root, videos=4, steps=3)
    recipe = Recipe.from_dict({**fake_recipe(eval_root), "evaluation": {"tasks": ["msrvtt"]}}, plugins=plugins)
    run = tmp_path / "runs" / "demo"
    ckpt = run / "checkpoints" / "step-7"
    ckpt.mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps({**recipe.resolved(), "source": "demo.toml"}))
    save_file(FakeModel(FakeModel.Config()).state_dict(), str(ckpt / "model.safetensors"))
    (run / "checkpoints" / "latest").write_text("step-7\n")
    return run


def evaluate(argv, capsys):
    parser = argparse.ArgumentParser(prog="norton")
    register_commands(parser.add_subparsers())
    args = parser.parse_args(["evaluate", *argv])
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_run_directory_json_uses_the_recipes_tasks_and_eval_root(run_dir, capsys):
    results = json.loads(evaluate([str(run_dir), "--json"], capsys))
    assert results["msrvtt/R@1"] == 100.0 and results["msrvtt/videos"] == 12
    assert all(k.startswith("msrvtt/") for k in results)


def test_checkpoint_directory_with_tasks_and_eval_root(run_dir, tmp_path, capsys):
    ckpt = run_dir / "checkpoints" / "step-7"
    out = evaluate([str(ckpt), "--tasks", "youcook2-clip,msrvtt", "--eval-root", str(tmp_path / "eval"),
                    "--batch-size", "5"], capsys)
    lines = out.splitlines()
    assert lines[0].split() == ["task", "metric", "value"]
    assert any(line.split()[:3] == ["youcook2_clip", "R@1", "100.00"] for line in lines)


def test_weights_file_needs_a_recipe(run_dir, capsys):
    weights = run_dir / "checkpoints" / "step-7" / "model.safetensors"
    with pytest.raises(RecipeError, match="--recipe"):
        evaluate([str(weights)], capsys)
    results = json.loads(evaluate([str(weights), "--recipe", str(run_dir / "recipe.json"), "--json"], capsys))
    assert results["msrvtt/R@1"] == 100.0


def test_weights_that_do_not_match_the_model_are_refused(run_dir, capsys):
    weights = run_dir / "checkpoints" / "step-7" / "model.safetensors"
    model = FakeModel(FakeModel.Config())
    save_file({"words": model.words.data, "extra": model.proj.data}, str(weights))
    with pytest.raises(CheckpointError) as err:
        evaluate([str(run_dir)], capsys)
    assert "missing key(s), e.g. proj" in "\n".join(err.value.lines())
    assert "unexpected key(s), e.g. extra" in "\n".join(err.value.lines())


def test_run_directory_without_a_checkpoint(run_dir, capsys):
    (run_dir / "checkpoints" / "latest").unlink()
    with pytest.raises(CheckpointError, match="latest"):
        evaluate([str(run_dir)], capsys)
