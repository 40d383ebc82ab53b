"""The ``tensorboard`` sink: every number of every record as a scalar, and the resolved recipe as hyper-parameters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from norton_core import MetricSink, option, scalars

INSTALL = "pip install 'norton[tensorboard]'"


@attrs.frozen
class TensorBoardConfig:
    dir: str = option("tensorboard", help="directory of the event files, relative to the run directory")


class TensorBoardSink(MetricSink):
    name = "tensorboard"
    Config = TensorBoardConfig

    needs = {"tensorboard": INSTALL}  # torch.utils.tensorboard's writer imports it

    def __init__(self, config: TensorBoardConfig, run_dir: Path) -> None:
        self.dir = Path(run_dir) / config.dir
        self.writer: Any = None

    def start(self, run: Any) -> str:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # on a resume, events after the checkpoint's step are hidden: the run is about to redo those steps
        self.writer = SummaryWriter(str(self.dir), purge_step=run.step or None)
        flat = {key: (value if isinstance(value, (int, float, str, bool)) else json.dumps(value))
                for key, value in _flatten(run.recipe)}
        for summary in hparams(flat, {}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("recipe", "```\n" + json.dumps(run.recipe, indent=1) + "\n```", run.step)
        return f"{self.dir} (view with: tensorboard --logdir {self.dir.parent})"

    def write(self, record: Mapping[str, Any]) -> None:
        step = int(record.get("step", 0))
        for tag, value in scalars(record):
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.extend(_flatten(value, f"{prefix}{key}."))
        elif value is not None:
            out.append((f"{prefix}{key}", value))
    return out
