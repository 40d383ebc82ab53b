"""Run every cell of a study (resumably) and aggregate the results into a markdown report and plots.

A *cell* is one (data variant, seed, arm). Cells of the same variant and seed share the base recipe's first stage
(``run.pretrain_recipe``: trained once, with the variant's data and the seed), then each arm trains the last stage
with its overrides from that stage's final weights. A finished cell leaves ``<arm>.json`` (its overrides, final
evaluation and diagnostics) beside its run directory and is skipped the next time; an interrupted one resumes from
its newest checkpoint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from norton_core.errors import RecipeError
from norton_core.study.diagnostics import DiagnosticsHook, read_diagnostics
from norton_core.study.spec import Study

HOOK_NAME = "norton-study-diagnostics"
PRETRAIN = "pretrain"


def cell_dir(study: Study, value: Any, seed: int) -> Path:
    return study.output_dir / "cells" / study.variant_label(value) / f"seed{seed}"


def _common(study: Study, value: Any, seed: int, out: Path, name: str) -> list[str]:
    return [*study.set, *study.variant_set(value), f"run.seed={seed}", f"data.seed={seed}",
            f"run.output_dir={json.dumps(str(out))}", f"run.name={json.dumps(name)}"]


def _train_cell(recipe_path: Path, overrides: list[str], record: Path, diagnostics: Any, plugins: Any,
                log: Callable[[str], None], after: list[str] | None = None) -> dict[str, Any]:
    """Train one run unless ``record`` says it is done with the same overrides (and, for an arm, the same first
    stage: ``after`` is that stage's overrides); return the record."""
    from norton_core.engine import train
    from norton_core.recipe.load import load_recipe

    if record.is_file():
        done = json.loads(record.read_text())
        if done.get("overrides") == overrides and done.get("after") == after:
            log(f"norton study: {record.parent.name}/{record.stem}: done, skipped")
            return done
        log(f"norton study: {record}: made with other settings; training it again")
    recipe = load_recipe(recipe_path, overrides, plugins=plugins)
    run_dir = Path(recipe.run.output_dir) / recipe.run.name
    fresh = record.is_file() or not (run_dir / "recipe.json").is_file()
    hook = DiagnosticsHook(recipe, plugins=plugins) if diagnostics else None
    if hook is not None:
        plugins.register(hook, HOOK_NAME, "norton", "study")
    try:
        result = train(recipe, resume=not fresh, overwrite=fresh, plugins=plugins)
    finally:
        if hook is not None:
            plugins.unregister(HOOK_NAME)
    out = {"overrides": overrides, "after": after, "run_dir": str(result.run_dir),
           "evaluation": {k: v for k, v in result.evaluation.items() if "/" not in k},
           "diagnostics": {str(e): r for e, r in read_diagnostics(result.run_dir / "diagnostics.jsonl").items()}}
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(record)
    return out


def run_study(study: Study, plugins: Any = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train every missing cell; return ``{(label, seed, arm): record}`` with ``"pretrain"`` for first stages."""
    from norton_core.plugin.manager import default_plugins

    plugins = plugins or default_plugins()
    stage1 = check_cells(study, plugins)
    results: dict[Any, dict[str, Any]] = {}
    total = len(study.variant_values) * len(study.seeds) * (len(study.arms) + (stage1 is not None))
    n = 0
    for value in study.variant_values:
        for seed in study.seeds:
            where = cell_dir(study, value, seed)
            init, after = [], None
            if stage1 is not None:
                n += 1
                log(f"norton study: [{n}/{total}] {study.variant_label(value)} seed {seed}: first stage {stage1.name}")
                pre = _train_cell(stage1, _common(study, value, seed, where, PRETRAIN), where / f"{PRETRAIN}.json",
                                  False, plugins, log)
                results[study.variant_label(value), seed, PRETRAIN] = pre
                init, after = [f"run.init_from={json.dumps(pre['run_dir'])}"], pre["overrides"]
            for arm in study.arms:
                n += 1
                log(f"norton study: [{n}/{total}] {study.variant_label(value)} seed {seed}: arm {arm.name}")
                overrides = [*_common(study, value, seed, where, arm.name), *arm.set, 'run.pretrain_recipe=""', *init]
                results[study.variant_label(value), seed, arm.name] = _train_cell(
                    study.base, overrides, where / f"{arm.name}.json", study.diagnostics, plugins, log, after)
    return results


def check_cells(study: Study, plugins: Any) -> Path | None:
    """Resolve every cell's recipe before anything trains, so that a typo in the last arm or variant is an error in
    seconds rather than after an hour; all problems at once. Returns the first stage's recipe (None: one stage)."""
    from norton_core.recipe.load import load_recipe

    base = load_recipe(study.base, plugins=plugins)
    stage1 = Path(study.base).parent / base.run.pretrain_recipe if base.run.pretrain_recipe else None
    problems: dict[str, list[str]] = {}
    for value in study.variant_values:
        for seed in study.seeds:
            where = cell_dir(study, value, seed)
            todo = [(a.name, study.base, [*_common(study, value, seed, where, a.name), *a.set,
                                          'run.pretrain_recipe=""']) for a in study.arms]
            if stage1 is not None:
                todo.insert(0, ("first stage", stage1, _common(study, value, seed, where, PRETRAIN)))
            for what, recipe, overrides in todo:
                try:
                    load_recipe(recipe, overrides, plugins=plugins)
                except RecipeError as exc:
                    problems.setdefault(f"{what}: {exc}", []).append(f"{study.variant_label(value)} seed {seed}")
    if problems:
        raise RecipeError(problems=[f"{study.source}: {msg} (cells: {', '.join(cells)})"
                                    for msg, cells in problems.items()])
    return stage1


def collect(study: Study) -> dict[Any, dict[str, Any]]:
    """The records of the finished cells (for a report without training)."""
    out: dict[Any, dict[str, Any]] = {}
    for value in study.variant_values:
        for seed in study.seeds:
            where = cell_dir(study, value, seed)
            for name in (PRETRAIN, *(a.name for a in study.arms)):
                path = where / f"{name}.json"
                if path.is_file():
                    out[study.variant_label(value), seed, name] = json.loads(path.read_text())
    if not out:
        raise RecipeError(f"{study.source}: no finished cells under {study.output_dir} (run `norton study` first)")
    return out


def final_value(record: dict[str, Any], metric: str, label: str = "after") -> float | None:
    value = record.get("evaluation", {}).get(label, {}).get(metric)
    return None if value is None or not math.isfinite(float(value)) else float(value)
