"""Zero-shot evaluation: the runner behind ``norton evaluate`` and the training engine's before/after tables.

Tasks are :class:`~norton_core.plugin.interfaces.Evaluator` plugins (the built-ins live in ``plugins/norton_evaluators``);
the metric code they share is in :mod:`.metrics` (ranks, recall, AUC) and :mod:`.sequence` (DTW, OTAM), and
:mod:`.report` lays results out as paper tables (rows, chance levels, Markdown/LaTeX/JSON). This
package imports no torch: :mod:`.embed` does, and evaluators import it when they run.
"""

from __future__ import annotations

from norton_core.evaluation.report import chance_level, render_report, report_rows
from norton_core.evaluation.runner import DEFAULT_TASKS, build_evaluators, format_table, run_evaluation, task_key

__all__ = ["DEFAULT_TASKS", "build_evaluators", "chance_level", "format_table", "render_report", "report_rows",
           "run_evaluation", "task_key"]
