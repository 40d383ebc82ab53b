"""Reading recipe files: ``extends`` chains, the key-by-key merge, ``--set`` overrides, and where each value came
from (file and line, for error messages). :mod:`norton_core.recipe.load` validates what this module reads.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from norton_core._util.bounded import read_text_bounded
from norton_core.errors import RecipeError
from norton_core.recipe.shipped import is_recipe_name, resolve_recipe_ref, shipped_names, shipped_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: component tables: table path -> (kind, default name or None when the table is required)
COMPONENT_TABLES: dict[str, tuple[str, str | None]] = {
    "data": ("data", None),
    "aligner": ("aligner", None),
    "model": ("model", None),
    "loss": ("loss", None),
    "retrieval.aligner": ("aligner", "aligned"),
    "retrieval.backend": ("retrieval_backend", "faiss-ivf"),
}
SET_SOURCE = "--set"




#: the largest recipe file read (the shipped ones are a few KB; a recipe is typed by hand)
MAX_RECIPE_BYTES = 1024 * 1024
#: the longest ``extends`` chain followed (the shipped recipes use two levels)
MAX_EXTENDS_DEPTH = 32
#: at most this many problem lines are printed for one recipe; the rest are counted in one more line
MAX_PROBLEM_LINES = 50


def read_recipe_text(path: Path) -> str:
    """A recipe file's text: a regular file of at most ``MAX_RECIPE_BYTES`` bytes of UTF-8, else one line saying
    which (a FIFO, a device, a 20 GB file, non-UTF-8 bytes)."""
    return read_text_bounded(path, MAX_RECIPE_BYTES, "a recipe (a TOML file)", RecipeError)


def read_toml(path: Path) -> dict[str, Any]:
    text = read_recipe_text(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # deeply nested inline arrays or tables
        raise RecipeError(f"{path}: invalid TOML: values nested too deeply") from None


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
            if isinstance(old, dict):  # a replaced table's old keys are gone, and so are their origins
                for stale in _paths(old, path):
                    if stale != path:
                        sources.pop(stale, None)
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
    if not parent_path.exists() and not parent_path.is_symlink():  # a broken link or a loop: reading names it
        stem = Path(parent).stem
        hint = f"; the shipped recipe is extends = \"{stem}\"" if stem in shipped_names() else ""
        raise RecipeError(f"{path}: extends: {parent!r} not found (looked for {parent_path}){hint}")
    return parent_path


def load_file(path: Path, sources: dict[str, str], chain: tuple[Path, ...]) -> dict[str, Any]:
    """The merged content of recipe ``path`` and its ``extends`` ancestors; ``chain`` holds the files that
    extend it (resolved: two names of one file, through symbolic links, are one file of a cycle)."""
    named = path
    try:
        path = path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
        raise RecipeError(f"{named}: cannot resolve the recipe's path ({exc})") from None
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise RecipeError(f"{chain[0]}: extends: cycle {cycle}")
    if len(chain) >= MAX_EXTENDS_DEPTH:
        raise RecipeError(f"{chain[0]}: extends: more than {MAX_EXTENDS_DEPTH} levels (the limit) at {path}")
    try:
        data = read_toml(named)  # the name as written: a symbolic link to /dev/zero is reported as such
    except RecipeError as exc:
        if chain:
            raise RecipeError(f"{chain[-1]}: extends: {exc}") from None
        raise
    merged: dict[str, Any] = {}
    parent = data.pop("extends", None)
    if parent is not None:
        merged = load_file(_parent_file(path, parent), sources, (*chain, path))
    _merge(merged, data, sources, str(path))
    return merged


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")


def _dotted(text: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in text.split("."))


class LineIndex:
    """Where each key and table header of one recipe file is written, read once: for error messages only, so a
    plain scan of headers and ``key =`` lines is enough (tomllib reports no positions). Lookups are dictionary
    hits, so locating every problem of a recipe costs one pass over the file, however many problems there are."""

    def __init__(self, file: Path) -> None:
        self.keys: dict[str, int] = {}
        self.tables: dict[str, int] = {}
        try:
            lines = read_recipe_text(file).splitlines()
        except RecipeError:
            lines = []
        table = ""
        for number, line in enumerate(lines, 1):
            if header := _HEADER.match(line):
                table = _dotted(header.group(1))
                self.tables.setdefault(table, number)
                continue
            if assign := _ASSIGN.match(line):
                full = f"{table}.{_dotted(assign.group(1))}" if table else _dotted(assign.group(1))
                self.keys.setdefault(full, number)

    def line(self, dotted: str) -> int | None:
        """The line that sets ``dotted``, else the line of its table header, else that of its nearest enclosing
        key or table."""
        if dotted in self.keys:
            return self.keys[dotted]
        if dotted in self.tables:
            return self.tables[dotted]
        probe = dotted.rpartition(".")[0]
        while probe:
            found = self.keys.get(probe) or self.tables.get(probe)
            if found:
                return found
            probe = probe.rpartition(".")[0]
        return None


def line_of(file: Path, dotted: str) -> int | None:
    """The line of ``file`` that sets ``dotted`` (or opens its nearest enclosing table), for error messages."""
    return LineIndex(file).line(dotted)


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


def apply_override(raw: dict[str, Any], text: str, sources: dict[str, str]) -> None:
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


def resolve_pretrain_recipe(raw: dict[str, Any], sources: dict[str, str]) -> None:
    """``run.pretrain_recipe`` is found like ``extends``, from the file that wrote it (not from the child that
    inherited it); the absolute path replaces it, so the run directory records which file was trained."""
    run = raw.get("run")
    if not isinstance(run, dict):
        return
    value = run.get("pretrain_recipe")
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
