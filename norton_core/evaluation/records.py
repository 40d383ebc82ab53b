"""One JSON file per (model, task): evaluations written one at a time and collected into one table later.

``norton evaluate`` writes, for every target and task it scores, ``<model>--<task>.json`` (the model label made a
file name) holding the metrics and what made them: the target and its checkpoint, the recipe, the task's options,
the evaluation root and whether it was generated, the precision and the norton version. ``norton compare`` reads
such files (or directories of them) and merges them into one table, one column per model, so that checkpoints
evaluated on different days or machines end up side by side.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from norton_core.errors import DataError

#: the ``format`` field of every record; a reader refuses others
RECORD_FORMAT = "norton-evaluation/1"


def record_name(model: str, task: str) -> str:
    """``<model>--<task>.json`` with everything but ``[A-Za-z0-9._-]`` in the model label replaced by ``_``; a label
    longer than 120 characters keeps its end (the checkpoint) and a hash of the whole label, so names stay unique."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_.") or "model"
    if len(slug) > 120:
        slug = hashlib.sha256(model.encode()).hexdigest()[:8] + "_" + slug[-100:].lstrip("_.")
    return f"{slug}--{task}.json"


def task_records(model: str, results: Mapping[str, float], tasks: Mapping[str, str],
                 provenance: Mapping[str, Any], options: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{task: record}`` for one model's results.

    :param results: ``{"<task_key>/<metric>": value}`` as :func:`~norton_core.evaluation.run_evaluation` returns.
    :param tasks: ``{task_key: task name}`` of the evaluated tasks (``youcook2_clip`` -> ``youcook2-clip``).
    :param provenance: what made the numbers, the same for every task (target, checkpoint, recipe, eval_root, ...).
    :param options: per task name, its resolved options.
    """
    from norton_core import __version__

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out: dict[str, dict[str, Any]] = {}
    for key, name in tasks.items():
        metrics = {k.partition("/")[2]: _clean(v) for k, v in results.items() if k.partition("/")[0] == key}
        out[name] = {"format": RECORD_FORMAT, "model": model, "task": name, "metrics": metrics,
                     **provenance, "options": dict(options.get(name, {})), "norton_version": __version__,
                     "created": created}
    return out


def write_records(out_dir: Path, records: Mapping[str, Mapping[str, Any]]) -> list[Path]:
    """Write each record to ``out_dir/<model>--<task>.json`` atomically (an earlier file of the same model and task
    is replaced); returns the paths."""
    from norton_core._util.files import replace_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for task, record in records.items():
        path = out_dir / record_name(str(record["model"]), task)
        replace_atomic(path, (json.dumps(record, indent=1, allow_nan=False) + "\n").encode())
        paths.append(path)
    return paths


def is_record(path: Path) -> bool:
    """Whether ``path`` is a JSON file holding an evaluation record."""
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == RECORD_FORMAT


def record_files(paths: Iterable[Path]) -> list[Path]:
    """The record files named by ``paths``: files as given, directories searched (not recursively) for records;
    other JSON files in a directory are left out with a line naming them."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            candidates = sorted(path.glob("*.json"))
            found = [p for p in candidates if is_record(p)]
            others = [p.name for p in candidates if p not in found]
            if others and found:
                print(f"norton: {path}: {len(others)} JSON file(s) that are not evaluation records left out: "
                      f"{', '.join(others[:5])}{', ...' if len(others) > 5 else ''}", file=sys.stderr)
            if not found:
                raise DataError(f"{path}: not a run directory (no recipe.json) and holds no evaluation records "
                                f"(*.json with \"format\": \"{RECORD_FORMAT}\")")
            out.extend(found)
        elif path.suffix == ".json":
            out.append(path)
        else:
            raise DataError(f"{path}: not a run directory (no recipe.json), a directory of evaluation records or a "
                            f"record (.json)")
    return out


def read_record(path: Path) -> dict[str, Any]:
    """One record, checked: its format, model, task and metrics (numbers or null)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable evaluation record ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: not an evaluation record (expected \"format\": \"{RECORD_FORMAT}\", got {got!r})")
    for field in ("model", "task"):
        if not isinstance(data.get(field), str) or not data[field]:
            raise DataError(f"{path}: record without a {field!r} string")
    metrics = data.get("metrics")
    if not isinstance(metrics, dict) or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                                                for v in metrics.values()):
        raise DataError(f"{path}: 'metrics' must map metric names to numbers (or null)")
    return data


def merge_records(paths: Iterable[Path]) -> tuple[dict[str, dict[str, float]], dict[str, list[dict[str, Any]]]]:
    """``({model: {"<task_key>/<metric>": value}}, {model: [record, ...]})`` from record files.

    Two records of the same model and task are refused (naming both files): one of them would silently hide the
    other. Columns are in the order the models first appear; rows follow the papers' table, then other tasks in the
    order they first appear.
    """
    from norton_core.evaluation.runner import task_key
    from norton_core.evaluation.suite import PAPER_TASKS

    columns: dict[str, dict[str, float]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    seen: dict[tuple[str, str], Path] = {}
    read = [(path, read_record(path)) for path in paths]
    rank = {task: i for i, task in enumerate(PAPER_TASKS)}
    models = list(dict.fromkeys(record["model"] for _, record in read))
    for model in models:
        columns[model] = {}
    read.sort(key=lambda item: rank.get(item[1]["task"], len(rank)))
    for path, record in read:
        model, task = record["model"], record["task"]
        if (model, task) in seen:
            raise DataError(f"{path}: a second record of model {model!r} on {task!r} (the first: {seen[model, task]}); "
                            f"pass one of them")
        seen[model, task] = path
        column = columns[model]
        for metric, value in record["metrics"].items():
            column[f"{task_key(task)}/{metric}"] = math.nan if value is None else float(value)
        records.setdefault(model, []).append({**record, "path": str(path)})
    return columns, records


def _clean(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value
