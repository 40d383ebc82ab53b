"""Every recipe we ship validates against the built-in plugins (torchtune's test_configs idea)."""

from __future__ import annotations

from pathlib import Path

import pytest

from norton_core.recipe import load_recipe
from norton_core.testing import builtin_plugins

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipe_validates(path):
    recipe = load_recipe(path, plugins=builtin_plugins())
    assert recipe.resolved()["model"]["name"]


def test_the_paper_and_demo_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"how2_pretrain.toml", "how2_demo.toml", "videoclip_pretrain.toml"} <= names
