"""Pip-install an example distribution of tests/ into an isolated target and run norton with it on the path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parents[1]


def install_example(tmp_path_factory, folder: str) -> Path:
    """``pip install --target`` of ``tests/<folder>`` (built outside the checkout: setuptools writes build/)."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / folder
    shutil.copytree(TESTS / folder, source)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(target), str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"pip install of tests/{folder} failed:\n{result.stderr}")
    return target


def run_with(site: Path, *args: str, cwd: Path | None = None, timeout: int = 120,
             **env: str) -> subprocess.CompletedProcess:
    """``python *args`` with the installed example importable and no NORTON_* variables but ``env``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NORTON_")}
    full_env.update(PYTHONPATH=str(site), **env)
    # not the checkout: `python -m` puts the working directory first on sys.path, and a stale norton.egg-info
    # there (from an old `pip install -e`) would shadow the installed entry points
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=cwd or site.parent)
