"""``norton evaluate`` on a run directory, a checkpoint directory and a weights file."""

from __future__ import annotations

import argparse
import json

import pytest
from safetensors.torch import save, save_file

from norton_core import set_default_plugins
from norton_core.errors import CheckpointError, NortonError, RecipeError
from norton_core.evaluation.cli import register_commands
from norton_core.recipe.load import Recipe
from tests.evaluation.fakes import FakeModel, eval_plugins, fake_recipe, make_msrvtt, make_youcook2


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
    run.mkdir(parents=True)
    (run / "recipe.json").write_text(json.dumps({**recipe.resolved(), "source": "demo.toml"}))
    commit(run, 7, FakeModel(FakeModel.Config()))
    return run


def commit(run, step, model):
    """A checkpoint as the engine commits it (manifest with sizes and hashes, then ``latest``)."""
    from norton_core.engine.checkpoint import save_checkpoint

    return save_checkpoint(run / "checkpoints", step, {"model.safetensors": save(model.state_dict())}, keep_last=10,
                           log=lambda *_: None)


def evaluate(argv, capsys):
    parser = argparse.ArgumentParser(prog="norton")
    register_commands(parser.add_subparsers())
    args = parser.parse_args(["evaluate", *argv])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    evaluate.err = captured.err  # type: ignore[attr-defined]
    return captured.out


def test_run_directory_json_uses_the_recipes_tasks_and_eval_root(run_dir, capsys):
    results = json.loads(evaluate([str(run_dir), "--json"], capsys))
    assert results["msrvtt/R@1"] == 100.0 and results["msrvtt/videos"] == 12
    assert all(k.startswith("msrvtt/") for k in results)


def test_checkpoint_directory_with_tasks_and_eval_root(run_dir, tmp_path, capsys):
    ckpt = run_dir / "checkpoints" / "step-7"
    out = evaluate([str(ckpt), "--tasks", "youcook2-clip,msrvtt", "--eval-root", str(tmp_path / "eval"),
                    "--batch-size", "5"], capsys)
    lines = out.splitlines()
    assert lines[0].split() == ["task", "metric", "chance", str(ckpt)]
    assert any(line.split()[:2] == ["youcook2_clip", "R@1"] and line.split()[-1] == "100.00" for line in lines)


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
        evaluate([str(weights), "--recipe", str(run_dir / "recipe.json")], capsys)
    assert "missing key(s), e.g. proj" in "\n".join(err.value.lines())
    assert "unexpected key(s), e.g. extra" in "\n".join(err.value.lines())


def test_run_directory_without_a_checkpoint(run_dir, capsys):
    (run_dir / "checkpoints" / "latest").unlink()
    with pytest.raises(CheckpointError, match="latest"):
        evaluate([str(run_dir)], capsys)


def test_a_checkpoint_whose_manifest_hashes_do_not_match_is_refused(run_dir, capsys):
    weights = run_dir / "checkpoints" / "step-7" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # same size, one bit flipped
    weights.write_bytes(bytes(data))
    for target in (run_dir, run_dir / "checkpoints" / "step-7"):
        with pytest.raises(CheckpointError, match="sha256 differs from the manifest"):
            evaluate([str(target)], capsys)


def _best(run_dir, step, model, value):
    """``checkpoints/best`` as the engine keeps it: a complete checkpoint plus selection.json in its manifest."""
    from norton_core.engine.checkpoint import save_best

    selection = {"metric": "val_loss", "value": value, "step": step, "split": "val"}
    save_best(run_dir / "checkpoints", step, {"model.safetensors": save(model.state_dict())}, selection)


def test_checkpoints_latest_best_and_all_say_how_each_was_selected(run_dir, capsys):
    commit(run_dir, 9, FakeModel(FakeModel.Config(planted=False)))  # the latest is a bad model
    _best(run_dir, 7, FakeModel(FakeModel.Config()), 0.125)
    latest = json.loads(evaluate([str(run_dir), "--json"], capsys))
    assert latest["msrvtt/R@1"] < 50
    best = json.loads(evaluate([str(run_dir), "--checkpoints", "best", "--json"], capsys))
    assert best["msrvtt/R@1"] == 100.0
    table = json.loads(evaluate([str(run_dir), "--checkpoints", "all", "--format", "json"], capsys))
    assert list(table) == [f"{run_dir} step-7", f"{run_dir} step-9 (latest)",
                           f"{run_dir} best (step-7, lowest val_loss 0.125 on val)"]
    assert table[f"{run_dir} step-9 (latest)"] == latest
    md = evaluate([str(run_dir), "--checkpoints", "all", "--format", "markdown"], capsys).splitlines()
    assert md[0] == (f"| task | metric | chance | {run_dir} step-7 | {run_dir} step-9 (latest) | "
                     f"{run_dir} best (step-7, lowest val_loss 0.125 on val) |")


def test_selecting_by_a_test_metric_only_when_asked_and_labelled(run_dir, capsys):
    commit(run_dir, 9, FakeModel(FakeModel.Config(planted=False)))
    with pytest.raises(NortonError, match="--checkpoints all"):
        evaluate([str(run_dir), "--select-by-test-metric", "msrvtt/R@1"], capsys)
    out = json.loads(evaluate([str(run_dir), "--checkpoints", "all", "--select-by-test-metric", "msrvtt/R@1",
                               "--json"], capsys))
    assert list(out) == [f"{run_dir} step-7 [chosen by test msrvtt/R@1]", f"{run_dir} step-9 (latest)"]
    assert "test-set selection" in evaluate.err
    out = json.loads(evaluate([str(run_dir), "--checkpoints", "all", "--select-by-test-metric", "msrvtt/MR",
                               "--json"], capsys))
    assert list(out)[0].endswith("[chosen by test msrvtt/MR]")  # lower is better for a median rank
    with pytest.raises(NortonError, match="no checkpoint has that metric"):
        evaluate([str(run_dir), "--checkpoints", "all", "--select-by-test-metric", "msrvtt/R@2"], capsys)


def test_a_run_without_a_best_checkpoint_says_why(run_dir, capsys):
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        evaluate([str(run_dir), "--checkpoints", "best"], capsys)
    with pytest.raises(CheckpointError, match="needs a run directory"):
        evaluate([str(run_dir / "checkpoints" / "step-7"), "--checkpoints", "all"], capsys)


def test_several_targets_side_by_side(run_dir, tmp_path, capsys):
    weights = tmp_path / "random.safetensors"
    save_file(FakeModel(FakeModel.Config(planted=False)).state_dict(), str(weights))
    out = evaluate([str(run_dir), str(weights), "--recipe", str(run_dir / "recipe.json"), "--format", "markdown"],
                   capsys).splitlines()
    assert out[0] == f"| task | metric | chance | {run_dir} step-7 (latest) | {weights} |"
    row = next(line for line in out if "| R@1 |" in line).split("|")
    assert [c.strip() for c in row[3:6]] == ["8.33", "100.00", row[5].strip()] and float(row[5]) < 50
    assert not [line for line in out if "skipped_" in line]  # zero counters are not paper rows
    everything = evaluate([str(run_dir), "--rows", "all"], capsys)
    assert "skipped_missing_features" in everything
    tex = evaluate([str(run_dir), "--format", "latex"], capsys)
    assert tex.startswith("\\begin{tabular}") and "msrvtt & R@1 & 8.33 & 100.00" in tex


def test_a_run_recipe_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    import os

    from norton_core.evaluation.cli import load_recipe_any

    os.mkfifo(tmp_path / "recipe.json")
    with pytest.raises(RecipeError, match=r"recipe\.json: is a FIFO \(named pipe\), not a regular file"):
        load_recipe_any(tmp_path / "recipe.json")
