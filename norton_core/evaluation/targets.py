"""What ``norton evaluate`` scores: run directories, checkpoints, weights files and exports, each with a label
saying what it is and how it was selected.

A run directory gives one or more checkpoints (``--checkpoints``):

- ``latest``: the checkpoint ``checkpoints/latest`` names;
- ``best``: ``checkpoints/best``, the checkpoint the run kept by its validation loss (its ``selection.json`` says
  which metric, value, step and split chose it);
- ``all``: every committed ``step-N`` and ``best``, as the reference's prediction script scores every saved
  checkpoint.

Every checkpoint of a run is read through its manifest, so a file whose size or sha256 does not match is refused
before any weight is loaded.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import attrs

from norton_core._util.bounded import read_bounded
from norton_core.errors import CheckpointError, RecipeError

Selection = Literal["latest", "best", "all"]


@attrs.frozen
class Target:
    """One column of the table: weights to load into the model its recipe describes."""

    #: what this is and how it was selected, e.g. ``runs/demo step-400 (latest)``
    label: str
    #: reads the ``model.safetensors`` bytes, checked against the checkpoint's manifest where it has one (called
    #: when the target is evaluated, so only one checkpoint's files are held at a time)
    read: Callable[[], bytes]
    #: where the weights come from, for messages
    source: Path
    recipe: Path
    #: the run directory the checkpoint belongs to (None for a checkpoint, weights file or export given on its own):
    #: its evaluation records go to ``<run>/evaluations/``
    run: Path | None = None


def resolve_targets(target: Path, recipe: str | None, checkpoints: Selection = "latest") -> list[Target]:
    """The checkpoints of ``target`` that ``checkpoints`` selects, oldest first (``best`` last)."""
    from norton_core.runs.export import is_export, read_weights, verify_export

    if is_export(target):  # norton export's directory: its weights and its own recipe.json
        if checkpoints != "latest":
            raise CheckpointError(f"{target}: --checkpoints {checkpoints} needs a run directory, not an export")
        verify_export(target)  # every file, before its recipe builds a model from its text encoder's files
        return [Target(f"{target} (export)", functools.partial(read_weights, target),
                       target / "model.safetensors", Path(recipe) if recipe else target / "recipe.json")]
    if target.is_dir() and (target / "recipe.json").is_file():
        return _run_targets(target, Path(recipe) if recipe else target / "recipe.json", checkpoints)
    if checkpoints != "latest":
        raise CheckpointError(f"{target}: --checkpoints {checkpoints} needs a run directory (one holding "
                              f"recipe.json), not a single checkpoint or weights file")
    if target.is_dir():
        if not (target / "model.safetensors").is_file():
            raise CheckpointError(f"{target}: expected a run directory (with recipe.json) or a checkpoint directory "
                                  f"(with model.safetensors); found neither")
        run_recipe = target.parent.parent / "recipe.json"
        if recipe is None and not run_recipe.is_file():
            raise RecipeError(f"{target}: no --recipe given and no run recipe at {run_recipe}")
        return [Target(str(target), functools.partial(_checkpoint_weights, target), target / "model.safetensors",
                       Path(recipe) if recipe else run_recipe)]
    if target.is_file() and target.suffix == ".safetensors":
        if recipe is None:
            raise RecipeError(f"{target}: a weights file needs --recipe to say which model it holds")
        return [Target(str(target), functools.partial(_read_file, target), target, Path(recipe))]
    raise CheckpointError(f"{target}: not found, or not a run directory, checkpoint directory or .safetensors file")


def _run_targets(run: Path, recipe: Path, checkpoints: Selection) -> list[Target]:
    from norton_core.engine.checkpoint import committed_steps, read_pointer

    root = run / "checkpoints"
    latest = read_pointer(root / "latest") if (root / "latest").is_file() else ""
    if checkpoints == "latest":
        if not latest:
            raise CheckpointError(f"{run}: run directory without a committed checkpoint ({root / 'latest'} is "
                                  f"missing or empty)")
        path = root / latest
        if not path.is_dir():
            raise CheckpointError(f"{root / 'latest'}: names checkpoint {latest!r}, but {path} does not exist")
        return [_step_target(f"{run} {latest} (latest)", path, recipe, run)]
    best = root / "best"
    if checkpoints == "best":
        if not best.is_dir():
            raise CheckpointError(f"{run}: no best checkpoint ({best} is missing): a run keeps one when it has a "
                                  f"validation split (data.val) to select by")
        return [_best_target(run, best, recipe)]
    out = [_step_target(f"{run} {path.name}" + (" (latest)" if path.name == latest else ""), path, recipe, run)
           for _, path in committed_steps(root)]
    if best.is_dir():
        out.append(_best_target(run, best, recipe))
    if not out:
        raise CheckpointError(f"{run}: no committed checkpoint under {root}")
    return out


def _step_target(label: str, path: Path, recipe: Path, run: Path) -> Target:
    """A committed checkpoint of a run: its weights checked against its manifest (none: an incomplete checkpoint)."""
    return Target(_with_precision(label, path), functools.partial(_verified, path, "model.safetensors"),
                  path / "model.safetensors", recipe, run)


def _with_precision(label: str, checkpoint: Path) -> str:
    """``label (bf16)`` for weights that the checkpoint's state says were trained in anything but fp32 (their
    figures differ between machines); the label alone for fp32 and for a checkpoint that does not say."""
    from norton_core.runs.read import with_precision_label

    try:
        precision = str(json.loads((checkpoint / "state.json").read_text(encoding="utf-8")).get("precision", ""))
    except (OSError, ValueError, AttributeError):
        precision = ""
    return with_precision_label(label, precision)


def _best_target(run: Path, best: Path, recipe: Path) -> Target:
    """``checkpoints/best``, labelled by its ``selection.json``."""
    raw = _verified(best, "selection.json")
    try:
        sel = json.loads(raw)
        how = f"step-{int(sel['step'])}, lowest {sel['metric']} {float(sel['value']):.4g} on {sel['split']}"
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{best / 'selection.json'}: expected {{\"metric\", \"value\", \"step\", \"split\"}}, "
                              f"got {raw[:200]!r} ({exc})") from None
    return Target(_with_precision(f"{run} best ({how})", best),
                  functools.partial(_verified, best, "model.safetensors"), best / "model.safetensors", recipe, run)


def _verified(path: Path, name: str) -> bytes:
    """File ``name`` of checkpoint ``path``, its size and sha256 checked against the manifest, which must exist."""
    from norton_core.engine.checkpoint import read_checkpoint_file

    if not (path / "manifest.json").is_file():
        raise CheckpointError(f"{path}: no manifest.json (an incomplete checkpoint)")
    if not (path / name).is_file():
        raise CheckpointError(f"{path / name}: missing from the checkpoint")
    return read_checkpoint_file(path / name)


def _read_file(path: Path) -> bytes:
    """A weights file outside any checkpoint: a regular file (a FIFO or device is refused before reading)."""
    from norton_core.engine.checkpoint import MAX_WEIGHTS_BYTES

    return read_bounded(path, MAX_WEIGHTS_BYTES, "a weights file", CheckpointError)


def _checkpoint_weights(path: Path) -> bytes:
    """``model.safetensors`` of a checkpoint directory given on its own, verified against its manifest. A
    directory without a manifest (hand-made, e.g. converted weights) is read as is, and says so."""
    if not (path / "manifest.json").is_file():
        print(f"norton: note: {path} has no manifest.json; its model.safetensors is not verified", file=sys.stderr)
        return _read_file(path / "model.safetensors")
    return _verified(path, "model.safetensors")


def unique_labels(targets: list[Target]) -> list[Target]:
    """Targets whose labels are distinct (a repeated one gets ``#2``, ``#3``...), so no column hides another."""
    seen: dict[str, int] = {}
    out = []
    for t in targets:
        seen[t.label] = seen.get(t.label, 0) + 1
        out.append(t if seen[t.label] == 1 else attrs.evolve(t, label=f"{t.label} #{seen[t.label]}"))
    return out
