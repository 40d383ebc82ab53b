"""The ``wandb`` sink: Weights & Biases, offline by default (``wandb sync`` uploads a finished run later).

A resumed norton run continues its W&B run: the run id is kept in ``<run>/wandb/norton-run-id`` and passed again
(online: ``resume="allow"``, so the same W&B run grows; offline, W&B does not resume but writes another offline-run
directory under the same id, which the start line says how to upload).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from norton_core import MetricSink, option, replace_atomic, scalars

#: where the W&B run id of a norton run is kept, for its resumes
ID_FILE = "norton-run-id"


@attrs.frozen
class WandbConfig:
    project: str = option("norton", help="W&B project name")
    entity: str = option("", help="W&B entity (user or team); empty = your default")
    mode: Literal["offline", "online"] = option("offline", help="offline writes to <run>/wandb and needs no network")


class WandbSink(MetricSink):
    name = "wandb"
    Config = WandbConfig

    needs = {"wandb": "pip install 'norton[wandb]'"}

    def __init__(self, config: WandbConfig, run_dir: Path) -> None:
        self.config, self.run_dir = config, Path(run_dir)
        self.run: Any = None  # the wandb run, once started

    def start(self, run: Any) -> str:
        import wandb

        id_file = self.run_dir / "wandb" / ID_FILE
        previous = id_file.read_text().strip() if id_file.is_file() else ""
        resume = {"id": previous, "resume": "allow"} if previous and self.config.mode == "online" else \
            {"id": previous} if previous else {}  # offline W&B ignores `resume` (with a warning): the id alone
        self.run = wandb.init(project=self.config.project, entity=self.config.entity or None,
                              name=run.recipe["run"]["name"], dir=str(self.run_dir), mode=self.config.mode,
                              config=dict(run.recipe), settings=wandb.Settings(console="off", silent=True), **resume)
        if not previous:
            id_file.parent.mkdir(parents=True, exist_ok=True)
            replace_atomic(id_file, f"{self.run.id}\n".encode())
        # records carry their own step (a resume redoes steps, evaluations share a step): plot against it
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        where = f"W&B run {self.run.id} ({self.config.mode}, in {self.run_dir / 'wandb'}"
        if previous and self.config.mode == "offline":
            return (f"{where}; resumed under the same id in a new offline-run directory: `wandb sync` the first, "
                    f"then each later one with `wandb sync --append --id {self.run.id}`)")
        return f"{where}{'; resumed' if previous else ''})"

    def write(self, record: Mapping[str, Any]) -> None:
        data = dict(scalars(record))
        if data:
            self.run.log({**data, "step": int(record.get("step", 0))})

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
