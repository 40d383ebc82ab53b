"""``norton evaluate TARGET``: zero-shot tables for a run directory, a checkpoint or converted weights.

TARGET is one of:
- a run directory (holds ``recipe.json``): its newest checkpoint (``checkpoints/latest``) is evaluated;
- a checkpoint directory (holds ``model.safetensors``): the recipe is ``--recipe`` or the run's ``../../recipe.json``;
- a ``.safetensors`` file (e.g. converted VideoCLIP weights): ``--recipe`` is required;
- an export directory (``norton export``): its own model and training recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, DataError, NortonError, RecipeError


def register_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("evaluate", help="zero-shot evaluation of a run, checkpoint or weights file",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", help="run directory, checkpoint directory or .safetensors file")
    p.add_argument("--recipe", help="recipe (.toml or a run's recipe.json) describing the model and data")
    p.add_argument("--tasks", help="comma-separated tasks (default: the recipe's evaluation.tasks, else all four)")
    p.add_argument("--eval-root", help="directory holding youcook2/, htm_align/, msrvtt/ (default: the recipe's "
                                       "data source)")
    p.add_argument("--json", action="store_true", help="print one JSON object {\"task/metric\": value}")
    p.add_argument("--batch-size", type=int, help="clips per forward pass (default: evaluation.batch_size)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)


# ----------------------------------------------------------------------------------------------------------------
# what to evaluate
# ----------------------------------------------------------------------------------------------------------------


def resolve_target(target: Path, recipe: str | None) -> tuple[Path, Path]:
    """``(weights file, recipe file)`` for a run directory, checkpoint directory, weights file or export."""
    from ..export import is_export

    if is_export(target):
        return target / "model.safetensors", Path(recipe) if recipe else target / "recipe.json"
    if target.is_dir() and (target / "recipe.json").is_file():
        latest = target / "checkpoints" / "latest"
        if not latest.is_file():
            raise CheckpointError(f"{target}: run directory without a committed checkpoint ({latest} is missing)")
        name = latest.read_text(encoding="utf-8").strip()
        weights = target / "checkpoints" / name / "model.safetensors"
        if not name or not weights.is_file():
            raise CheckpointError(f"{latest}: names checkpoint {name!r}, but {weights} does not exist")
        return weights, Path(recipe) if recipe else target / "recipe.json"
    if target.is_dir():
        weights = target / "model.safetensors"
        if not weights.is_file():
            raise CheckpointError(f"{target}: expected a run directory (with recipe.json) or a checkpoint directory "
                                  f"(with model.safetensors); found neither")
        run_recipe = target.parent.parent / "recipe.json"
        if recipe is None and not run_recipe.is_file():
            raise RecipeError(f"{target}: no --recipe given and no run recipe at {run_recipe}")
        return weights, Path(recipe) if recipe else run_recipe
    if target.is_file() and target.suffix == ".safetensors":
        if recipe is None:
            raise RecipeError(f"{target}: a weights file needs --recipe to say which model it holds")
        return target, Path(recipe)
    raise CheckpointError(f"{target}: not found, or not a run directory, checkpoint directory or .safetensors file")


def load_recipe_any(path: Path) -> Any:
    """A validated :class:`~norton_core.recipe.Recipe` from a TOML recipe or a run's ``recipe.json``."""
    from ..export import export_recipe, is_export
    from ..recipe import Recipe, load_recipe

    if path.name == "recipe.json" and is_export(path.parent):
        return export_recipe(path.parent)
    if path.suffix == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RecipeError(f"{path}: unreadable run recipe ({exc})") from exc
        if not isinstance(raw, dict):
            raise RecipeError(f"{path}: expected a JSON object, got {type(raw).__name__}")
        return Recipe.from_dict(raw, source=str(path))
    return load_recipe(path)


def load_weights(model: Any, path: Path) -> None:
    """Load a safetensors state dict into ``model`` strictly; mismatches name the file and the keys."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from exc
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    problems = []
    if missing:
        problems.append(f"{path}: {len(missing)} missing key(s), e.g. {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"{path}: {len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:5])}")
    for k in shapes[:5]:
        problems.append(f"{path}: {k}: expected shape {tuple(own[k].shape)}, found {tuple(state[k].shape)}")
    if problems:
        raise CheckpointError(f"{path} does not match the recipe's model", problems=problems)
    model.load_state_dict(state, strict=True)


def eval_root_of(recipe: Any, eval_root: str | None) -> Path:
    if eval_root:
        return Path(eval_root)
    cache = recipe.run.cache_dir or str(Path.home() / ".cache" / "norton")
    paths = recipe.build("data", cache_dir=Path(cache)).prepare()
    if paths.eval_root is None:
        raise DataError(f"the recipe's data source {recipe.components['data'].name!r} provides no evaluation sets; "
                        f"pass --eval-root DIR (holding youcook2/, htm_align/, msrvtt/)")
    return Path(paths.eval_root)


def tasks_and_options(recipe: Any, tasks_arg: str | None) -> tuple[list[str], dict[str, Any]]:
    from .runner import DEFAULT_TASKS

    if tasks_arg:
        tasks = [t.strip() for t in tasks_arg.split(",") if t.strip()]
    else:
        tasks = list(recipe.evaluation.tasks) or list(DEFAULT_TASKS)
    options = {}
    for task in tasks:
        spec = recipe.components.get(f"evaluation.task_options.{task}")
        if spec is not None:
            options[task] = spec.config
    return tasks, options


# ----------------------------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .runner import format_table, run_evaluation

    weights, recipe_path = resolve_target(Path(args.target), args.recipe)
    recipe = load_recipe_any(recipe_path)
    tasks, options = tasks_and_options(recipe, args.tasks)
    eval_root = eval_root_of(recipe, args.eval_root)
    batch_size = args.batch_size or recipe.evaluation.batch_size
    if batch_size < 1:
        raise NortonError(f"--batch-size must be >= 1, got {batch_size}")
    model = recipe.build("model")
    load_weights(model, weights)
    model.to(args.device)
    progress = not args.no_progress and sys.stderr.isatty()
    print(f"norton: evaluating {weights} on {', '.join(tasks)} from {eval_root}", file=sys.stderr)
    results = run_evaluation(model, tasks, eval_root, options=options, batch_size=batch_size, device=args.device,
                             progress=progress)
    if args.json:
        print(json.dumps({k: (None if math.isnan(v) else v) for k, v in results.items()}))
    else:
        print(format_table(results))
    return 0
