"""Run every cell of a study (resumably) and aggregate the results into a markdown report and plots.

A *cell* is one (data variant, seed, arm). Cells of the same variant and seed share the base recipe's first stage
(``run.pretrain_recipe``: trained once, with the variant's data and the seed), then each arm trains the last stage
with its overrides from that stage's final weights. Each of these trainings is a *stage* of the study.

The seed sets ``run.seed`` of every stage (initial weights, batch order, retrieval rounds), and ``data.seed`` where
the stage's data source declares a ``seed`` option (the ``synthetic`` source: then each seed also draws its own
data set) unless the study's ``set`` or the variant fixes it. A prepared store (``how2``) has no seed: every seed
reads the same data.

A finished stage leaves ``<name>.json`` beside its run directory: its overrides, its provenance (resolved recipe,
data identity, first stage: :mod:`.provenance`), its final evaluation and diagnostics. It is reused only when that
provenance is exactly the one asked for now; otherwise it is trained again, with a line naming what changed. An
interrupted stage (a run directory without a record) resumes from its newest checkpoint when it was started with the
provenance asked for now (``.<name>.started`` keeps a hash of it), and starts afresh otherwise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from norton_core.engine.preempt import Preemption
from norton_core.errors import Preempted, RecipeError
from norton_core.study.diagnostics import DiagnosticsHook, read_diagnostics
from norton_core.study.provenance import data_identity, digest, plain, stale_reason, weights_sha256
from norton_core.study.spec import PRETRAIN, Study, set_keys

HOOK_NAME = "norton-study-diagnostics"

__all__ = ["PRETRAIN", "Stage", "cell_dir", "check_cells", "collect", "final_value", "plan", "run_stage",
           "run_study"]


@attrs.frozen
class Stage:
    """One training of a study: the first stage of a (variant, seed) cell, or one of its arms.

    :ivar overrides: the ``--set`` overrides of ``recipe`` (an arm's ``run.init_from`` is added when its first
        stage is finished); ``seeded``: the keys the seed set (``run.seed``, and ``data.seed`` where it applies).
    :ivar after: the name of the stage whose final weights it starts from (``pretrain``), or None.
    :ivar threads / device: the recipe's ``run.threads`` and ``run.device`` (where ``--jobs`` places it).
    """

    label: str
    seed: int
    name: str
    recipe: Path
    overrides: tuple[str, ...]
    where: Path
    diagnostics: bool
    seeded: tuple[str, ...]
    after: str | None = None
    threads: int = 0
    device: str = "auto"

    @property
    def key(self) -> tuple[str, int, str]:
        return self.label, self.seed, self.name

    @property
    def record(self) -> Path:
        return self.where / f"{self.name}.json"

    @property
    def started(self) -> Path:
        return self.where / f".{self.name}.started"

    @property
    def title(self) -> str:
        return f"{self.label} seed {self.seed}: " + ("first stage" if self.name == PRETRAIN else f"arm {self.name}")


def cell_dir(study: Study, value: Any, seed: int) -> Path:
    return study.output_dir / "cells" / study.variant_dir(value) / f"seed{seed}"


def _common(study: Study, value: Any, seed: int, out: Path, name: str) -> list[str]:
    return [*study.set, *study.variant_set(value), f"run.seed={seed}",
            f"run.output_dir={json.dumps(str(out))}", f"run.name={json.dumps(name)}"]


def plan(study: Study, plugins: Any) -> tuple[list[Stage], Path | None]:
    """Resolve every stage's recipe before anything trains, so that a typo in the last arm or variant is an error in
    seconds rather than after an hour; all problems at once, each with the cells it concerns. Returns the stages in
    training order (each cell's first stage before its arms) and the first stage's recipe (None: one stage)."""
    from norton_core.recipe.load import load_recipe

    base = load_recipe(study.base, plugins=plugins)
    stage1 = Path(study.base).parent / base.run.pretrain_recipe if base.run.pretrain_recipe else None
    problems: dict[str, list[str]] = {}
    stages: list[Stage] = []
    for value in study.variant_values:
        fixed = {k for text in (*study.set, *study.variant_set(value)) for k in set_keys(text)}
        if stage1 is not None and "run.init_from" in fixed:
            problems.setdefault("run.init_from: the first stage's weights start every arm; remove it", []).append(
                study.variant_label(value))
        for seed in study.seeds:
            where = cell_dir(study, value, seed)
            todo: list[tuple[str, Path, list[str], str | None]] = [
                (arm.name, study.base, [*arm.set, 'run.pretrain_recipe=""'], PRETRAIN if stage1 else None)
                for arm in study.arms]
            if stage1 is not None:
                todo.insert(0, (PRETRAIN, stage1, [], None))
            for name, recipe, extra, after in todo:
                what = "first stage" if name == PRETRAIN else name
                if after is not None and any("run.init_from" in set_keys(t) for t in extra):
                    problems.setdefault(f"{what}: run.init_from: the first stage's weights start every arm; "
                                        "remove it", []).append(f"{study.variant_label(value)} seed {seed}")
                try:
                    stages.append(_stage(study, value, seed, where, name, recipe, extra, after, "data.seed" in fixed,
                                         plugins))
                except RecipeError as exc:
                    problems.setdefault(f"{what}: {exc}", []).append(f"{study.variant_label(value)} seed {seed}")
    if problems:
        raise RecipeError(problems=[f"{study.source}: {msg} (cells: {', '.join(cells)})"
                                    for msg, cells in problems.items()])
    return stages, stage1


def _stage(study: Study, value: Any, seed: int, where: Path, name: str, recipe_path: Path, extra: list[str],
           after: str | None, data_seed_fixed: bool, plugins: Any) -> Stage:
    """One stage, its recipe resolved; ``data.seed`` is set only where the data source has that option."""
    from norton_core.recipe.load import load_recipe

    overrides = [*_common(study, value, seed, where, name), *extra]
    recipe = load_recipe(recipe_path, overrides, plugins=plugins)
    seeded = ["run.seed"]
    data = recipe.components["data"]
    if study.diagnostics and name != PRETRAIN and not hasattr(data.cls, "ground_truth_path"):
        raise RecipeError(f"diagnostics = true needs the ground truth of generated data, and the {data.name!r} data "
                          "source has none: set diagnostics = false in the study")
    if not data_seed_fixed and any(f.name == "seed" for f in attrs.fields(type(data.config))):
        overrides.append(f"data.seed={seed}")
        seeded.append("data.seed")
        recipe = load_recipe(recipe_path, overrides, plugins=plugins)
    return Stage(label=study.variant_label(value), seed=seed, name=name, recipe=Path(recipe_path),
                 overrides=tuple(overrides), where=where, diagnostics=study.diagnostics and name != PRETRAIN,
                 seeded=tuple(seeded), after=after, threads=recipe.run.threads, device=recipe.run.device)


def check_cells(study: Study, plugins: Any) -> Path | None:
    """Resolve every stage's recipe (see :func:`plan`); returns the first stage's recipe (None: one stage)."""
    return plan(study, plugins)[1]


def expected(stage: Stage, plugins: Any, first: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """The stage's recipe as it would run now and the provenance a finished stage must have recorded to stand for
    it. ``first`` is the record of the first stage an arm starts from."""
    from norton_core.recipe.load import load_recipe

    overrides = list(stage.overrides)
    first_stage = None
    if stage.after is not None:
        if first is None:
            raise RecipeError(f"{stage.title}: its first stage is not finished")
        overrides.append(f"run.init_from={json.dumps(first['run_dir'])}")
        first_stage = {"provenance_sha256": digest(first.get("provenance")),
                       "weights_sha256": first.get("weights_sha256")}
    recipe = load_recipe(stage.recipe, overrides, plugins=plugins)
    return recipe, {"recipe": plain(recipe.resolved()), "data": data_identity(recipe), "first_stage": first_stage}


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)


def run_stage(stage: Stage, plugins: Any, log: Callable[[str], None], first: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """Train one stage unless its record shows it finished exactly as asked; return the record."""
    from norton_core.engine import train

    recipe, want = expected(stage, plugins, first)
    run_dir = Path(recipe.run.output_dir) / recipe.run.name
    fresh = not (run_dir / "recipe.json").is_file()
    where = f"{stage.where.parent.name}/{stage.where.name}/{stage.name}"
    if stage.record.is_file():
        reason = stale_reason(_read(stage.record) or {}, want)
        if reason is None:
            log(f"norton study: {where}: done, skipped")
            return _read(stage.record)
        log(f"norton study: {where}: {reason}: training it again")
        fresh = True
    elif not fresh and _read(stage.started) != digest(want):
        log(f"norton study: {where}: interrupted after starting with other settings (or before norton recorded "
            "them): training it again from the start")
        fresh = True
    _write(stage.started, digest(want))
    hook = DiagnosticsHook(recipe, plugins=plugins) if stage.diagnostics else None
    if hook is not None:
        plugins.register(hook, HOOK_NAME, "norton", "study")
    try:
        result = train(recipe, resume=not fresh, overwrite=fresh, plugins=plugins)
    finally:
        if hook is not None:
            plugins.unregister(HOOK_NAME)
    out = {"overrides": list(stage.overrides), "seeded": list(stage.seeded), "provenance": want,
           "run_dir": str(result.run_dir), "weights_sha256": weights_sha256(result.run_dir),
           "evaluation": {k: v for k, v in result.evaluation.items() if "/" not in k},
           "diagnostics": {str(e): r for e, r in read_diagnostics(result.run_dir / "diagnostics.jsonl").items()}}
    _write(stage.record, out)
    return out


def run_study(study: Study, plugins: Any = None, log: Callable[[str], None] = print, jobs: int = 1
              ) -> dict[Any, dict[str, Any]]:
    """Train every missing or stale stage (``jobs`` at a time, see :mod:`.parallel`); return
    ``{(label, seed, name): record}`` with ``"pretrain"`` as the name of first stages."""
    from norton_core.plugin.manager import default_plugins

    plugins = plugins or default_plugins()
    stages, _ = plan(study, plugins)
    if jobs > 1:
        from norton_core.study.parallel import run_parallel

        return run_parallel(stages, jobs, log)
    results: dict[Any, dict[str, Any]] = {}
    # one SIGTERM handler over every stage: a signal during a stage commits its step and stops it (the engine), one
    # between stages stops before the next
    with Preemption() as preempt:
        for n, stage in enumerate(stages, 1):
            if preempt.requested:
                raise Preempted(f"SIGTERM: stopped before {stage.title} ({n - 1} of {len(stages)} stages finished and "
                                "recorded); run the study again to continue")
            log(f"norton study: [{n}/{len(stages)}] {stage.title}")
            first = results[stage.label, stage.seed, stage.after] if stage.after else None
            results[stage.key] = run_stage(stage, plugins, log, first)
    return results


def collect(study: Study, plugins: Any = None) -> dict[Any, dict[str, Any]]:
    """The records of the finished stages, each checked against the provenance the study asks for now (for a report
    without training). A record made otherwise is refused, naming the changed keys and the cells."""
    from norton_core.plugin.manager import default_plugins

    plugins = plugins or default_plugins()
    stages, _ = plan(study, plugins)
    out: dict[Any, dict[str, Any]] = {}
    stale: dict[str, list[str]] = {}
    for stage in stages:
        if not stage.record.is_file():
            continue
        cell = f"{stage.label} seed {stage.seed} {stage.name}"
        first = out.get((stage.label, stage.seed, stage.after)) if stage.after else None
        if stage.after is not None and first is None:
            stale.setdefault("its first stage has no valid record", []).append(cell)
            continue
        reason = stale_reason(_read(stage.record) or {}, expected(stage, plugins, first)[1])
        if reason is not None:
            stale.setdefault(reason, []).append(cell)
            continue
        out[stage.key] = _read(stage.record)
    if stale:
        hint = "run `norton study` without --report-only to train them again"
        raise RecipeError(problems=[f"{study.source}: finished cells do not match the study: {reason} (cells: "
                                    f"{', '.join(cells)}); {hint}" for reason, cells in stale.items()])
    if not out:
        raise RecipeError(f"{study.source}: no finished cells under {study.output_dir} (run `norton study` first)")
    return out


def final_value(record: dict[str, Any], metric: str, label: str = "after") -> float | None:
    value = record.get("evaluation", {}).get(label, {}).get(metric)
    return None if value is None or not math.isfinite(float(value)) else float(value)
