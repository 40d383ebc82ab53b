"""The shipped recipes from a folder outside the checkout: listed, shown, copied, extended by name and trained;
and installed as package data by a (non-editable) wheel install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SHIPPED = sorted(p.stem for p in (ROOT / "recipes").glob("*.toml"))


def norton(cwd: Path, *args: str, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTON_")}
    env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, "-m", "norton_core.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_recipes_lists_shows_and_copies_the_shipped_recipes_from_anywhere(tmp_path):
    listing = norton(tmp_path, "recipes")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines() if line and not line.startswith("(")}
    assert set(rows) == set(SHIPPED)
    assert "The laptop demo" in rows["how2_demo"]  # the header's first sentence
    shown = norton(tmp_path, "recipes", "show", "how2_demo")
    assert shown.stdout == (ROOT / "recipes" / "how2_demo.toml").read_text()
    copied = norton(tmp_path, "recipes", "copy", "how2_demo")
    assert copied.returncode == 0, copied.stderr
    text = (tmp_path / "how2_demo.toml").read_text()
    assert 'extends = "how2_pretrain"' in text and 'pretrain_recipe = "videoclip_demo"' in text
    assert norton(tmp_path, "validate", "how2_demo.toml").returncode == 0  # the copy works where it is
    again = norton(tmp_path, "recipes", "copy", "how2_demo")
    assert again.returncode == 2 and "already exists" in again.stderr
    unknown = norton(tmp_path, "recipes", "show", "how2demo")
    assert unknown.returncode == 2 and "did you mean 'how2_demo'" in unknown.stderr


def test_a_relative_extends_of_a_shipped_recipe_says_how_to_name_it(tmp_path):
    (tmp_path / "mine.toml").write_text('extends = "how2_demo.toml"\n')
    result = norton(tmp_path, "validate", "mine.toml")
    assert result.returncode == 2 and 'the shipped recipe is extends = "how2_demo"' in result.stderr


@pytest.mark.slow
def test_a_recipe_extending_a_shipped_one_validates_and_trains_outside_the_checkout(tmp_path):
    (tmp_path / "mine.toml").write_text('extends = "smoke_cpu"\n\n[run]\nname = "mine"\ncache_dir = "cache"\n')
    checked = norton(tmp_path, "validate", "mine.toml")
    assert checked.returncode == 0, checked.stderr
    dry = norton(tmp_path, "run", "mine.toml", "--dry-run")
    assert f"-> {tmp_path / 'runs'}" in dry.stdout and f"-> {tmp_path / 'cache'}" in dry.stdout
    trained = norton(tmp_path, "run", "mine.toml")
    assert trained.returncode == 0, trained.stderr
    saved = json.loads((tmp_path / "runs" / "mine" / "recipe.json").read_text())
    assert saved["run"]["threads"] == 2  # inherited through smoke_cpu from how2_demo, kept by the [run] merge
    assert [json.loads(x)["step"] for x in (tmp_path / "runs" / "mine" / "metrics.jsonl").read_text().splitlines()
            if "event" not in json.loads(x)] == [1, 2]


def test_a_wheel_install_carries_the_shipped_recipes(tmp_path):
    source = tmp_path / "src"
    top = {".venv", ".git", "runs", "build", "tests", "data"}  # only what a wheel is built from
    shutil.copytree(ROOT, source, ignore=lambda d, names: [n for n in names if (Path(d) == ROOT and n in top)
                                                           or n.endswith(".egg-info") or n == "__pycache__"])
    target = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(target), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    installed = sorted(p.stem for p in (target / "norton_core" / "recipes").glob("*.toml"))
    assert installed == SHIPPED
    shutil.rmtree(source)  # nothing may come from the copied checkout any more
    listing = norton(tmp_path, "recipes", pythonpath=str(target))
    assert listing.returncode == 0, listing.stderr
    assert str(target / "norton_core" / "recipes") in listing.stdout
    (tmp_path / "mine.toml").write_text('extends = "how2_demo"\n[run]\nname = "mine"\n')
    checked = norton(tmp_path, "validate", "mine.toml", pythonpath=str(target))
    assert checked.returncode == 0, checked.stderr
