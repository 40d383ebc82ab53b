"""Reading a run directory: ``recipe.json``, ``metrics.jsonl``, ``eval.json``, the newest checkpoint and the lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from norton_core.errors import CheckpointError

#: the figures `norton runs` shows for a run, in this order, when its evaluation has them
MAIN_METRICS = ("youcook2_clip/R@1", "youcook2_clip/R@10", "youcook2_video/dtw_R@1", "htm_align/recall", "msrvtt/R@1")


@attrs.frozen
class RunSummary:
    """One run as the run tools see it.

    :ivar state: ``complete`` (reached its last epoch or ``max_steps``), ``running`` (a process holds its lock) or
        ``interrupted`` (stopped before its end: preempted, killed or failed; ``norton-run --resume`` continues it).
    :ivar total_steps: the steps the whole run takes (all epochs, honouring ``max_steps``), when known.
    :ivar steps: the step records of ``metrics.jsonl``; ``events`` the other records.
    :ivar evaluation: ``{label: {"task/metric": value}}`` of this run (``eval.json``).
    :ivar precision: the training precision(s) its newest checkpoint records ('' when it records none; see
        :func:`run_precision`).
    """

    path: Path
    name: str
    state: str
    step: int
    epoch: int
    recipe: dict[str, Any]
    steps: list[dict[str, Any]]
    events: list[dict[str, Any]]
    evaluation: dict[str, dict[str, float]]
    checkpoint: Path | None
    precision: str = ""

    @property
    def chance(self) -> dict[str, Any] | None:
        """The run's last ``chance`` record (the watch over a loss stuck at chance; see
        :mod:`norton_core.engine.chance`), or None for a run that was not watched."""
        for record in reversed(self.events):
            if record.get("event") == "chance":
                return record
        return None

    @property
    def last_loss(self) -> float | None:
        for record in reversed(self.steps):
            if isinstance(record.get("loss"), (int, float)):
                return float(record["loss"])
        return None


@attrs.frozen
class UnreadableRun:
    """A run directory :func:`find_runs` could not read: ``reason`` is the one-line error (which file, what is
    wrong)."""

    path: Path
    name: str
    reason: str


def read_run(path: str | Path) -> RunSummary:
    """Read a run directory (one holding ``recipe.json``); a one-line CheckpointError for anything else, naming
    the file and what is wrong with it."""
    path = Path(path)
    recipe_file = path / "recipe.json"
    if not recipe_file.is_file():
        raise CheckpointError(f"{path}: not a run directory (no recipe.json); runs live in <run.output_dir>/<run.name>")
    recipe = _json(recipe_file)
    run_table, train = _table(recipe, "run", recipe_file), _table(recipe, "train", recipe_file)
    records = list(_records(path / "metrics.jsonl"))
    steps = [r for r in records if "event" not in r and _count(r.get("step"))]
    events = [r for r in records if "event" in r]
    evaluation = _evaluation(path / "eval.json") if (path / "eval.json").is_file() else {}
    checkpoint, state = _latest_state(path / "checkpoints")
    where = checkpoint / "state.json" if checkpoint is not None else None
    step = _number(state, "step", where) if "step" in state else steps[-1]["step"] if steps else 0
    epoch = _number(state, "epoch", where) if "epoch" in state else 1
    epochs = _number(train, "epochs", recipe_file) if "epochs" in train else 0
    max_steps = _number(train, "max_steps", recipe_file) if "max_steps" in train else 0
    finished = bool(state) and (epoch > epochs or (max_steps > 0 and step >= max_steps))
    run_state = "running" if _locked(path / ".lock") else "complete" if finished else "interrupted"
    name = run_table.get("name", path.name)
    return RunSummary(path=path, name=name if isinstance(name, str) else path.name, state=run_state, step=step,
                      epoch=epoch, recipe=recipe, steps=steps, events=events, evaluation=evaluation,
                      checkpoint=checkpoint, precision=str(state.get("precision", "")))


def find_runs(root: str | Path) -> list[RunSummary | UnreadableRun]:
    """Every run directory directly under ``root`` (``runs/`` by default), by name. A run that cannot be read is
    an :class:`UnreadableRun` saying why, in its place: one bad run does not hide the others."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"{root}: no such directory (runs are written to <run.output_dir>, default runs/)")
    out: list[RunSummary | UnreadableRun] = []
    for path in sorted(root.iterdir()):
        if not (path / "recipe.json").is_file():
            continue
        try:
            out.append(read_run(path))
        except CheckpointError as exc:
            out.append(UnreadableRun(path, path.name, str(exc)))
        except OSError as exc:  # a directory or file we may not read
            out.append(UnreadableRun(path, path.name, f"{exc.filename or path}: unreadable ({exc.strerror or exc})"))
    return out


def final_evaluation(run: RunSummary) -> tuple[str, dict[str, float]]:
    """The run's last evaluation (``after`` when there is one): ``(label, {"task/metric": value})``."""
    if "after" in run.evaluation:
        return "after", run.evaluation["after"]
    if run.evaluation:
        label = list(run.evaluation)[-1]
        return label, run.evaluation[label]
    return "", {}


def column_labels(evaluation: dict[str, Any], run_name: str, initialised: bool,
                  trained_in: Mapping[str, str] | None = None) -> dict[str, dict[str, float]]:
    """The evaluation result sets keyed by what they are, for tables: ``before`` of a model trained from scratch
    is ``untrained``, ``after`` is ``after <run>``; an earlier stage's ``<stage>/before`` and ``<stage>/after``
    (a two-stage recipe) become ``untrained`` and ``after <stage>``.

    :param initialised: the run started from weights (``run.init_from`` or an earlier stage), so its ``before`` is
        not an untrained model.
    :param trained_in: ``{label: training precision}``; a precision other than fp32 is added to its column's
        title (``after how2_demo (bf16)``): such figures differ between machines.
    """
    out: dict[str, dict[str, float]] = {}
    for label, results in evaluation.items():
        stage, _, own = label.rpartition("/")
        name = stage or run_name
        if own == "before":
            title = "untrained" if stage or not initialised else f"before {name}"
        elif own == "after":
            title = f"after {name}"
        else:
            title = f"{own} {name}"
        title = with_precision_label(title, (trained_in or {}).get(label, ""))
        out[title if title not in out else label] = results
    return out


def with_precision_label(title: str, precision: str) -> str:
    """``title (bf16)`` for weights trained in anything but fp32 (or not known to be fp32: ``auto``); ``title``
    for fp32 and for results of no training precision (an untrained model, an unknown one: '')."""
    return title if precision in ("", "fp32") else f"{title} ({precision})"


def run_precision(run: RunSummary) -> str:
    """The training precision(s) of a run's weights: what its newest checkpoint records, else what its start
    records said, else the recipe's setting (``auto`` when it did not fix one and no record says what it chose)."""
    if run.precision:
        return run.precision
    chosen = {e["precision"] for e in run.events if e.get("event") == "start" and e.get("precision")}
    if chosen:
        return "+".join(sorted(chosen))
    return str(run.recipe.get("train", {}).get("precision", "fp32"))


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(table: dict[str, Any], key: str, where: Path | None) -> int:
    """``table[key]`` as a non-negative integer, or a one-line error naming the file it came from."""
    if not _count(table[key]):
        raise CheckpointError(f"{where}: {key} {table[key]!r} is not a non-negative integer")
    return int(table[key])


def _table(recipe: dict[str, Any], name: str, where: Path) -> dict[str, Any]:
    table = recipe.get(name, {})
    if not isinstance(table, dict):
        raise CheckpointError(f"{where}: [{name}] is {type(table).__name__}, expected a table")
    return table


def _evaluation(path: Path) -> dict[str, dict[str, float]]:
    """``eval.json``: ``{label: {"task/metric": value}}``."""
    data = _json(path)
    for label, results in data.items():
        if not isinstance(results, dict):
            raise CheckpointError(f"{path}: {label!r} is {type(results).__name__}, expected a table of metrics")
    return data


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of ``metrics.jsonl``; a torn last line (a run killed mid-write) is left out, any other bad line
    is an error naming it."""
    if not path.is_file():
        return
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                continue
            raise CheckpointError(f"{path}:{number}: not a JSON record ({exc})") from None
        if isinstance(record, dict):
            yield record


def _latest_state(root: Path) -> tuple[Path | None, dict[str, Any]]:
    """``state.json`` of the checkpoint ``latest`` names (step, epoch, cursor); nothing when there is none yet."""
    from norton_core.engine.checkpoint import read_latest, read_pointer

    latest = root / "latest"
    if not latest.is_file():
        return None, {}
    name = read_latest(root)
    if name is None:
        raise CheckpointError(f"{latest}: does not name a checkpoint ({read_pointer(latest)[:40]!r})")
    checkpoint = root / name
    state_file = checkpoint / "state.json"
    if not state_file.is_file():
        raise CheckpointError(f"{latest}: names {checkpoint.name!r}, which has no state.json")
    return checkpoint, _json(state_file)


def _locked(lock: Path) -> bool:
    """Whether a live process holds the run's lock (the engine's flock; the kernel drops it when that process dies)."""
    if not lock.is_file():
        return False
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return False
