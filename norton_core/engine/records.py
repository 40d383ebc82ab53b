"""The run's records (steps, retrieval rounds, evaluations, validations, epoch ends, resumes), each handed to every
metric sink that ``[logging] sinks`` chose, on rank 0.

``metrics.jsonl`` (the ``jsonl`` sink) is also the run's own record: a checkpoint notes its size, and a resume cuts
it back there before redoing the steps after the checkpoint, so the file never holds a step twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class MetricsLog:
    """Rank 0 fans each record out to the chosen sinks; the other ranks hold no sinks and write nothing."""

    def __init__(self, path: Path, sinks: list[Any], log: Callable[[str], None]) -> None:
        self.path, self.sinks, self.log = path, sinks, log
        #: the run's context, handed to each sink when it starts (set once the run's parts exist)
        self.ctx: Any = None
        self.started = False

    @classmethod
    def open(cls, recipe: Any, run_dir: Path, is_main: bool, log: Callable[[str], None]) -> MetricsLog:
        """Build the chosen sinks first thing, so that a sink whose package is missing stops the run before any
        data is prepared."""
        sinks = [recipe.build(f"logging.sink_options.{name}", run_dir=run_dir) for name in recipe.logging.sinks] \
            if is_main else []
        return cls(run_dir / "metrics.jsonl", sinks, log)

    def start(self) -> None:
        """Open every sink and say where its records go (once; also on the first record, whichever comes first)."""
        if self.started:
            return
        self.started = True
        for sink in self.sinks:
            self.log(f"norton: logging to {sink.name}: {sink.start(self.ctx)}")
        if self.sinks and not any(sink.name == "jsonl" for sink in self.sinks):
            self.log(f"norton: [logging] sinks has no \"jsonl\": {self.path} is not written, so `norton runs`, "
                     "`compare` and `plot` will not see this run's steps")

    def write(self, record: dict[str, Any]) -> None:
        if not self.sinks:
            return
        self.start()
        plain = json.loads(json.dumps(record, default=jsonable))  # sinks get plain JSON data, never numpy scalars
        for sink in self.sinks:
            sink.write(plain)

    def close(self) -> None:
        """Close every sink, even when one fails (the first failure is raised after the others closed)."""
        errors = []
        for sink in self.sinks if self.started else []:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001  (re-raised below, after the other sinks closed)
                errors.append(exc)
        self.sinks = []
        if errors:
            raise errors[0]

    def truncate(self, offset: int) -> None:
        """Drop lines a killed run wrote after the checkpoint we resume from (they are about to be redone)."""
        if self.sinks and self.path.exists() and self.path.stat().st_size > offset:
            with open(self.path, "r+b") as fh:
                fh.truncate(offset)

    def offset(self) -> int:
        return self.path.stat().st_size if self.sinks and self.path.exists() else 0


def jsonable(value: Any) -> Any:
    """``json.dumps``'s ``default``: numpy scalars as Python numbers, anything else as its string."""
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)
