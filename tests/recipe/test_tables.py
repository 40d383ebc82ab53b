"""The engine tables' limits: values that would pass validation and then crash the first step are refused by
``--dry-run`` with one line each."""

from __future__ import annotations

import pytest

from norton_core.errors import RecipeError
from norton_core.recipe.load import load_recipe
from norton_core.recipe.tables import MAX_RUN_NAME, MAX_SEED
from tests.plugin.fakes import recipe_text
from tests.recipe.test_load import plugins, write  # noqa: F401 (the fixture)


def problems(tmp_path, plugins, *overrides):  # noqa: F811
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, recipe_text()), list(overrides), plugins=plugins)
    return info.value.lines()


def test_a_seed_of_2_to_the_32_is_refused_and_the_largest_32_bit_seed_is_taken(tmp_path, plugins):  # noqa: F811
    assert problems(tmp_path, plugins, f"run.seed={2**32}") == [
        f"--set: run.seed: must be <= {MAX_SEED}, got {2**32}"]
    assert load_recipe(write(tmp_path, recipe_text()), [f"run.seed={MAX_SEED}"], plugins=plugins).run.seed == MAX_SEED


def test_a_300_character_run_name_is_refused_by_its_length(tmp_path, plugins):  # noqa: F811
    assert problems(tmp_path, plugins, f'run.name="{"a" * 300}"') == [
        f"--set: run.name: 300 characters, more than the {MAX_RUN_NAME} allowed (it names a directory)"]
    recipe = load_recipe(write(tmp_path, recipe_text()), [f'run.name="{"a" * MAX_RUN_NAME}"'], plugins=plugins)
    assert len(recipe.run.name) == MAX_RUN_NAME


def test_an_output_dir_that_is_a_file_or_below_a_file_is_refused(tmp_path, plugins):  # noqa: F811
    (tmp_path / "afile").write_text("x")
    assert problems(tmp_path, plugins, f'run.output_dir="{tmp_path / "afile"}"') == [
        f"--set: run.output_dir: '{tmp_path / 'afile'}': the run directories' parent exists and is not a directory"]
    below = tmp_path / "afile" / "runs"
    assert problems(tmp_path, plugins, f'run.output_dir="{below}"') == [
        f"--set: run.output_dir: '{below}': a parent of it ({tmp_path / 'afile'}) exists and is not a directory"]
    assert load_recipe(write(tmp_path, recipe_text()), [f'run.output_dir="{tmp_path / "new" / "runs"}"'],
                       plugins=plugins).run.output_dir == str(tmp_path / "new" / "runs")
