"""What a study cell's numbers came from, and whether a finished cell may stand for the cell asked for now.

A cell's *provenance* is its whole resolved recipe (every table with its defaults, as ``recipe.json`` holds it), the
identity of the data it read and, for an arm, the identity of the first stage it started from:

- a prepared store (``train``, ``val``) by the sha256 of its ``manifest.json``, which lists every shard file with
  its size and sha256, so that equal manifests mean equal data;
- the evaluation sets (``eval_root``) by the names and sizes of their files (hashing every feature file of a real
  evaluation set would cost minutes per cell);
- the first stage by the sha256 of its provenance and of the weights it ended with.

A finished cell is reused only when the provenance it recorded equals the one asked for; :func:`stale_reason` says
in one line what changed. Paths are recorded (the report names each store) but not compared: a store moved or
reached by another path holds the same data when its manifest is the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from norton_core.data import manifest as mf

#: at most this many changed keys are named in one line (then "and N more")
SHOWN_CHANGES = 4

_manifest_hashes: dict[tuple[str, int, int], str] = {}


def digest(value: Any) -> str:
    """sha256 of a JSON value in its canonical form (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so that a fresh value compares equal to a
    recorded one."""
    return json.loads(json.dumps(value))


def store_identity(path: Path) -> dict[str, Any]:
    """A prepared store: its absolute path and the sha256 of its manifest (checked for structure first)."""
    path = Path(path).expanduser().absolute()
    stat = (path / mf.MANIFEST).stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _manifest_hashes:
        _, raw = mf.load(path)
        _manifest_hashes[key] = hashlib.sha256(raw).hexdigest()
    return {"path": str(path), "manifest_sha256": _manifest_hashes[key]}


def listing_identity(root: Path) -> dict[str, Any]:
    """A directory of evaluation sets: its path, file count and the sha256 of its sorted (file, size) listing."""
    root = Path(root).expanduser().absolute()
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            full = Path(folder) / name
            entries.append(f"{full.relative_to(root).as_posix()}\t{full.stat().st_size}")
    return {"path": str(root), "files": len(entries),
            "listing_sha256": hashlib.sha256("\n".join(entries).encode()).hexdigest()}


def data_identity(recipe: Any) -> dict[str, Any]:
    """Prepare the recipe's data as training would (a generated set is generated once and cached) and identify what
    it reads: ``{"source", "train", "val", "eval_root"}``."""
    from norton_core.engine.setup import cache_dir_of

    source = recipe.build("data", cache_dir=cache_dir_of(recipe.run))
    paths = source.prepare(progress=False)
    return {"source": recipe.components["data"].name,
            "train": store_identity(paths.train),
            "val": store_identity(paths.val) if paths.val is not None else None,
            "eval_root": listing_identity(paths.eval_root) if paths.eval_root is not None else None}


def weights_sha256(run_dir: Path) -> str | None:
    """The sha256 of the model weights in a run's newest committed checkpoint (its manifest's entry), or None."""
    from norton_core.engine.checkpoint import committed_steps

    steps = committed_steps(Path(run_dir) / "checkpoints")
    if not steps:
        return None
    try:
        files = json.loads((steps[-1][1] / "manifest.json").read_text())["files"]
        return str(files["model.safetensors"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys to leaf values (an empty table has no leaf: nothing is set in it)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flat(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _short(value: Any) -> str:
    text = "(absent)" if value is _ABSENT else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


_ABSENT = object()


def _without_paths(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_paths(v) for k, v in data.items() if k != "path"}
    return data


def changes(old: Any, new: Any) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (paths of stores left out, see the module)."""
    a, b = _flat(old), _flat(new)
    return [f"{k}: {_short(a.get(k, _ABSENT))} -> {_short(b.get(k, _ABSENT))}"
            for k in sorted(set(a) | set(b)) if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def stale_reason(record: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """None when ``record`` (a finished cell's) was made exactly as ``expected`` asks; else one line naming what
    changed: recipe keys with their old and new values, the data, or the first stage."""
    had = record.get("provenance")
    if not isinstance(had, dict):
        return "no provenance recorded (made by an older norton), so it cannot be checked"
    found = changes(had.get("recipe"), expected["recipe"])
    found += [f"data.{c}" for c in changes(_without_paths(had.get("data")), _without_paths(expected["data"]))]
    if had.get("first_stage") != expected.get("first_stage"):
        found.append("its first stage was trained again or changed")
    if not found:
        return None
    more = f" and {len(found) - SHOWN_CHANGES} more" if len(found) > SHOWN_CHANGES else ""
    return "made with other settings: " + "; ".join(found[:SHOWN_CHANGES]) + more
