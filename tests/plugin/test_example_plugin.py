"""A real third-party distribution, pip-installed into an isolated target, found through its entry point."""

from __future__ import annotations

import json

import pytest

from tests.plugin.installed import install_example, run_with


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return install_example(tmp_path_factory, "example_plugin")


def run(site, *args, **env):
    return run_with(site, *args, **env)


def test_installed_plugin_is_listed_with_its_version(site):
    result = run(site, "-m", "norton_core.cli", "plugins")
    assert result.returncode == 0, result.stderr
    listing = {p["name"]: p for p in json.loads(result.stdout)}
    assert listing["example_loss"]["distribution"] == "norton-example-loss"
    assert listing["example_loss"]["version"] == "0.2.0"
    assert listing["example_loss"]["components"] == {"loss": ["example-margin"]}
    assert listing["losses"]["distribution"] == "norton"  # the built-ins sit beside it


def test_recipe_names_the_plugin_loss(site, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'requires = ["norton-example-loss>=0.2"]\n[data]\nname = "synthetic"\n[aligner]\nname = "overlapped"\n'
        '[model]\nname = "mmfusion-separate"\n[loss]\nname = "example-margin"\nmargin = 0.1\n'
    )
    result = run(site, "-m", "norton_core.cli", "validate", str(recipe))
    assert result.returncode == 0, result.stderr
    blocked = run(site, "-m", "norton_core.cli", "validate", str(recipe), NORTON_DISABLE_PLUGINS="example_loss")
    assert blocked.returncode == 2
    assert "unknown loss 'example-margin'" in blocked.stderr


@pytest.mark.parametrize("env", [{"NORTON_DISABLE_PLUGINS": "example_loss"},
                                 {"NORTON_DISABLE_PLUGINS": "norton-example-loss"},
                                 {"NORTON_LOAD_PLUGINS": "norton"}])
def test_disabled_plugin_is_neither_imported_nor_listed(site, env):
    code = ("import json, sys; from norton_core import default_plugins; p = default_plugins(); "
            "print(json.dumps([[i['name'] for i in p.as_json()], 'norton_example_loss' in sys.modules]))")
    result = run(site, "-c", code, **env)
    assert result.returncode == 0, result.stderr
    names, imported = json.loads(result.stdout)
    assert "example_loss" not in names and "losses" in names
    assert imported is False
