"""A two-stage recipe's ``--set`` values that its first stage does not receive are named, never dropped silently."""

from __future__ import annotations

from norton_core.engine import _stage_only_overrides
from norton_core.recipe.load import load_recipe


def test_set_values_the_first_stage_does_not_receive_are_listed():
    recipe = load_recipe("recipes/smoke_cpu.toml", overrides=["run.threads=1", "train.lr=0.01"])
    assert _stage_only_overrides(recipe, {"run.output_dir", "run.cache_dir", "run.device", "run.threads"}) == ["train.lr"]


def test_no_set_values_nothing_to_say():
    recipe = load_recipe("recipes/smoke_cpu.toml")
    assert _stage_only_overrides(recipe, {"run.threads"}) == []


def test_a_child_of_a_two_stage_recipe_that_changes_only_data_trains_both_stages_on_it(tmp_path, capsys):
    from norton_core.engine import first_stage
    from norton_core.plugin.manager import default_plugins

    store = tmp_path / "stores"
    child = tmp_path / "mine.toml"
    child.write_text(f'extends = "how2_demo"\n[data]\nname = "how2"\ntrain = "{store / "train"}"\n'
                     f'eval_root = "{tmp_path / "eval"}"\n')
    recipe = load_recipe(child)
    stage = first_stage(recipe, default_plugins())
    assert stage.run.name == "videoclip_demo" and stage.resolved()["data"] == recipe.resolved()["data"]
    assert stage.resolved()["data"]["name"] == "how2" and stage.resolved()["loss"]["name"] == "videoclip-nce"
    out = capsys.readouterr().out
    assert "stage 1/2 trains on this recipe's [data] (name = 'how2'), not on the [data] its own recipe names " \
           "(name = 'synthetic')" in out and "does not receive" not in out
    # the demo itself: the same data in both stages, nothing to say
    first_stage(load_recipe("recipes/how2_demo.toml", overrides=["data.videos=40"]), default_plugins())
    out = capsys.readouterr().out
    assert "differing: videos)" in out  # 40 videos: a --set on the data reaches the first stage too
    first_stage(load_recipe("recipes/how2_demo.toml"), default_plugins())
    assert "trains on this recipe's [data]" not in capsys.readouterr().out
