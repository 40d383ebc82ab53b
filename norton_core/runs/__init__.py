"""What a finished (or running) run left behind, read back: ``norton runs``, ``compare``, ``plot`` and ``export``.

:func:`read_run` turns a run directory into a :class:`RunSummary` (state, step, last losses, evaluations, recipe);
nothing here imports torch, so listing runs is instant.
"""

from __future__ import annotations

from norton_core.runs.read import MAIN_METRICS, RunSummary, UnreadableRun, column_labels, final_evaluation, find_runs, read_run

__all__ = ["MAIN_METRICS", "RunSummary", "UnreadableRun", "column_labels", "find_runs", "final_evaluation", "read_run"]
