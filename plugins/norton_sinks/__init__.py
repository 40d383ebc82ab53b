"""Built-in metric sinks: ``jsonl`` (the run's ``metrics.jsonl``), ``tensorboard`` and ``wandb``.

Registered like a third party's: each sink is an ordinary class, and the hook below only hands the classes over.
A recipe picks them with ``[logging] sinks = [...]``; TensorBoard and W&B are imported only when chosen.
"""

from __future__ import annotations

from norton_core import hookimpl

from .jsonl import JsonlSink
from .tensorboard import TensorBoardSink
from .wandb import WandbSink

__all__ = ["JsonlSink", "TensorBoardSink", "WandbSink"]


@hookimpl
def norton_register_metric_sinks(register):  # noqa: ANN001, ANN201 - pluggy passes the Register
    register(JsonlSink)
    register(TensorBoardSink)
    register(WandbSink)
