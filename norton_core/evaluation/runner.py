"""Run evaluation tasks on a model and lay their metrics out as a table."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from norton_core.errors import DataError, NortonError, PluginError, RecipeError
from norton_core.plugin.interfaces import EvalContext, Evaluator, Model
from norton_core.plugin.manager import Plugins, default_plugins
from norton_core.recipe.options import parse_config

log = logging.getLogger("norton.evaluation")

Precision = Literal["fp32", "bf16", "fp16"]

#: every built-in task, in the order tables show them
DEFAULT_TASKS = ("youcook2-clip", "youcook2-video", "htm-align", "msrvtt")


def task_key(task: str) -> str:
    """The prefix of a task's metric keys: ``youcook2-clip`` -> ``youcook2_clip``."""
    return task.replace("-", "_")


def build_evaluators(tasks: Sequence[str], options: Mapping[str, Any] | None = None,
                     plugins: Plugins | None = None) -> list[Evaluator]:
    """Build each task's evaluator; an option entry may be a ready config instance or a mapping (validated
    strictly). Every unknown task and invalid option is reported at once."""
    plugins = plugins or default_plugins()
    registry = plugins.registry
    options = dict(options or {})
    problems: list[str] = []
    unknown = [t for t in tasks if ("evaluator", t) not in registry]
    for task in unknown:
        problems.append(registry.unknown_message("evaluator", task) + plugins.broken_note())
    for task in options:
        if task not in tasks:
            problems.append(f"evaluation options given for {task!r}, which is not among the tasks {list(tasks)}")
    evaluators: list[Evaluator] = []
    for task in tasks:
        if task in unknown:
            continue
        cls = cast("type[Evaluator]", registry.get("evaluator", task).cls)
        given = options.get(task)
        if given is None or isinstance(given, Mapping):
            config, items = parse_config(cls.Config, dict(given or {}), path=f"evaluation.task_options.{task}",
                                         source=f"evaluator {task!r}")
            problems.extend(items)
        elif isinstance(given, cls.Config):
            config = given
        else:
            problems.append(f"options of {task!r}: expected a mapping or {cls.__name__}.Config, "
                            f"got {type(given).__name__}")
            continue
        if config is not None:
            evaluators.append(cls(config))
    if problems:
        error = PluginError if len(problems) == len(unknown) else RecipeError
        raise error(problems=problems)
    return evaluators


def run_evaluation(model: Model, tasks: Sequence[str], eval_root: Path, *,
                   options: Mapping[str, Any] | None = None, batch_size: int = 256, device: str = "cpu",
                   progress: bool = True, plugins: Plugins | None = None,
                   precision: Precision = "fp32") -> dict[str, float]:
    """Evaluate ``model`` on each task's set under ``eval_root``; returns ``{"<task_key>/<metric>": value}``.

    :param options: per task, a config instance or a mapping of its options.
    :param precision: ``"fp32"`` (the default, as the reference) or an autocast dtype, ``"bf16"`` / ``"fp16"``.
        Whatever autocast the caller is in is switched off first, so a training loop's mixed precision never
        leaks into the numbers: the same weights give the same table wherever they are evaluated.
    :raises PluginError: an unknown task. :raises RecipeError: invalid options. :raises DataError: a task's
        directory is missing or its files are malformed.
    """
    evaluators = build_evaluators(list(tasks), options, plugins)
    eval_root = Path(eval_root)
    missing = [ev for ev in evaluators if not (eval_root / ev.dataset).is_dir()]
    if missing:
        raise DataError(problems=[
            f"{eval_root / ev.dataset}: the {ev.name!r} evaluation set is missing (expected the public layout of "
            f"docs/data_formats.md under the eval root {eval_root})" for ev in missing])
    from norton_core.evaluation.embed import NonFiniteEmbeddings, shared_cache

    results: dict[str, float] = {}
    # tasks on the same set (YouCook2 clip and video) share the cache: each caption and clip is encoded once
    with _precision(precision, device), shared_cache():
        for ev in evaluators:
            ctx = EvalContext(root=eval_root / ev.dataset, batch_size=batch_size, device=device, progress=progress)
            began = time.perf_counter()
            try:
                metrics = ev.evaluate(model, ctx)
            except NonFiniteEmbeddings as exc:
                raise NortonError(f"evaluation task {ev.name!r}: {exc}") from None
            log.info("%s evaluated in %.1f s", ev.name, time.perf_counter() - began)
            for metric, value in metrics.items():
                results[f"{task_key(ev.name)}/{metric}"] = float(value)
    return results


def _precision(precision: Precision, device: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast to ``precision`` on ``device``'s kind, or no autocast at all for fp32 (also inside a caller's)."""
    import torch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    if precision == "fp32":
        return torch.autocast(kind, enabled=False)
    if precision not in ("bf16", "fp16"):
        raise RecipeError(f"evaluation precision {precision!r}: expected fp32, bf16 or fp16")
    return torch.autocast(kind, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


# ----------------------------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------------------------

def format_table(results: Mapping[str, float], columns: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """A plain-text table of every metric: one row per ``task/metric``, grouped by task.

    :param results: the metrics (their key order is the row order).
    :param columns: several result sets side by side, e.g. ``{"before": b, "after": a}``; rows are the keys of
        ``results`` followed by any other key of the columns. Without it the single column is ``value``.

    For the rows a paper reports, a chance column, Markdown or LaTeX, use :func:`.report.render_report`.
    """
    from norton_core.evaluation.report import render_report

    return render_report(dict(columns) if columns else {"value": dict(results)}, rows="all", chance=False,
                         order=list(results))
