"""What a run knows about itself: the context handed to lifecycle hooks and the resumable training state."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs

if TYPE_CHECKING:
    import numpy as np
    import torch


@attrs.define
class RunContext:
    """The run as lifecycle hooks see it (see :mod:`norton_core.plugin.hookspecs`).

    :ivar recipe: the resolved recipe (a plain dict, as saved in ``recipe.json``).
    :ivar run_dir: the run directory.
    :ivar rank: this process's rank; ``world_size`` the number of processes.
    :ivar step: optimizer steps taken so far (updated by the engine before every hook call).
    :ivar epoch: the current epoch (1-based; 0 before the first).
    :ivar model: the model (a ``torch.nn.Module``); ``optimizer`` the ``torch.optim.Optimizer``.
    :ivar device: the torch device string.
    """

    recipe: dict[str, Any]
    run_dir: Path
    rank: int = 0
    world_size: int = 1
    step: int = 0
    epoch: int = 0
    model: Any = None
    optimizer: Any = None
    device: str = "cpu"


@attrs.define
class TrainState:
    """Everything besides tensors that an exact resume needs (saved as JSON + ``batches.npy``).

    :ivar step: optimizer steps taken.
    :ivar epoch: the epoch in progress (1-based), or the next one when ``batches`` is None.
    :ivar cursor: steps' worth of batches of ``epoch`` already consumed (skipped steps included).
    :ivar batches: the epoch's batches, (n, V) int64 store indices; None until the epoch is planned.
    :ivar consecutive_skips / skipped_steps: the non-finite "skip" policy's counters.
    :ivar metrics_offset: bytes of ``metrics.jsonl`` written up to this state (a resume truncates the rest).
    :ivar recipe_changes: keys allowed to differ on earlier resumes (with old -> new), for the record.
    :ivar validated_step: the step of the last validation (-1: none yet); a re-save of that step does not repeat it.
    :ivar best: the lowest validation loss so far as ``best/selection.json`` records it, or None.
    :ivar precision: the training precision(s) that made the weights (``fp32``, ``bf16``; ``bf16+fp32`` when a
        resume ran in another), shown with every evaluation of them.
    :ivar chance: the watch over a loss stuck at chance (:class:`~norton_core.engine.chance.ChanceCount` as JSON), or
        None when the run is not watched.
    """

    step: int = 0
    epoch: int = 1
    cursor: int = 0
    batches: np.ndarray | None = None
    consecutive_skips: int = 0
    skipped_steps: int = 0
    metrics_offset: int = 0
    recipe_changes: list[dict[str, Any]] = attrs.field(factory=list)
    scaler: dict[str, Any] | None = None
    validated_step: int = -1
    best: dict[str, Any] | None = None
    chance: dict[str, Any] | None = None
    precision: str = ""

    def to_json(self) -> dict[str, Any]:
        out = attrs.asdict(self, filter=lambda a, _: a.name != "batches")
        out["has_batches"] = self.batches is not None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], batches: np.ndarray | None) -> TrainState:
        fields = {f.name for f in attrs.fields(cls)} - {"batches"}
        return cls(batches=batches, **{k: v for k, v in data.items() if k in fields})


@attrs.frozen
class RunResult:
    """What :func:`norton_core.engine.train` returns.

    :ivar run_dir: the run directory. :ivar step: optimizer steps taken. :ivar epoch: the last epoch trained.
    :ivar complete: the run reached its end (epochs or ``max_steps``).
    :ivar resumed_from: the checkpoint directory the run continued from, or None.
    :ivar metrics: the last logged step metrics.
    :ivar evaluation: ``{label: {task: {metric: value}}}`` with labels such as ``"before"`` and ``"after"``
        (and the pretraining stage's labels when the recipe has one).
    :ivar precision: the training precision(s) that made the final weights (see :attr:`TrainState.precision`).
    """

    run_dir: Path
    step: int
    epoch: int
    complete: bool
    resumed_from: Path | None = None
    metrics: dict[str, float] = attrs.field(factory=dict)
    evaluation: dict[str, Any] = attrs.field(factory=dict)
    precision: str = ""


def with_precision(used: str, precision: str) -> str:
    """The precisions that made the weights once ``precision`` trained them too (``bf16+fp32``, sorted)."""
    return "+".join(sorted(set(filter(None, used.split("+"))) | {precision}))


def torch_rng_state(device: str) -> dict[str, torch.Tensor]:
    """The global torch RNG states as tensors (safetensors-able)."""
    import torch

    out = {"torch_cpu": torch.get_rng_state()}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["torch_cuda"] = torch.cuda.get_rng_state()
    return out


def set_torch_rng_state(tensors: dict[str, torch.Tensor], device: str) -> None:
    import torch

    torch.set_rng_state(tensors["torch_cpu"])
    if "torch_cuda" in tensors and device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["torch_cuda"])


def host_rng_state() -> dict[str, Any]:
    """Python's and numpy's global RNG states as JSON (plugins may use them; the engine itself does not)."""
    import random

    import numpy as np

    version, internal, gauss = random.getstate()
    legacy = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())  # the legacy tuple form
    name, keys, pos, has_gauss, cached = legacy
    return {"python": [version, list(internal), gauss],
            "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def set_host_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
