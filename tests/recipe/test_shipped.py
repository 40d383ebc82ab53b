"""Every recipe we ship validates against the built-in plugins (torchtune's test_configs idea)."""

from __future__ import annotations

from pathlib import Path

import pytest

from norton_core.recipe.load import load_recipe
from norton_core.testing import builtin_plugins

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipe_validates(path):
    recipe = load_recipe(path, plugins=builtin_plugins())
    assert recipe.resolved()["model"]["name"]


def test_the_paper_and_demo_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"how2_pretrain.toml", "how2_demo.toml", "videoclip_pretrain.toml"} <= names


def test_videoclip_pretrain_is_videoclips_own_setup():
    recipe = load_recipe(Path(__file__).parents[2] / "recipes" / "videoclip_pretrain.toml", plugins=builtin_plugins())
    out = recipe.resolved()
    lengths = {"max_video_len": 32, "max_len": 96, "sampled_min_len": 8, "sampled_max_len": 64}
    assert {k: out["aligner"][k] for k in lengths} == lengths
    assert (out["aligner"]["sampled_video_min_len"], out["aligner"]["sampled_video_max_len"]) == (3, 32)
    assert {k: out["retrieval"]["aligner"][k] for k in lengths} == lengths  # embedded with the same long clips
    assert (out["train"]["videos_per_batch"], out["train"]["lr"], out["train"]["epochs"]) == (32, 5e-5, 25)
    assert (out["loss"]["name"], out["model"]["freeze"], out["run"]["init_from"]) == ("videoclip-nce", "none", "")
    assert out["retrieval"]["num_cands"] == 64


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_no_shipped_recipe_leaves_its_precision_to_the_machine(path):
    """"auto" trains in bf16 on CPUs with AVX512-BF16 and in fp32 on others, so its figures differ between them."""
    precision = load_recipe(path, plugins=builtin_plugins()).train.precision
    assert precision != "auto"
    if path.name in ("how2_demo.toml", "videoclip_demo.toml", "smoke_cpu.toml"):  # the CPU demos: fp32
        assert precision == "fp32"


def test_the_demo_states_its_precision_itself():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    raw = tomllib.loads((Path(__file__).parents[2] / "recipes" / "how2_demo.toml").read_text())
    assert raw["train"]["precision"] == "fp32"  # not a default that could change under it
