"""The ``wandb`` sink: Weights & Biases, offline by default (``wandb sync`` uploads a finished run later)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from norton_core import MetricSink, PluginError, option
from norton_core.metrics import scalars


@attrs.frozen
class WandbConfig:
    project: str = option("norton", help="W&B project name")
    entity: str = option("", help="W&B entity (user or team); empty = your default")
    mode: Literal["offline", "online"] = option("offline", help="offline writes to <run>/wandb and needs no network")


class WandbSink(MetricSink):
    name = "wandb"
    Config = WandbConfig

    @classmethod
    def create(cls, config: WandbConfig, **context: Any) -> WandbSink:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise PluginError("logging.sinks: 'wandb' needs the wandb package (pip install 'norton[wandb]')") from None
        return cls(config, **context)

    def __init__(self, config: WandbConfig, run_dir: Path) -> None:
        self.config, self.run_dir, self.run = config, Path(run_dir), None

    def start(self, run: Any) -> str:
        import wandb

        self.run = wandb.init(project=self.config.project, entity=self.config.entity or None,
                              name=run.recipe["run"]["name"], dir=str(self.run_dir), mode=self.config.mode,
                              config=dict(run.recipe), settings=wandb.Settings(console="off", silent=True))
        # records carry their own step (a resume redoes steps, evaluations share a step): plot against it
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        return f"W&B run {self.run.id} ({self.config.mode}, in {self.run_dir / 'wandb'})"

    def write(self, record: Mapping[str, Any]) -> None:
        data = dict(scalars(record))
        if data:
            self.run.log({**data, "step": int(record.get("step", 0))})

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
