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
