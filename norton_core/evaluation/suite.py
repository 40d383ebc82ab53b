"""The paper suite: every task of the zero-shot table the Norton and VideoCLIP papers report, run on whichever of
their datasets are present, and laid out as that table beside the published numbers.

:func:`present_tasks` picks the suite's tasks whose files are under the evaluation root and names the others with
the path it looked for; :func:`render_paper_table` renders our columns, the chance / trivial-baseline column and,
only when the evaluation root holds the released datasets, the published VideoCLIP and Norton values in their own
labelled columns. On generated data (the ``synthetic`` source) the published columns are left out and the table
says why: numbers on a generated world are not comparable with the papers'.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from norton_core.errors import DataError
from norton_core.evaluation.report import Format, chance_level, render_report, report_rows
from norton_core.evaluation.runner import build_evaluators, task_key
from norton_core.plugin.manager import Plugins

#: the suites ``norton evaluate --suite`` and ``[evaluation] suite`` accept
SUITES: tuple[str, ...] = ("paper",)

_RK = ("R@1", "R@5", "R@10")

#: the paper's zero-shot table, in its order: per task, the rows shown (metric keys of the task's evaluator)
PAPER_TABLE: dict[str, tuple[str, ...]] = {
    "youcook2-clip": _RK,
    "youcook2-video": (*(f"{m}_{r}" for m in ("capavg", "dtw", "otam") for r in _RK),
                       *(f"bg_{m}_{r}" for m in ("capavg", "dtw", "otam") for r in _RK)),
    "msrvtt": _RK,
    "msrvtt-qa": ("accuracy",),
    "didemo": ("R@1", "R@5"),
    "coin": ("frame_acc", "fg_frame_acc", "class_acc"),
    "crosstask": ("recall",),
    "htm-align": ("recall", "auc"),
}

#: the tasks of the paper suite, in table order
PAPER_TASKS: tuple[str, ...] = tuple(PAPER_TABLE)

# Published zero-shot values (S3D features, HowTo100M pretraining), ``{"task/metric": value}``. From the Norton paper
# (Lin et al., "Multi-granularity Correspondence Learning from Long-term Noisy Videos", ICLR 2024, arXiv:2401.16702),
# which lists VideoCLIP beside Norton: Table 1 (YouCook2 video-paragraph retrieval, background removed: capavg / dtw /
# otam), Table 2 (background kept: bg_*), Table 3 (YouCook2 clip retrieval), Table 5 (MSR-VTT retrieval, the
# zero-shot half), Table 6 (MSR-VTT-QA, zero-shot accuracy) and appendix Table 9 (HTM-Align recall). From the
# VideoCLIP paper (Xu et al., "VideoCLIP: Contrastive Pre-training for Zero-shot Video-Text Understanding", EMNLP
# 2021, arXiv:2109.14084): COIN zero-shot frame accuracy, CrossTask zero-shot recall and DiDeMo R@1 / R@5; the
# Norton paper reports no zero-shot value for these three (its COIN number, 69.8, is fine-tuned).
_VIDEOCLIP: dict[str, float] = {
    **dict(zip((f"youcook2_clip/{r}" for r in _RK), (22.7, 50.4, 63.1), strict=True)),
    **dict(zip((f"youcook2_video/{m}" for m in PAPER_TABLE["youcook2-video"]),
               (74.5, 94.5, 97.9, 56.0, 89.9, 96.3, 52.8, 89.2, 95.0,
                73.6, 94.7, 98.4, 55.7, 93.1, 98.9, 56.6, 92.8, 98.9), strict=True)),
    **dict(zip((f"msrvtt/{r}" for r in _RK), (10.4, 22.2, 30.0), strict=True)),
    "msrvtt_qa/accuracy": 73.9,
    "didemo/R@1": 16.6, "didemo/R@5": 46.9,
    "coin/frame_acc": 58.9,
    "crosstask/recall": 33.9,
    "htm_align/recall": 44.4,
}
_NORTON: dict[str, float] = {
    **dict(zip((f"youcook2_clip/{r}" for r in _RK), (24.2, 51.9, 64.1), strict=True)),
    **dict(zip((f"youcook2_video/{m}" for m in PAPER_TABLE["youcook2-video"]),
               (75.5, 95.0, 97.7, 88.7, 98.8, 99.5, 88.9, 98.4, 99.5,
                74.8, 94.7, 98.4, 76.1, 95.0, 97.7, 73.6, 94.7, 97.7), strict=True)),
    **dict(zip((f"msrvtt/{r}" for r in _RK), (10.7, 24.1, 31.6), strict=True)),
    "msrvtt_qa/accuracy": 77.1,
    "htm_align/recall": 46.9,
}
#: the published columns, labelled by paper
PUBLISHED: dict[str, dict[str, float]] = {"VideoCLIP (published)": _VIDEOCLIP, "Norton (published)": _NORTON}

#: the file the synthetic generator writes into its evaluation root (and, for sets generated before it did, the
#: ground truth it writes beside it): either marks the root as generated
GENERATED_MARKERS: tuple[str, ...] = ("GENERATED", "../ground_truth.json")


def is_generated(eval_root: Path) -> bool:
    """Whether ``eval_root`` holds sets the synthetic source generated rather than the released datasets."""
    return any((Path(eval_root) / marker).is_file() for marker in GENERATED_MARKERS)


@attrs.frozen
class Selection:
    """The suite's tasks split by whether their dataset is under ``eval_root``."""

    eval_root: Path
    present: list[str]
    #: task -> the path that was looked for and not found
    missing: dict[str, Path]

    def missing_line(self) -> str:
        """One line naming every missing task and where it looked ('' when none is missing)."""
        if not self.missing:
            return ""
        where = ", ".join(f"{task} (no {path})" for task, path in self.missing.items())
        return (f"norton: suite: {len(self.missing)} of {len(self.missing) + len(self.present)} tasks skipped, "
                f"their datasets are not under {self.eval_root}: {where}")


def suite_tasks(suite: str) -> tuple[str, ...]:
    """The tasks of ``suite``, in table order."""
    if suite not in SUITES:
        raise DataError(f"unknown evaluation suite {suite!r}; expected one of {', '.join(SUITES)}")
    return PAPER_TASKS


def present_tasks(tasks: Sequence[str], eval_root: Path, options: Mapping[str, Any] | None = None,
                  plugins: Plugins | None = None) -> Selection:
    """Split ``tasks`` by whether each one's files exist under ``eval_root``: its dataset directory and, where its
    options name them, its annotation file (``annotations``) or release directory (``release``). MSR-VTT retrieval
    and MSR-VTT-QA share ``msrvtt/`` but not their files, so the directory alone does not decide."""
    eval_root = Path(eval_root)
    evaluators = build_evaluators(list(tasks), {t: o for t, o in (options or {}).items() if t in tasks}, plugins)
    present: list[str] = []
    missing: dict[str, Path] = {}
    for ev in evaluators:
        root = eval_root / ev.dataset
        needed = [root, *(root / str(getattr(ev.config, name)) for name in ("annotations", "release")
                          if isinstance(getattr(ev.config, name, None), str))]
        absent = next((p for p in needed if not p.exists()), None)
        if absent is None:
            present.append(ev.name)
        else:
            missing[ev.name] = absent
    return Selection(eval_root, present, missing)


def published_values(generated: bool) -> dict[str, dict[str, float]]:
    """The published columns to show: none on generated data."""
    return {} if generated else PUBLISHED


def render_paper_table(columns: Mapping[str, Mapping[str, float]], *, generated: bool, fmt: Format = "markdown",
                       missing: Mapping[str, Path] | None = None) -> str:
    """The paper's zero-shot table: one row per reported metric of every task some column has, then the chance /
    trivial-baseline column, our columns, and the published columns (only when ``generated`` is false).

    A note under the table says which tasks had no dataset and, on generated data, why the published columns are
    left out. JSON holds ``{"columns", "chance", "published", "missing", "generated"}``.
    """
    keys = [f"{task_key(t)}/{m}" for t, metrics in PAPER_TABLE.items() for m in metrics
            if any(f"{task_key(t)}/{m}" in col for col in columns.values())]
    # tasks outside the paper's table (a plugin's, listed beside the suite in a recipe) follow with their paper rows
    ours = {task_key(t) for t in PAPER_TABLE}
    keys += [k for k in report_rows(columns, "paper") if k.partition("/")[0] not in ours]
    published = {label: {k: v for k, v in values.items() if k in keys}
                 for label, values in published_values(generated).items()}
    notes = []
    if missing:
        notes.append("no dataset for " + ", ".join(f"{t} ({p})" for t, p in missing.items()))
    if generated:
        notes.append("published VideoCLIP / Norton values left out: these numbers come from generated evaluation "
                     "sets, not the released datasets, so they are not comparable with the papers'")
    if fmt == "json":
        chance = {k: _chance(k, columns) for k in keys}
        return json.dumps({"columns": {label: {k: _clean(col.get(k)) for k in keys} for label, col in columns.items()},
                           "chance": chance, "published": published, "generated": generated,
                           "missing": {t: str(p) for t, p in (missing or {}).items()}})
    # published values ride as extra columns; render_report computes the chance cells from our columns only
    table_columns: dict[str, dict[str, float]] = {label: {k: col[k] for k in keys if k in col}
                                                  for label, col in columns.items()}
    chance_inputs = {label: dict(col) for label, col in columns.items()}
    table_columns.update(published)
    body = render_report(table_columns, fmt=fmt, rows="all", order=keys, chance_from=chance_inputs)
    if not notes:
        return body
    if fmt == "latex":
        return body + "\n" + "\n".join(f"% {n}" for n in notes)
    return body + "\n\n" + "\n".join(f"note: {n}" for n in notes)


def _clean(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _chance(key: str, columns: Mapping[str, Mapping[str, float]]) -> float | None:
    values = [chance_level(key, col) for col in columns.values() if key in col]
    return next((v for v in values if v is not None), None)
