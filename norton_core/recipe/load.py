"""TOML recipes: loading (``extends``, ``--set`` overrides), strict validation of every table, and the resolved form.

A recipe names components by their registered name (``[loss] name = "norton"``), never by import path; each
component receives only its own table. Validation runs before any work and reports *all* problems at once, each as
``<file>: <dotted.key>: <problem>`` (``--set`` when the value came from the command line).

``extends`` names a shipped recipe (``"how2_demo"``) or a file relative to the recipe that writes it. The child is
merged over the parent key by key, engine tables and component tables alike; a component table starts afresh only
when its ``name`` selects a different component. ``--set`` values are merged the same way, after the files. Every
value remembers the file (and so the line) or ``--set`` it came from (``--dry-run --explain``). Reading the files
(extends, merge, overrides, origins) is :mod:`norton_core.recipe.files`; this module validates and resolves.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from norton_core.errors import RecipeError
from norton_core.plugin.manager import Plugins, default_plugins
from norton_core.recipe.files import (
    COMPONENT_TABLES,
    MAX_PROBLEM_LINES,
    SET_SOURCE,
    LineIndex,
    apply_override,
    load_file,
    recipe_file,
    resolve_pretrain_recipe,
)
from norton_core.recipe.options import check_config, is_path_option, to_dict, unknown_key_problems
from norton_core.recipe.tables import (
    MAX_RUN_NAME,
    EvaluationConfig,
    LoggingConfig,
    RetrievalConfig,
    RunConfig,
    TrainConfig,
)

if TYPE_CHECKING:
    from norton_core.plugin.interfaces import Component

#: engine tables and their schemas
ENGINE_TABLES: dict[str, type] = {
    "run": RunConfig, "train": TrainConfig, "retrieval": RetrievalConfig, "evaluation": EvaluationConfig,
    "logging": LoggingConfig,
}
TOP_LEVEL = ("extends", "requires", *ENGINE_TABLES, "data", "aligner", "model", "loss")
#: run names become directory names: no separators, no "..", no hidden directories
_RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@attrs.frozen
class ComponentSpec:
    """A validated component table: which registered class, and its parsed ``Config``."""

    kind: str
    name: str
    path: str
    config: Any
    cls: type[Component]

    def resolved(self) -> dict[str, Any]:
        return {"name": self.name, **to_dict(self.config)}


@attrs.frozen
class Recipe:
    """A validated recipe. Build components with :meth:`build`; :meth:`resolved` is what runs save."""

    raw: dict[str, Any]
    source: str
    run: RunConfig
    train: TrainConfig
    retrieval: RetrievalConfig
    evaluation: EvaluationConfig
    logging: LoggingConfig
    components: dict[str, ComponentSpec]
    requires: list[str]
    origins: Any = attrs.field(default=None, eq=False, repr=False)  # _Origins: where each value was written

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "<dict>", plugins: Plugins | None = None) -> Recipe:
        """Validate an already-merged recipe dict (e.g. a run's saved ``recipe.json``)."""
        raw = {k: v for k, v in raw.items() if k != "source"}
        return _validate(dict(raw), _Origins({}, source), source, plugins or default_plugins())

    def build(self, path: str, **context: Any) -> Any:
        """Build the component of the table at ``path`` (e.g. ``"loss"``, ``"retrieval.backend"``) with ``cls.create``."""
        spec = self.components[path]
        return spec.cls.create(spec.config, **context)

    def resolved(self) -> dict[str, Any]:
        """Every table with all defaults filled in: plain JSON/TOML-able data."""
        out: dict[str, Any] = {}
        if self.requires:
            out["requires"] = list(self.requires)
        for table in ("run", "train"):
            out[table] = to_dict(getattr(self, table))
        for path in ("data", "aligner", "model", "loss"):
            out[path] = self.components[path].resolved()
        out["retrieval"] = {
            **to_dict(self.retrieval),
            "aligner": self.components["retrieval.aligner"].resolved(),
            "backend": self.components["retrieval.backend"].resolved(),
        }
        out["evaluation"] = {
            **to_dict(self.evaluation),
            "task_options": {task: to_dict(self.components[f"evaluation.task_options.{task}"].config)
                             for task in self.evaluation.tasks},
        }
        out["logging"] = {
            **to_dict(self.logging),
            "sink_options": {sink: to_dict(self.components[f"logging.sink_options.{sink}"].config)
                             for sink in self.logging.sinks},
        }
        return out

    def to_toml(self, explain: bool = False) -> str:
        """The resolved recipe as TOML. Path values relative to the working directory get a comment with their
        absolute form; with ``explain``, every value also says where it came from (``file:line``, ``--set`` or
        ``default``)."""
        paths = self.path_options()

        def note(dotted: str, value: Any) -> str:
            parts = [self.origins.of_value(dotted) if explain and self.origins is not None else ""]
            if dotted in paths:
                parts.append(f"-> {paths[dotted]}")
            return "  ".join(p for p in parts if p)

        return dumps_toml(self.resolved(), note=note)

    def path_options(self) -> dict[str, str]:
        """Options declared as paths (``option(path=True)``) with their absolute form: data, weights and outputs
        are relative to the working directory. (Recipe references, ``extends`` and ``run.pretrain_recipe``, are
        relative to the recipe file that wrote them and are resolved when the recipe is loaded.)"""
        tables: list[tuple[str, Any]] = [(name, getattr(self, name)) for name in ENGINE_TABLES]
        tables += [(path, spec.config) for path, spec in self.components.items()]
        out = {}
        for prefix, config in tables:
            for field in attrs.fields(type(config)):
                value = getattr(config, field.name)
                if is_path_option(field) and isinstance(value, str) and value:
                    out[f"{prefix}.{field.name}"] = str(Path(value).expanduser().absolute())
        return out


def load_recipe(path: str | Path, overrides: Sequence[str] = (), plugins: Plugins | None = None) -> Recipe:
    """Read, merge and validate a recipe file; raise :class:`RecipeError` listing every problem."""
    path = recipe_file(path)
    sources: dict[str, str] = {}
    raw = load_file(path, sources, ())
    for text in overrides:
        apply_override(raw, text, sources)
    resolve_pretrain_recipe(raw, sources)
    return _validate(raw, _Origins(sources, str(path.resolve())), str(path), plugins or default_plugins())


class _Origins:
    """Where each value of a merged recipe was written: ``file:line``, ``--set``, or nowhere (a default)."""

    def __init__(self, sources: dict[str, str], fallback: str) -> None:
        self.sources, self.fallback = dict(sources), fallback  # fallback: the top file (or a label, unlocated)
        self._files: dict[str, LineIndex] = {}  # each file is scanned once, however many keys are located in it

    def _line(self, where: str, key: str) -> str:
        if where not in self._files:
            self._files[where] = LineIndex(Path(where))
        line = self._files[where].line(key)
        return f"{where}:{line}" if line else where

    def __call__(self, dotted: str) -> str:
        """For a problem: ``file:line`` of the key (or its nearest table); ``--set`` for command-line values."""
        key = dotted.split("[", 1)[0]
        probe = key
        while probe and probe not in self.sources:
            probe = probe.rpartition(".")[0]
        if probe not in self.sources and not self.sources:
            return self.fallback  # a dict recipe (a run's recipe.json): no lines to point at
        where = self.sources.get(probe, self.fallback)
        return where if where == SET_SOURCE else self._line(where, key)

    def of_value(self, dotted: str) -> str:
        """For ``--explain``: where this exact value was written, or ``default``."""
        where = self.sources.get(dotted)
        if where is None:
            return "default"
        return where if where == SET_SOURCE else self._line(where, dotted)


# ------------------------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------------------------


def _validate(raw: dict[str, Any], source_of: _Origins, source: str, plugins: Plugins) -> Recipe:
    problems: list[tuple[str, str]] = []
    registry = plugins.registry
    unknown = [key for key in raw if key not in TOP_LEVEL]
    problems.extend(unknown_key_problems("", unknown, list(TOP_LEVEL), "table"))
    _find_nonfinite(raw, "", problems)

    engine: dict[str, Any] = {}
    sub_tables: dict[str, Any] = {}
    for table, schema in ENGINE_TABLES.items():
        data = raw.get(table, {})
        if not isinstance(data, dict):
            problems.append((table, f"expected a table, got {type(data).__name__}"))
            data = {}
        data = dict(data)
        if table == "retrieval":
            for sub in ("aligner", "backend"):
                if sub in data:
                    sub_tables[f"retrieval.{sub}"] = data.pop(sub)
        if table == "evaluation":
            sub_tables["evaluation.task_options"] = data.pop("task_options", {})
        if table == "logging":
            sub_tables["logging.sink_options"] = data.pop("sink_options", {})
        inst, items = check_config(schema, data, table)
        problems.extend(items)
        engine[table] = inst

    components: dict[str, ComponentSpec] = {}
    tables = {path: (raw.get(path) if "." not in path else sub_tables.get(path)) for path in COMPONENT_TABLES}
    for path, (kind, default) in COMPONENT_TABLES.items():
        spec = _component(path, kind, tables[path], default, registry, plugins, problems)
        if spec is not None:
            components[path] = spec

    task_options = sub_tables.get("evaluation.task_options") or {}
    if not isinstance(task_options, dict):
        problems.append(("evaluation.task_options", "expected a table of per-task tables"))
        task_options = {}
    if engine["evaluation"] is not None and engine["evaluation"].suite:
        engine["evaluation"] = with_suite_tasks(engine["evaluation"])
    tasks = engine["evaluation"].tasks if engine["evaluation"] is not None else []
    for task in task_options:
        if task not in tasks:
            problems.append((f"evaluation.task_options.{task}", f"options for {task!r}, which is not in evaluation.tasks"))
    for i, task in enumerate(tasks):
        path = f"evaluation.task_options.{task}"
        if ("evaluator", task) not in registry:
            problems.append((f"evaluation.tasks[{i}]", registry.unknown_message("evaluator", task) + plugins.broken_note()))
            continue
        options = dict(task_options.get(task, {}))
        options.setdefault("name", task)
        spec = _component(path, "evaluator", options, task, registry, plugins, problems)
        if spec is not None:
            components[path] = spec

    _named_tables(_names(engine["logging"], "sinks", raw.get("logging")), "logging.sinks",
                  sub_tables.get("logging.sink_options"), "metric_sink", registry, plugins, problems, components)

    requires = raw.get("requires", [])
    if not isinstance(requires, list) or not all(isinstance(r, str) for r in requires):
        problems.append(("requires", "expected a list of requirement strings like \"norton-example-loss>=0.1\""))
        requires = []
    problems.extend(_check_requires(requires, plugins))

    run = engine["run"]
    if run is not None:
        problems.extend(_check_run_paths(run))
    if problems:
        problems = list(dict.fromkeys(problems))  # NaN is caught by two checks; report it once
        lines = [f"{source_of(path)}: {path}: {message}" for path, message in problems[:MAX_PROBLEM_LINES]]
        if len(problems) > MAX_PROBLEM_LINES:
            lines.append(f"{source}: ... and {len(problems) - MAX_PROBLEM_LINES} more problem(s) not shown (at most "
                         f"{MAX_PROBLEM_LINES} are listed)")
        raise RecipeError(f"{len(problems)} problem(s) in recipe {source}:\n" + "\n".join(lines), problems=lines)
    return Recipe(raw=raw, source=source, components=components, requires=list(requires), origins=source_of,
                  **engine)


def _check_run_paths(run: RunConfig) -> list[tuple[str, str]]:
    """``run.name`` names a directory (safe characters, a length every file system takes) inside
    ``run.output_dir``, which must be a directory or not exist yet."""
    problems = []
    if len(run.name) > MAX_RUN_NAME:
        problems.append(("run.name", f"{len(run.name)} characters, more than the {MAX_RUN_NAME} allowed (it names "
                                     f"a directory)"))
    elif not _RUN_NAME.fullmatch(run.name):
        problems.append(("run.name", f"must match [A-Za-z0-9._-]+ and not start with '.', got {run.name!r}"))
    out = Path(run.output_dir).expanduser()
    for parent in (out, *out.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                what = "the run directories' parent" if parent == out else f"a parent of it ({parent})"
                problems.append(("run.output_dir", f"{run.output_dir!r}: {what} exists and is not a directory"))
            break
    return problems


def _names(config: Any, key: str, raw: Any) -> list[str]:
    """A validated list of names, or (when its table has other problems) the names as written, so that they are
    checked too and every problem is reported at once."""
    if config is not None:
        return list(getattr(config, key))
    names = raw.get(key, []) if isinstance(raw, dict) else []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _named_tables(names: list[str], list_path: str, options: Any, kind: str, registry: Any, plugins: Plugins,
                  problems: list[tuple[str, str]], components: dict[str, ComponentSpec]) -> None:
    """A list of component names (``[logging] sinks``) with an optional options table per name
    (``[logging.sink_options.<name>]``): every name registered, every options table for a listed name."""
    table_path = list_path.rpartition(".")[0] + ".sink_options"
    options = options or {}
    if not isinstance(options, dict):
        problems.append((table_path, "expected a table of per-name tables"))
        options = {}
    for name in options:
        if name not in names:
            problems.append((f"{table_path}.{name}", f"options for {name!r}, which is not in {list_path}"))
    for i, name in enumerate(names):
        if names.index(name) != i:
            problems.append((f"{list_path}[{i}]", f"{name!r} is listed twice"))
            continue
        if (kind, name) not in registry:
            problems.append((f"{list_path}[{i}]", registry.unknown_message(kind, name) + plugins.broken_note()))
            continue
        table = dict(options.get(name, {})) if isinstance(options.get(name, {}), dict) else options[name]
        if isinstance(table, dict):
            table.setdefault("name", name)
        spec = _component(f"{table_path}.{name}", kind, table, name, registry, plugins, problems)
        if spec is not None:
            components[f"{table_path}.{name}"] = spec


def _component(path: str, kind: str, table: Any, default: str | None, registry: Any, plugins: Plugins,
               problems: list[tuple[str, str]]) -> ComponentSpec | None:
    if table is None:
        if default is None:
            problems.append((path, f"required table is missing; it needs name = \"<a registered {kind}>\""))
            return None
        table = {"name": default}
    if not isinstance(table, dict):
        problems.append((path, f"expected a table, got {type(table).__name__}"))
        return None
    options = dict(table)
    name = options.pop("name", default)
    if not isinstance(name, str):
        problems.append((f"{path}.name", f"expected the registered name of a {kind} (a string), got {name!r}"))
        return None
    if (kind, name) not in registry:
        problems.append((f"{path}.name", registry.unknown_message(kind, name) + plugins.broken_note()))
        return None
    cls = registry.get(kind, name).cls
    config, items = check_config(cls.Config, options, path)
    problems.extend(items)
    if hasattr(cls, "missing_packages"):  # a Component (a registered class may only have name and Config)
        problems.extend((path, line) for line in cls.missing_packages())
    if config is None:
        return None
    return ComponentSpec(kind=kind, name=name, path=path, config=config, cls=cls)


def _find_nonfinite(value: Any, path: str, problems: list[tuple[str, str]]) -> None:
    """NaN/inf anywhere (also in free-form tables) is refused: no option of ours means anything with them."""
    if isinstance(value, float) and not math.isfinite(value):
        problems.append((path, f"must be a finite number, got {value!r}"))
    elif isinstance(value, dict):
        for key, item in value.items():
            _find_nonfinite(item, f"{path}.{key}" if path else key, problems)


def _check_requires(requires: Sequence[str], plugins: Plugins) -> list[tuple[str, str]]:
    import importlib.metadata as md

    from packaging.requirements import InvalidRequirement, Requirement

    problems = []
    broken = {info.distribution: info for info in plugins.broken}
    for i, text in enumerate(requires):
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            problems.append((f"requires[{i}]", f"invalid requirement {text!r}: {exc}"))
            continue
        try:
            version = md.version(req.name)
        except md.PackageNotFoundError:
            problems.append((f"requires[{i}]", f"{req.name} is not installed (pip install '{text}')"))
            continue
        if req.specifier and version not in req.specifier:
            problems.append((f"requires[{i}]", f"{req.name} {version} is installed, the recipe needs {text}"))
        elif req.name in broken:
            problems.append((f"requires[{i}]", f"{broken[req.name].describe()} failed to import: {broken[req.name].error}"))
    return problems


# ------------------------------------------------------------------------------------------------------------------
# TOML output (dry runs); our recipes hold only tables, strings, numbers, booleans and lists of those
# ------------------------------------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (a table inline), as ``--set`` parses it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def dumps_toml(data: Mapping[str, Any], prefix: str = "", note: Callable[[str, Any], str] | None = None,
               dotted: str = "") -> str:
    """Write nested dicts as TOML; ``None`` values (unset optional keys) are left out. ``note(dotted_key, value)``
    may return a comment for each value (``--explain``)."""
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) or value is None:
            continue
        line = f"{_toml_key(key)} = {toml_value(value)}"
        comment = note(f"{dotted}{key}", value) if note else ""
        lines.append(f"{line:<40} # {comment}" if comment else line)
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{_toml_key(key)}"
            lines.append(f"\n[{name}]")
            body = dumps_toml(value, f"{name}.", note, f"{dotted}{key}.")
            if body:
                lines.append(body)
    return "\n".join(lines)


def with_suite_tasks(evaluation: EvaluationConfig) -> EvaluationConfig:
    """``evaluation`` with its suite's tasks appended to ``tasks`` (each once, the listed ones first): the recipe
    then validates their options like any listed task's, and a resolved recipe lists every task it may run."""
    from norton_core.evaluation.suite import suite_tasks

    extra = [t for t in suite_tasks(evaluation.suite) if t not in evaluation.tasks]
    return attrs.evolve(evaluation, tasks=[*evaluation.tasks, *extra])
