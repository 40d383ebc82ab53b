"""Strict, aggregated validation of TOML tables into attrs config classes.

Every component declares its options as a frozen attrs class built with :func:`option`. :func:`parse_config`
turns one TOML table into an instance, collecting *every* problem instead of stopping at the first: unknown keys
(with a "did you mean"), wrong types (no ``true`` -> 1, no ``"64"`` -> 64, no ``256.0`` -> 256), NaN/inf and
out-of-range numbers. Each problem is one line ``<file>: <dotted.key>: <what is wrong>``.

An int is accepted where a float is expected (TOML writers often write ``lr = 1``); nothing else is coerced.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, cast

import attrs

T = TypeVar("T")

_META = "norton"


def option(
    default: Any = attrs.NOTHING,
    *,
    help: str = "",
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    factory: Callable[[], Any] | None = None,
    path: bool = False,
) -> Any:
    """Declare one recipe option: its default, its help text and its numeric bounds.

    ``path=True`` marks a file or directory (data, weights, outputs): relative values are relative to the working
    directory, and ``--dry-run`` prints their absolute form.
    """
    meta = {_META: {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "path": path}}
    if factory is not None:
        return attrs.field(factory=factory, metadata=meta)
    return attrs.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(inner)}"
    if origin is dict:
        return "table"
    if tp is type(None):
        return "nothing (omit the key)"
    if attrs.has(tp):
        return "table"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(tp, getattr(tp, "__name__", str(tp)))


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


class _Problems:
    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))


def _check(value: Any, tp: Any, path: str, problems: _Problems) -> tuple[bool, Any]:
    """Check ``value`` against type ``tp``; return (ok, converted value)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _check(value, args[0], path, problems)
        for arg in args:
            if _matches(value, arg):
                return _check(value, arg, path, problems)
        problems.add(path, f"expected {_type_name(tp)}, got {_toml_type(value)}")
        return False, None
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return True, value
        hint = _did_you_mean(str(value), [str(a) for a in allowed])
        problems.add(path, f"expected one of {', '.join(repr(a) for a in allowed)}, got {_toml_type(value)}{hint}")
        return False, None
    if origin is list:
        if not isinstance(value, list):
            problems.add(path, f"expected {_type_name(tp)}, got {_toml_type(value)}")
            return False, None
        (inner,) = typing.get_args(tp) or (Any,)
        out, ok = [], True
        for i, item in enumerate(value):
            item_ok, item_value = _check(item, inner, f"{path}[{i}]", problems)
            ok &= item_ok
            out.append(item_value)
        return ok, out
    if origin is dict:
        if not isinstance(value, dict):
            problems.add(path, f"expected a table, got {_toml_type(value)}")
            return False, None
        _, inner = typing.get_args(tp) or (str, Any)
        out_d, ok = {}, True
        for key, item in value.items():
            item_ok, item_value = _check(item, inner, f"{path}.{key}", problems)
            ok &= item_ok
            out_d[key] = item_value
        return ok, out_d
    if attrs.has(tp):
        if not isinstance(value, dict):
            problems.add(path, f"expected a table, got {_toml_type(value)}")
            return False, None
        inst = _parse(tp, value, path, problems)
        return inst is not None, inst
    if tp is bool:
        if isinstance(value, bool):
            return True, value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return True, value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                problems.add(path, f"must be a finite number, got {value!r}")
                return False, None
            return True, float(value)
    elif tp is str:
        if isinstance(value, str):
            return True, value
    else:  # pragma: no cover - a schema author used a type this module does not know
        raise TypeError(f"unsupported config type {tp!r} at {path}")
    problems.add(path, f"expected {_type_name(tp)}, got {_toml_type(value)}")
    return False, None


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is list:
        return isinstance(value, list)
    if origin is dict or attrs.has(tp):
        return isinstance(value, dict)
    if origin is Literal:
        return value in typing.get_args(tp)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp) if isinstance(tp, type) else False


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: unknown keys of one table reported one line each (with a "did you mean"); the rest share one summary line
MAX_UNKNOWN_LINES = 20


def unknown_key_problems(prefix: str, unknown: list[str], allowed: list[str],
                         what: str = "key") -> list[tuple[str, str]]:
    """``(dotted path, message)`` for each unknown key of one table (``prefix`` is ``"table."`` or ``""``): the
    first ``MAX_UNKNOWN_LINES`` with a "did you mean", then one line counting the rest and naming a few. Linear in
    the number of keys, so a recipe with 10,000 stray keys is reported at once, in a screenful."""
    listed = ", ".join(allowed) or "none"
    out = [(f"{prefix}{key}", f"unknown {what}{_did_you_mean(key, allowed)}; allowed {what}s: {listed}")
           for key in unknown[:MAX_UNKNOWN_LINES]]
    rest = unknown[MAX_UNKNOWN_LINES:]
    if rest:
        examples = ", ".join(repr(k) for k in rest[:3])
        out.append((f"{prefix}{rest[0]}", f"and {len(rest)} more unknown {what}s in this table (e.g. {examples}); "
                                          f"allowed {what}s: {listed}"))
    return out


def _bounds(value: Any, meta: dict[str, Any], path: str, problems: _Problems) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return True
    checks = [("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
              ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")]
    for key, ok, sign in checks:
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            problems.add(path, f"must be {sign} {bound}, got {value!r}")
            return False
    return True


def _parse(cls: type[T], data: Mapping[str, Any], path: str, problems: _Problems) -> T | None:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in attrs.fields(cast("type[attrs.AttrsInstance]", cls))}
    kwargs: dict[str, Any] = {}
    ok = True
    prefix = f"{path}." if path else ""
    unknown = [key for key in data if key not in fields]
    for path, message in unknown_key_problems(prefix, unknown, list(fields), "key"):
        problems.add(path, message)
    ok = not unknown
    for key, value in data.items():
        if key not in fields:
            continue
        field_ok, converted = _check(value, hints[key], f"{prefix}{key}", problems)
        if field_ok:
            field_ok = _bounds(converted, fields[key].metadata.get(_META, {}), f"{prefix}{key}", problems)
        ok &= field_ok
        kwargs[key] = converted
    for name, field in fields.items():
        if name not in data and field.default is attrs.NOTHING:
            problems.add(f"{prefix}{name}", f"required key is missing ({_type_name(hints[name])})")
            ok = False
    if not ok:
        return None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # attrs validators written by component authors
        problems.add(path or "(table)", str(exc))
        return None


def check_config(cls: type[T], data: Mapping[str, Any], path: str = "") -> tuple[T | None, list[tuple[str, str]]]:
    """Validate ``data`` against the attrs class ``cls``; problems as ``(dotted path, message)`` pairs."""
    problems = _Problems()
    inst = _parse(cls, data, path, problems)
    return inst, problems.items


def parse_config(
    cls: type[T], data: Mapping[str, Any], *, path: str = "", source: str = "<config>"
) -> tuple[T | None, list[str]]:
    """Validate ``data`` against the attrs class ``cls``.

    :returns: ``(instance, [])`` when valid, else ``(None, problems)`` with one line ``source: path: message`` each.
    """
    inst, items = check_config(cls, data, path)
    return inst, [f"{source}: {p}: {m}" for p, m in items]


def to_dict(config: Any) -> dict[str, Any]:
    """A config instance as plain TOML-able data (for dry runs, checkpoints and manifests)."""
    return attrs.asdict(config, recurse=True)


def is_path_option(field: Any) -> bool:
    return bool(field.metadata.get(_META, {}).get("path"))


@attrs.frozen
class OptionInfo:
    """One option as ``norton plugins --options`` / ``norton describe`` show it."""

    key: str
    type: str
    default: Any
    required: bool
    bounds: str
    help: str


def describe(cls: type) -> list[OptionInfo]:
    """Every option of the config class ``cls``: key, type, default, bounds (``>= 0, <= 1``) and help."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in attrs.fields(cls):
        default = f.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        meta = f.metadata.get(_META, {})
        signs = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        bounds = ", ".join(f"{sign} {meta[key]}" for key, sign in signs if meta.get(key) is not None)
        rows.append(OptionInfo(f.name, _type_name(hints[f.name]), None if default is attrs.NOTHING else default,
                               default is attrs.NOTHING, bounds, meta.get("help", "")))
    return rows
