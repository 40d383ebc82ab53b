"""Tiny studies for the tests: the smoke recipe on a prepared store, Norton against its control arm."""

from __future__ import annotations

import json
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def how2_recipe(path: Path, store: Path, eval_root: Path, *, max_steps: int = 2, first_stage: str = "") -> Path:
    """The smoke recipe (seconds on CPU, no retrieval round) reading the prepared store; ``first_stage`` names a
    recipe trained first."""
    path.write_text(f'extends = {json.dumps(str(RECIPES / "smoke_cpu.toml"))}\n'
                    f'[run]\nthreads = 1\npretrain_recipe = {json.dumps(first_stage)}\n'
                    f'[train]\nmax_steps = {max_steps}\n[retrieval]\nstart_epoch = 2\n'
                    f'[data]\nname = "how2"\ntrain = {json.dumps(str(store))}\neval_root = {json.dumps(str(eval_root))}\n')
    return path


def study_file(path: Path, base: Path, out: Path, seeds: str = "[0, 1]", metrics: str = '["youcook2_clip/R@10"]'
               ) -> Path:
    """A study of the Norton loss against InfoNCE (the control arm) on ``base``."""
    path.write_text(f'name = "paired"\nbase = {json.dumps(str(base))}\noutput_dir = {json.dumps(str(out))}\n'
                    f'seeds = {seeds}\nbaseline = "norton"\nmetrics = {metrics}\n'
                    '[[arms]]\nname = "norton"\n[[arms]]\nname = "nce"\nset = [\'loss={ name = "videoclip-nce" }\']\n')
    return path
