"""``norton evaluate TARGET [TARGET ...]``: zero-shot tables for runs, checkpoints or converted weights.

Each TARGET is one of:
- a run directory (holds ``recipe.json``): the checkpoint(s) ``--checkpoints`` selects (default ``latest``);
- a checkpoint directory (holds ``model.safetensors``): the recipe is ``--recipe`` or the run's ``../../recipe.json``;
- a ``.safetensors`` file (e.g. converted VideoCLIP weights): ``--recipe`` is required;
- an export directory (``norton export``): its own model and training recipe.

Several targets (or ``--checkpoints all``) are scored side by side, one column each, labelled with what it is and
how it was selected. By default the table shows the rows a paper reports, with a chance column.

``--suite paper`` (or ``suite = "paper"`` in the recipe's ``[evaluation]``) runs every task of the papers' zero-shot
table whose dataset is under the evaluation root, names the missing ones in one line, and prints that table with
the published VideoCLIP and Norton values beside ours (on the released datasets only).

Every (target, task) is also written as one JSON record (``--output-dir``, default ``<run>/evaluations/`` for a
run directory); ``norton compare`` merges records into one table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import attrs

from norton_core.errors import CheckpointError, DataError, NortonError, RecipeError
from norton_core.evaluation.report import FORMATS, Format
from norton_core.evaluation.suite import SUITES


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="zero-shot evaluation of runs, checkpoints or weights files",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="+", metavar="TARGET",
                   help="run directory, checkpoint directory or .safetensors file")
    p.add_argument("--recipe", help="recipe (.toml or a run's recipe.json) describing the model and data")
    p.add_argument("--tasks", help="comma-separated tasks (default: the recipe's evaluation.tasks, else all four)")
    p.add_argument("--suite", choices=SUITES,
                   help="paper: every task of the papers' zero-shot table whose dataset is present, laid out as that "
                        "table with the published values (default: the recipe's evaluation.suite)")
    p.add_argument("--output-dir", metavar="DIR",
                   help="write one JSON record per (target, task) here (default: <run>/evaluations/ for a run "
                        "directory; none for other targets)")
    p.add_argument("--eval-root", help="directory holding the evaluation sets (youcook2/, msrvtt/, coin/, ...; "
                                       "default: the recipe's data source)")
    p.add_argument("--checkpoints", choices=("latest", "best", "all"), default="latest",
                   help="which checkpoints of a run directory: the latest, the best by validation loss, or every "
                        "saved one (default: latest)")
    p.add_argument("--select-by-test-metric", metavar="TASK/METRIC",
                   help="with --checkpoints all: mark the checkpoint that scores best on this test metric "
                        "(test-set selection; labelled as such)")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="table (default), markdown, latex, or json (every metric)")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("--rows", choices=("paper", "all"), default="paper",
                   help="paper: the rows a paper reports, zero skip counters hidden (default); all: every metric")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="evaluation precision (default: the recipe's evaluation.precision, fp32 unless set)")
    p.add_argument("--batch-size", type=int, help="clips per forward pass (default: evaluation.batch_size)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)


# ----------------------------------------------------------------------------------------------------------------
# what to evaluate
# ----------------------------------------------------------------------------------------------------------------


def load_recipe_any(path: Path) -> Any:
    """A validated :class:`~norton_core.recipe.load.Recipe` from a TOML recipe or a run's ``recipe.json``."""
    from norton_core.recipe.load import Recipe, load_recipe
    from norton_core.runs.export import export_recipe, is_export

    if path.name == "recipe.json" and is_export(path.parent):
        return export_recipe(path.parent)
    if path.suffix == ".json":
        from norton_core._util.bounded import read_text_bounded
        from norton_core.runs.export import MAX_JSON_BYTES

        text = read_text_bounded(path, MAX_JSON_BYTES, "a run recipe (recipe.json)", RecipeError)
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise RecipeError(f"{path}: unreadable run recipe ({exc})") from None
        if not isinstance(raw, dict):
            raise RecipeError(f"{path}: expected a JSON object, got {type(raw).__name__}")
        return Recipe.from_dict(raw, source=str(path))
    return load_recipe(path)


def load_weights(model: Any, source: Path, data: bytes | None = None) -> None:
    """Load a safetensors file (or its bytes, already read as ``data``) into ``model`` strictly; mismatches name the
    file and the keys. A file inside a checkpoint is checked against its manifest (size and sha256)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    if data is None:
        from norton_core.engine.checkpoint import read_checkpoint_file

        data = read_checkpoint_file(Path(source))

    try:
        state = load(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{source}: unreadable safetensors file ({exc})") from exc
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    problems = []
    if missing:
        problems.append(f"{source}: {len(missing)} missing key(s), e.g. {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"{source}: {len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:5])}")
    for k in shapes[:5]:
        problems.append(f"{source}: {k}: expected shape {tuple(own[k].shape)}, found {tuple(state[k].shape)}")
    if problems:
        raise CheckpointError(f"{source} does not match the recipe's model", problems=problems)
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
    from norton_core.evaluation.runner import DEFAULT_TASKS

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
    from norton_core.evaluation.report import render_report
    from norton_core.evaluation.runner import run_evaluation
    from norton_core.evaluation.suite import is_generated, render_paper_table
    from norton_core.evaluation.targets import resolve_targets, unique_labels

    if args.select_by_test_metric and args.checkpoints != "all":
        raise NortonError("--select-by-test-metric chooses among checkpoints: use it with --checkpoints all")
    if args.batch_size is not None and args.batch_size < 1:
        raise NortonError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.suite and args.tasks:
        raise NortonError("--suite runs the suite's tasks: give --suite or --tasks, not both")
    targets = unique_labels([t for name in args.targets
                             for t in resolve_targets(Path(name), args.recipe, args.checkpoints)])
    progress = not args.no_progress and sys.stderr.isatty()
    columns: dict[str, dict[str, float]] = {}
    built: dict[Path, tuple[Any, Any]] = {}  # one model per recipe, reloaded for each of its checkpoints
    suite = ""
    generated = False
    missing: dict[str, Path] = {}
    said: set[str] = set()
    for target in targets:
        if target.recipe not in built:
            recipe = load_recipe_any(target.recipe)
            built[target.recipe] = (recipe, recipe.build("model"))
        recipe, model = built[target.recipe]
        eval_root = eval_root_of(recipe, args.eval_root)
        plan = plan_tasks(recipe, args.tasks, args.suite, eval_root)
        if plan.missing_line and plan.missing_line not in said:  # once per evaluation root, not per checkpoint
            said.add(plan.missing_line)
            print(plan.missing_line, file=sys.stderr)
        suite = suite or plan.suite
        generated = generated or is_generated(eval_root)
        missing.update(plan.missing)
        precision = args.precision or recipe.evaluation.precision
        load_weights(model, target.source, target.read())
        model.to(args.device)
        print(f"norton: evaluating {target.label} on {', '.join(plan.tasks)} from {eval_root} ({precision})",
              file=sys.stderr)
        batch_size = args.batch_size or recipe.evaluation.batch_size
        columns[target.label] = run_evaluation(
            model, plan.tasks, eval_root, options=plan.options, batch_size=batch_size, device=args.device,
            progress=progress, precision=precision)
        save_records(target, columns[target.label], plan, args.output_dir,
                     {"eval_root": str(eval_root), "generated": is_generated(eval_root), "precision": precision,
                      "batch_size": batch_size})
    if args.select_by_test_metric:
        columns = select_by_test_metric(columns, args.select_by_test_metric)
    fmt: Format = "json" if args.json else args.format  # argparse's choices are FORMATS
    if suite and fmt != "json":  # JSON is every metric, with or without a suite (scripts read one shape)
        print(render_paper_table(columns, generated=generated, fmt=fmt, missing=missing))
    else:
        print(render_report(columns, fmt=fmt, rows=args.rows))
    return 0


@attrs.frozen
class TaskPlan:
    """What one target is evaluated on."""

    tasks: list[str]
    #: per task, its recipe options (config instances)
    options: dict[str, Any]
    #: the suite that chose the tasks ('' for a task list)
    suite: str = ""
    #: suite tasks left out: task -> the path looked for
    missing: dict[str, Path] = attrs.field(factory=dict)
    #: the line naming them ('' when none is missing)
    missing_line: str = ""


def plan_tasks(recipe: Any, tasks_arg: str | None, suite_arg: str | None, eval_root: Path) -> TaskPlan:
    """The tasks to run: ``--tasks``; else ``--suite`` or the recipe's ``evaluation.suite`` (its tasks whose datasets
    are under ``eval_root``; the others are named in the plan's ``missing_line``); else the recipe's
    ``evaluation.tasks``, else the default four. A suite with no dataset present is an error."""
    from norton_core.evaluation.suite import present_tasks, suite_tasks

    suite = "" if tasks_arg else (suite_arg or recipe.evaluation.suite)
    if not suite:
        tasks, options = tasks_and_options(recipe, tasks_arg)
        return TaskPlan(tasks, options)
    # the recipe's own suite keeps the other tasks its list names (a plugin's); --suite runs the suite alone
    wanted = list(recipe.evaluation.tasks) if not suite_arg else list(suite_tasks(suite))
    _, options = tasks_and_options(recipe, ",".join(wanted))
    in_suite = [t for t in wanted if t in suite_tasks(suite)]
    selection = present_tasks(in_suite, eval_root, options)
    if not selection.present:
        raise DataError(f"--suite {suite}: none of its datasets is under {eval_root} (looked for "
                        f"{', '.join(str(p) for p in selection.missing.values())})")
    tasks = [t for t in wanted if t not in selection.missing]
    return TaskPlan(tasks, {t: o for t, o in options.items() if t in tasks}, suite, selection.missing,
                    selection.missing_line())


def save_records(target: Any, results: dict[str, float], plan: TaskPlan, output_dir: str | None,
                 context: dict[str, Any]) -> None:
    """One JSON record per task of ``target`` in ``output_dir`` (default: the run's ``evaluations/``); says where."""
    from norton_core.evaluation.records import task_records, write_records
    from norton_core.evaluation.runner import build_evaluators, task_key

    out = Path(output_dir) if output_dir else (target.run / "evaluations" if target.run is not None else None)
    if out is None:
        return
    options = {ev.name: _plain(attrs.asdict(ev.config)) for ev in build_evaluators(plan.tasks, plan.options)}
    provenance = {"target": str(target.run or target.source), "checkpoint": str(target.source),
                  "recipe": str(target.recipe), **context}
    records = task_records(target.label, results, {task_key(t): t for t in plan.tasks}, provenance, options)
    paths = write_records(out, records)
    print(f"norton: wrote {len(paths)} evaluation record(s) to {out} (norton compare {out} merges them)",
          file=sys.stderr)


def _plain(value: Any) -> Any:
    """Options as JSON data (paths and other objects as strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def select_by_test_metric(columns: dict[str, dict[str, float]], key: str) -> dict[str, dict[str, float]]:
    """``columns`` with the one that scores best on the test metric ``key`` relabelled as chosen by it (lower is
    better for a median rank, higher for everything else); says so on stderr."""
    scored = {label: col[key] for label, col in columns.items() if key in col and not math.isnan(col[key])}
    if not scored:
        known = sorted({k for col in columns.values() for k in col})
        raise NortonError(f"--select-by-test-metric {key}: no checkpoint has that metric (known: "
                          f"{', '.join(known[:12])}{', ...' if len(known) > 12 else ''})")
    lower = key.partition("/")[2].endswith("MR")
    chosen = (min if lower else max)(scored, key=lambda label: scored[label])
    print(f"norton: test-set selection: {chosen} has the {'lowest' if lower else 'highest'} {key} "
          f"({scored[chosen]:.2f}); numbers of a checkpoint chosen on the test set are optimistic and not "
          f"comparable with a validation-selected one", file=sys.stderr)
    return {(f"{label} [chosen by test {key}]" if label == chosen else label): col for label, col in columns.items()}
