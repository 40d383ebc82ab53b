"""A real third-party distribution, pip-installed into an isolated target, found through its entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[1] / "example_plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "example_plugin"
    shutil.copytree(EXAMPLE, source)  # build outside the checkout: setuptools writes build/ and *.egg-info
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(target), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"pip install of the example plugin failed:\n{result.stderr}")
    return target


def run(site, *args, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NORTON_")}
    full_env.update(PYTHONPATH=str(site), **env)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env, timeout=120)


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
