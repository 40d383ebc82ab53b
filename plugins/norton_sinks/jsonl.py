"""The ``jsonl`` sink: one JSON object per line in the run directory's ``metrics.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from norton_core import EmptyConfig, MetricSink


class JsonlSink(MetricSink):
    """``metrics.jsonl``: the record `norton runs`, `compare` and `plot` read, and a resume truncates."""

    name = "jsonl"
    Config = EmptyConfig

    def __init__(self, config: EmptyConfig, run_dir: Path) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"

    def start(self, run: Any) -> str:
        return str(self.path)

    def write(self, record: Mapping[str, Any]) -> None:
        # opened per record (at most every log_every steps): each line is on disk before a checkpoint notes
        # the file's size, which is where a resume cuts it
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
