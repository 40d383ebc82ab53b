"""TOML recipes: loading (``extends``, ``--set`` overrides), strict validation of every table, and the resolved form.

A recipe names components by their registered name (``[loss] name = "norton"``), never by import path; each
component receives only its own table. Validation runs before any work and reports *all* problems at once, each as
``<file>: <dotted.key>: <problem>`` (``--set`` when the value came from the command line).

``extends`` names a shipped recipe (``"how2_demo"``) or a file relative to the recipe that writes it. The child is
merged over the parent key by key, engine tables and component tables alike; a component table starts afresh only
when its ``name`` selects a different component. ``--set`` values are merged the same way, after the files. Every
value remembers the file (and so the line) or ``--set`` it came from (``--dry-run --explain``).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ._manager import Plugins, default_plugins
from .config import check_config, is_path_option, to_dict
from .engine.config import EvaluationConfig, LoggingConfig, RetrievalConfig, RunConfig, TrainConfig
from .errors import RecipeError
from .shipped import is_recipe_name, resolve_recipe_ref, shipped_names, shipped_path

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


def _switches_component(path: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """A component table starts afresh when its ``name`` selects a different component (the old component's
    options mean nothing to the new one); every other table, engine tables included, merges key by key."""
    if path not in COMPONENT_TABLES or "name" not in new:
        return False
    return new["name"] != old.get("name", COMPONENT_TABLES[path][1])


def _merge(base: dict[str, Any], over: Mapping[str, Any], sources: dict[str, str], source: str, prefix: str = "") -> None:
    """Deep-merge ``over`` into ``base``, recording in ``sources`` which file (or ``--set``) wrote each value."""
    for key, value in over.items():
        path = f"{prefix}{key}"
        old = base.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and not _switches_component(path, old, value):
            _merge(old, value, sources, source, f"{path}.")
        else:
            for stale in [p for p in sources if p.startswith(path + ".")]:
                del sources[stale]  # a replaced table's old keys are gone, and so are their origins
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


def _parent_file(path: Path, parent: Any) -> Path:
    """The file ``extends`` names: a bare name is a shipped recipe, a path is relative to this recipe's file."""
    if not isinstance(parent, str) or not parent:
        raise RecipeError(f"{path}: extends: expected a shipped recipe name (\"how2_demo\") or a path relative to "
                          f"this file, got {parent!r}")
    try:
        parent_path = resolve_recipe_ref(parent, path.parent)
    except RecipeError as exc:
        raise RecipeError(f"{path}: extends: {exc}") from None
    if not parent_path.exists():
        stem = Path(parent).stem
        hint = f"; the shipped recipe is extends = \"{stem}\"" if stem in shipped_names() else ""
        raise RecipeError(f"{path}: extends: {parent!r} not found (looked for {parent_path}){hint}")
    return parent_path


def _load_file(path: Path, sources: dict[str, str], chain: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError(f"{chain[0]}: extends: cycle {cycle}")
    data = _read_toml(path)
    merged: dict[str, Any] = {}
    parent = data.pop("extends", None)
    if parent is not None:
        merged = _load_file(_parent_file(path, parent), sources, (*chain, path))
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


def _override(raw: dict[str, Any], text: str, sources: dict[str, str]) -> None:
    """Apply one ``--set``: merged like one more recipe file on top (so ``--set loss.name=...`` that switches the
    component starts that table afresh, exactly as a child recipe would)."""
    keys, value = parse_override(text)
    table: Any = raw
    for key in keys[:-1]:
        table = table.get(key, {}) if isinstance(table, dict) else table
        if not isinstance(table, dict):
            raise RecipeError(f"{SET_SOURCE} {text!r}: {key!r} is not a table")
    nested: Any = value
    for key in reversed(keys):
        nested = {key: nested}
    _merge(raw, nested, sources, SET_SOURCE)


def _resolve_pretrain_recipe(raw: dict[str, Any], sources: dict[str, str]) -> None:
    """``run.pretrain_recipe`` is found like ``extends``, from the file that wrote it (not from the child that
    inherited it); the absolute path replaces it, so the run directory records which file was trained."""
    run = raw.get("run")
    value = run.get("pretrain_recipe") if isinstance(run, dict) else None
    if not isinstance(value, str) or not value:
        return
    origin = sources.get("run.pretrain_recipe", SET_SOURCE)
    base = Path.cwd() if origin == SET_SOURCE else Path(origin).parent
    try:
        run["pretrain_recipe"] = str(resolve_recipe_ref(value, base).resolve())
    except RecipeError as exc:
        raise RecipeError(f"{origin}: run.pretrain_recipe: {exc}") from None


def recipe_file(ref: str | Path) -> Path:
    """A recipe given on the command line: an existing path, else the shipped recipe of that name."""
    path = Path(ref)
    if not path.exists() and is_recipe_name(str(ref)):
        return shipped_path(str(ref))
    return path


def load_recipe(path: str | Path, overrides: Sequence[str] = (), plugins: Plugins | None = None) -> Recipe:
    """Read, merge and validate a recipe file; raise :class:`RecipeError` listing every problem."""
    path = recipe_file(path)
    sources: dict[str, str] = {}
    raw = _load_file(path, sources, ())
    for text in overrides:
        _override(raw, text, sources)
    _resolve_pretrain_recipe(raw, sources)
    return _validate(raw, _Origins(sources, str(path.resolve())), str(path), plugins or default_plugins())


class _Origins:
    """Where each value of a merged recipe was written: ``file:line``, ``--set``, or nowhere (a default)."""

    def __init__(self, sources: dict[str, str], fallback: str) -> None:
        self.sources, self.fallback = dict(sources), fallback  # fallback: the top file (or a label, unlocated)
        self._lines: dict[tuple[str, str], int | None] = {}

    def _line(self, where: str, key: str) -> str:
        if (where, key) not in self._lines:
            self._lines[where, key] = _line_of(Path(where), key)
        line = self._lines[where, key]
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
    return Recipe(raw=raw, source=source, components=components, requires=list(requires), origins=source_of,
                  **engine)


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
    problems.extend((path, f"{name!r} needs the {module} package, which is not installed ({how})")
                    for module, how in getattr(cls, "needs", {}).items() if not _importable(module))
    if config is None:
        return None
    return ComponentSpec(kind=kind, name=name, path=path, config=config, cls=cls)


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # already imported without a spec (a stand-in module): it is there
        return True


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


def dumps_toml(data: Mapping[str, Any], prefix: str = "", note: Callable[[str, Any], str] | None = None,
               dotted: str = "") -> str:
    """Write nested dicts as TOML; ``None`` values (unset optional keys) are left out. ``note(dotted_key, value)``
    may return a comment for each value (``--explain``)."""
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) or value is None:
            continue
        line = f"{_toml_key(key)} = {_toml_value(value)}"
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
