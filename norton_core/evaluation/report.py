"""Paper-style result tables: the rows a paper reports, chance levels, and table / Markdown / LaTeX / JSON output.

One function does it all: :func:`render_report`. ``norton evaluate`` uses it, and so should anything else that
shows evaluation results (the training engine's end-of-run table), so that every table agrees on which rows are
shown, what chance is and how numbers are written.

Input: one or more result sets ``{"task/metric": value}`` (what :func:`~norton_core.evaluation.run_evaluation`
returns), keyed by a column label that says what each one is (``"untrained"``, ``"runs/demo step-400 (best
val_loss)"``).

Rows (``rows="paper"``, the default): per built-in task the metrics a paper reports plus the counts that say what
was evaluated (pairs, videos, ...); ``skipped_*`` counters and ``unscored`` only where some column has a non-zero
value; YouCook2's video-paragraph rows include the shift-invariant (centred) DTW/OTAM beside the reference's, since
the reference protocols depend on the similarities' absolute level; the exact variants and other diagnostics only
with ``rows="all"``. A task this
module does not know (a plugin's) shows all its metrics, with the same rule for zero counters.

Chance (the ``chance`` column, where one is defined):

- ``R@k`` over N candidates: ``100 * min(k, N) / N``; ``MR``: ``(N + 1) / 2``. N is the task's candidate count:
  ``pairs`` for YouCook2 clip retrieval, ``videos`` (``bg_videos`` for ``bg_*`` metrics) for video-paragraph
  retrieval, ``videos`` for MSR-VTT. These are exact under the expected-tie ranking the evaluators use.
- ``auc``: 50.
- MSR-VTT-QA ``accuracy``: 20 (one of 5 sentences); DiDeMo ``R@1``, ``R@5``, ``mIoU``: the exact expectation when
  each query ranks its video's candidate moments at random. Both evaluators return these as ``m_chance``.
- any metric ``m`` for which the results also hold ``m_chance`` (HTM-Align's ``recall_chance``; a plugin may do
  the same): that value. The ``m_chance`` row itself is then not shown separately.

When the columns' chance levels differ (different evaluation sets), the cell lists each column's value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Literal

Format = Literal["table", "markdown", "latex", "json"]
Rows = Literal["paper", "all"]
FORMATS: tuple[str, ...] = ("table", "markdown", "latex", "json")

_RK = ("R@1", "R@5", "R@10")

#: per built-in task, the rows a paper reports, in order (metrics, then what was evaluated). MSR-VTT-QA and DiDeMo
#: report their chance levels themselves (``accuracy_chance`` = 20; DiDeMo's exact random-ranking ``R@k_chance`` /
#: ``mIoU_chance``), DiDeMo also its moment-frequency prior (``prior_*``, the trivial baseline); COIN's frame accuracy
#: comes with its trivial baselines as ``<metric>_chance`` (background everywhere for ``frame_acc`` and
#: ``class_acc``, a random step for ``fg_frame_acc``), CrossTask's recall with a random second per step.
PAPER_ROWS: dict[str, tuple[str, ...]] = {
    "youcook2_clip": (*_RK, "MR", "pairs", "videos"),
    "youcook2_video": (
        *(f"{m}_{r}" for m in ("capavg", "dtw", "otam", "dtw_centred", "otam_centred") for r in _RK), "videos",
        *(f"bg_{m}_{r}" for m in ("capavg", "dtw", "otam") for r in _RK), "bg_videos"),
    "htm_align": ("recall", "auc", "videos", "alignable"),
    "msrvtt": (*_RK, "MR", "captions", "videos"),
    "msrvtt_qa": ("accuracy", "questions", "videos"),
    "didemo": ("R@1", "R@5", "mIoU", "prior_R@1", "prior_R@5", "prior_mIoU", "queries", "videos"),
    "coin": ("frame_acc", "fg_frame_acc", "class_acc", "predicted_bg", "videos", "frames"),
    "crosstask": ("recall", "videos", "tasks", "steps"),
}

#: metrics that count things (written as integers); ``skipped_*`` are counts too
COUNT_METRICS = frozenset({"pairs", "videos", "captions", "sentences", "alignable", "unscored", "bg_videos",
                           "questions", "queries", "unreachable", "tied",
                           "frames", "labels", "tasks", "steps", "label_gaps", "duplicate_labels", "segments_cut"})
#: counters shown only where some column has a non-zero value (COIN's label gaps and duplicates change its
#: background threshold; DiDeMo's unreachable and tied queries change what its ranks mean)
_SHOWN_WHEN_NONZERO = ("skipped_",)
_NONZERO_NAMES = frozenset({"unscored", "unreachable", "tied", "label_gaps", "duplicate_labels"})

#: the metric holding each retrieval task's candidate count (``bg_`` metrics use ``bg_<count>``)
CANDIDATES: dict[str, str] = {"youcook2_clip": "pairs", "youcook2_video": "videos", "msrvtt": "videos"}

_RECALL = re.compile(r"^(?P<prefix>bg_)?(?:.*_)?R@(?P<k>\d+)$")
_MEDIAN_RANK = re.compile(r"^(?P<prefix>bg_)?(?:.*_)?MR$")


def is_count(metric: str) -> bool:
    """Whether a metric counts items (written without decimals)."""
    return metric in COUNT_METRICS or metric.startswith("skipped_")


def chance_level(key: str, results: Mapping[str, float]) -> float | None:
    """The chance value of ``key`` (``"task/metric"``) given the rest of its result set, or None if none is
    defined (counts, or a metric this module knows no chance for)."""
    task, _, metric = key.partition("/")
    given = results.get(f"{key}_chance")
    if given is not None:
        return float(given)
    if metric == "auc":
        return 50.0
    count_name = CANDIDATES.get(task)
    if count_name is None:
        return None
    for pattern, kind in ((_RECALL, "recall"), (_MEDIAN_RANK, "mr")):
        match = pattern.match(metric)
        if not match:
            continue
        n = results.get(f"{task}/{match.group('prefix') or ''}{count_name}")
        if n is None or not math.isfinite(n) or n < 1:
            return None
        if kind == "mr":
            return (n + 1) / 2
        return 100.0 * min(int(match.group("k")), n) / n
    return None


def report_rows(columns: Mapping[str, Mapping[str, float]], rows: Rows = "paper",
                order: Sequence[str] = ()) -> list[str]:
    """The ``task/metric`` keys a report shows, grouped by task in first-seen order.

    :param order: keys to put first (e.g. one result set's own order); the rest follow in first-seen order.
    """
    seen = list(dict.fromkeys([*order, *(k for col in columns.values() for k in col)]))
    tasks = list(dict.fromkeys(k.partition("/")[0] for k in seen))
    present = set(seen)
    out: list[str] = []
    for task in tasks:
        keys = [k for k in seen if k.partition("/")[0] == task]
        if rows == "paper" and task in PAPER_ROWS:
            keys = [f"{task}/{m}" for m in PAPER_ROWS[task] if f"{task}/{m}" in present] + \
                   [k for k in keys if _is_counter(k)]
        if rows == "paper":
            keys = [k for k in keys if not _is_counter(k) or any(col.get(k) for col in columns.values())]
            keys = [k for k in keys if not (k.endswith("_chance") and k[: -len("_chance")] in present)]
        out.extend(dict.fromkeys(keys))
    return out


def _is_counter(key: str) -> bool:
    metric = key.partition("/")[2]
    return metric.startswith(_SHOWN_WHEN_NONZERO) or metric in _NONZERO_NAMES


def _number(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if is_count(metric):
        return f"{value:.0f}"
    return f"{value:.2f}"


def _chance_cell(key: str, columns: Mapping[str, Mapping[str, float]]) -> str:
    metric = key.partition("/")[2]
    values = [chance_level(key, col) for col in columns.values() if key in col]
    values = [v for v in values if v is not None]
    if not values:
        return ""
    cells = list(dict.fromkeys(_number(metric, v) for v in values))
    return " / ".join(cells)


def render_report(columns: Mapping[str, Mapping[str, float]], *, fmt: Format = "table", rows: Rows = "paper",
                  chance: bool = True, order: Sequence[str] = (),
                  chance_from: Mapping[str, Mapping[str, float]] | None = None) -> str:
    """A table of one or more result sets side by side.

    :param columns: ``{label: {"task/metric": value}}``; the labels head the columns, so they should say what each
        result set is (a run and checkpoint and how it was selected, "untrained", a stage name).
    :param fmt: ``"table"`` (aligned plain text), ``"markdown"`` (a GitHub table), ``"latex"`` (a ``tabular``
        using booktabs rules) or ``"json"``. JSON holds every metric regardless of ``rows``: with one column the
        flat ``{"task/metric": value}``, with several ``{label: {...}}``; NaN is ``null``.
    :param rows: ``"paper"`` (what a paper reports, zero counters hidden) or ``"all"``.
    :param chance: add the chance column (only if some row has a chance level).
    :param order: keys to list first (see :func:`report_rows`).
    :param chance_from: the result sets chance levels are computed from (default: ``columns``); for columns that
        are not result sets of their own (published values) or that hold only some of their keys.
    """
    if fmt == "json":
        clean = {label: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in col.items()}
                 for label, col in columns.items()}
        return json.dumps(next(iter(clean.values())) if len(clean) == 1 else clean)
    keys = report_rows(columns, rows, order)
    chances = [_chance_cell(k, columns if chance_from is None else chance_from) for k in keys] if chance else []
    with_chance = chance and any(chances)
    header = ["task", "metric", *(["chance"] if with_chance else []), *columns]
    body = []
    previous = None
    for i, key in enumerate(keys):
        task, _, metric = key.partition("/")
        shown = task if task != previous else ""
        previous = task
        cells = [_number(metric, col.get(key)) for col in columns.values()]
        body.append([shown, metric, *([chances[i]] if with_chance else []), *cells])
    if fmt == "table":
        return _plain(header, body)
    if fmt == "markdown":
        return _markdown(header, body)
    if fmt == "latex":
        return _latex(header, body)
    raise ValueError(f"unknown report format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _plain(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(f"{c:<{w}}" if i < 2 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)])


def _markdown(header: list[str], body: list[list[str]]) -> str:
    def escape(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(escape(c) for c in header) + " |",
             "|" + "|".join(["---", "---", *(["---:"] * (len(header) - 2))]) + "|"]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex(header: list[str], body: list[list[str]]) -> str:
    def escape(cell: str) -> str:
        return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in cell)

    def line(row: list[str]) -> str:
        return " & ".join(escape(c) for c in row) + r" \\"

    return "\n".join([r"\begin{tabular}{ll" + "r" * (len(header) - 2) + "}", r"\toprule", line(header), r"\midrule",
                      *(line(r) for r in body), r"\bottomrule", r"\end{tabular}"])
