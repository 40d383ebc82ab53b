"""TOML recipes: loading (``extends``, ``--set`` overrides), strict validation of every table, and the resolved form.

A recipe names components by their registered name (``[loss] name = "norton"``), never by import path; each
component receives only its own table. Validation runs before any work and reports *all* problems at once, each as
``<file>: <dotted.key>: <problem>`` (``--set`` when the value came from the command line).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._manager import Plugins, default_plugins
from .config import check_config, to_dict
from .engine.config import EvaluationConfig, LoggingConfig, RetrievalConfig, RunConfig, TrainConfig
from .errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: engine tables and their schemas
ENGINE_TABLES: dict[str, type] = {
    "run": RunConfig, "train": TrainConfig, "retrieval": RetrievalConfig, "evaluation": EvaluationConfig,
    "logging": LoggingConfig,
}
#: component tables: table path -> (kind, default name or None when the table is required)
COMPONENT_TABLES: dict[str, tuple[str, str | None]] = {
    "data": ("data", None),
    "aligner": ("aligner", None),
    "model": ("model", None),
    "loss": ("loss", None),
    "retrieval.aligner": ("aligner", "aligned"),
    "retrieval.backend": ("retrieval_backend", "faiss-ivf"),
}
TOP_LEVEL = ("extends", "requires", *ENGINE_TABLES, "data", "aligner", "model", "loss")
SET_SOURCE = "--set"
#: run names become directory names: no separators, no "..", no hidden directories
_RUN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@attrs.frozen
class ComponentSpec:
    """A validated component table: which registered class, and its parsed ``Config``."""

    kind: str
    name: str
    path: str
    config: Any
    cls: type

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

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "<dict>", plugins: Plugins | None = None) -> Recipe:
        """Validate an already-merged recipe dict (e.g. a run's saved ``recipe.json``)."""
        raw = {k: v for k, v in raw.items() if k != "source"}
        return _validate(dict(raw), lambda path: source, source, plugins or default_plugins())

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

    def to_toml(self) -> str:
        return dumps_toml(self.resolved())


# ------------------------------------------------------------------------------------------------------------------
# loading: files, extends, overrides
# ------------------------------------------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: invalid TOML: {exc}") from None


def _merge(base: dict[str, Any], over: Mapping[str, Any], sources: dict[str, str], source: str, prefix: str = "") -> None:
    """Deep-merge ``over`` into ``base``; a component table whose ``name`` changes is replaced, not merged."""
    for key, value in over.items():
        path = f"{prefix}{key}"
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and old.get("name", value.get("name")) == value.get(
                "name", old.get("name")):
            _merge(old, value, sources, source, f"{path}.")
        else:
            base[key] = _copy(value)
            for sub in _paths(value, path):
                sources[sub] = source
        sources[path] = source


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value


def _paths(value: Any, path: str) -> Iterable[str]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, f"{path}.{key}")


def _load_file(path: Path, sources: dict[str, str], chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError(f"{chain[0]}: extends: cycle {cycle}")
    data = _read_toml(path)
    merged: dict[str, Any] = {}
    parent = data.pop("extends", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise RecipeError(f"{path}: extends: expected a relative path string, got {parent!r}")
        parent_path = (path.parent / parent)
        if not parent_path.exists():
            raise RecipeError(f"{path}: extends: {parent!r} not found (looked for {parent_path})")
        merged = _load_file(parent_path, sources, (*chain, path))
    _merge(merged, data, sources, str(path))
    return merged


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")


def _dotted(text: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in text.split("."))


def _line_of(file: Path, dotted: str) -> int | None:
    """The line of ``file`` that sets ``dotted`` (or opens its nearest enclosing table): for error messages only,
    so a plain scan of headers and ``key =`` lines is enough (tomllib reports no positions)."""
    try:
        lines = file.read_text().splitlines()
    except OSError:
        return None
    best: int | None = None
    table = ""
    for number, line in enumerate(lines, 1):
        if header := _HEADER.match(line):
            table = _dotted(header.group(1))
            if dotted == table or dotted.startswith(table + "."):
                best = number if best is None or dotted == table else best
            continue
        if assign := _ASSIGN.match(line):
            full = f"{table}.{_dotted(assign.group(1))}" if table else _dotted(assign.group(1))
            if full == dotted:
                return number
            if dotted.startswith(full + "."):
                best = number
    return best


def parse_override(text: str) -> tuple[list[str], Any]:
    """``table.key=value`` -> (["table", "key"], value parsed as TOML)."""
    if "=" not in text:
        raise RecipeError(f"{SET_SOURCE} {text!r}: expected table.key=value")
    key, _, value = text.partition("=")
    keys = [k.strip() for k in key.strip().split(".")]
    if not all(keys):
        raise RecipeError(f"{SET_SOURCE} {text!r}: empty key in {key!r}")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        raise RecipeError(
            f"{SET_SOURCE} {text!r}: value {value.strip()!r} is not TOML (quote strings: {key}='\"{value.strip()}\"')"
        ) from None
    return keys, parsed


def load_recipe(path: str | Path, overrides: Sequence[str] = (), plugins: Plugins | None = None) -> Recipe:
    """Read, merge and validate a recipe file; raise :class:`RecipeError` listing every problem."""
    path = Path(path)
    sources: dict[str, str] = {}
    raw = _load_file(path, sources, ())
    for text in overrides:
        keys, value = parse_override(text)
        table = raw
        for key in keys[:-1]:
            table = table.setdefault(key, {})
            if not isinstance(table, dict):
                raise RecipeError(f"{SET_SOURCE} {text!r}: {key!r} is not a table")
        table[keys[-1]] = value
        for sub in _paths(value, ".".join(keys)):
            sources[sub] = SET_SOURCE

    def source_of(dotted: str) -> str:
        """``file:line`` where the key (or its nearest table) was written; ``--set`` for command-line values."""
        key = dotted.split("[", 1)[0]
        probe = key
        while probe:
            if probe in sources:
                break
            probe = probe.rpartition(".")[0]
        where = sources.get(probe, str(path.resolve()))
        if where == SET_SOURCE:
            return where
        line = _line_of(Path(where), key)
        return f"{where}:{line}" if line else where

    return _validate(raw, source_of, str(path), plugins or default_plugins())


# ------------------------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------------------------


def _validate(raw: dict[str, Any], source_of: Any, source: str, plugins: Plugins) -> Recipe:
    problems: list[tuple[str, str]] = []
    registry = plugins.registry
    from .config import _did_you_mean  # the same hint style as option keys

    for key in raw:
        if key not in TOP_LEVEL:
            problems.append((key, f"unknown table{_did_you_mean(key, list(TOP_LEVEL))}; allowed: {', '.join(TOP_LEVEL)}"))
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
    if run is not None and not _RUN_NAME.fullmatch(run.name):
        problems.append(("run.name", f"must match [A-Za-z0-9._-]+ and not start with '.', got {run.name!r}"))
    if problems:
        problems = list(dict.fromkeys(problems))  # NaN is caught by two checks; report it once
        lines = [f"{source_of(path)}: {path}: {message}" for path, message in problems]
        raise RecipeError(f"{len(lines)} problem(s) in recipe {source}:\n" + "\n".join(lines), problems=lines)
    return Recipe(raw=raw, source=source, components=components, requires=list(requires), **engine)


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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def dumps_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Write nested dicts as TOML; ``None`` values (unset optional keys) are left out."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict) and v is not None]
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{_toml_key(key)}"
            lines.append(f"\n[{name}]")
            body = dumps_toml(value, f"{name}.")
            if body:
                lines.append(body)
    return "\n".join(lines)
