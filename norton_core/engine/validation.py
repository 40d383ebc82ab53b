"""Validation loss on ``data.val`` and the ``best`` checkpoint it selects (the reference keeps
``checkpoint_best.pt`` by validation loss).

At each scheduled checkpoint (``train.checkpoint_every`` and the end of each epoch; not a preemption's extra one,
so that an interrupted run validates exactly where an uninterrupted one does) the model's loss is computed on the
validation store without gradients, in eval mode. The clips are drawn with the run seed and a fixed epoch, so every
validation scores the same clips, and all random state the training uses (torch, Python and numpy generators, the
loss's buffers) is put back afterwards: validating never changes what training does next.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import TrainingError
from . import data as dataio
from . import distributed

#: the epoch number the validation clips are drawn for (any fixed value: the same clips every time)
VAL_EPOCH = 0
METRIC = "val_loss"


def validation_batches(videos: np.ndarray, per_batch: int, world_size: int) -> list[list[int]]:
    """The validation videos in store order cut into batches of ``per_batch`` (a store smaller than one batch is
    one batch). Whole rounds of ``world_size`` batches only: with a loss that gathers across ranks every rank must
    compute the same number of batches."""
    order = [int(v) for v in videos]
    size = min(per_batch, len(order))
    n = len(order) // size if size else 0
    n -= n % world_size
    return [order[i * size:(i + 1) * size] for i in range(n)]


def validation_loss(model: Any, loss_fn: Any, store: Any, aligner: Any, batches: list[list[int]], seed: int,
                    dist: distributed.Dist, autocast: Callable[[], Any], num_workers: int) -> dict[str, float]:
    """``{"val_loss": mean, "val_<term>": mean, ...}`` over ``batches`` (this rank takes every world_size-th one;
    the means are over all ranks' batches)."""
    import torch

    from .state import host_rng_state, set_host_rng_state

    mine = batches[dist.rank::dist.world_size]
    loader = dataio.make_loader(dataio.BatchDataset(store, aligner, mine, seed, VAL_EPOCH, "val"), num_workers, seed)
    host = host_rng_state()
    loss_state = copy.deepcopy(loss_fn.state_dict()) if isinstance(loss_fn, torch.nn.Module) else None
    modules = [m for m in (model, loss_fn) if isinstance(m, torch.nn.Module)]
    modes = [m.training for m in modules]
    devices = [torch.cuda.current_device()] if dist.device.startswith("cuda") and torch.cuda.is_available() else []
    sums: dict[str, float] = {}
    try:
        for m in modules:
            m.eval()
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            for batch in loader:
                batch = {k: (v.to(dist.device) if hasattr(v, "to") else v) for k, v in batch.items()}
                with autocast():
                    outputs = model(batch["caps"], batch["cmasks"], batch["vfeats"], batch["vmasks"])
                    terms = loss_fn(outputs, batch)
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach().float())
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
        if loss_state is not None:
            loss_fn.load_state_dict(loss_state)
        set_host_rng_state(host)
    keys = sorted(sums)
    values = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    values = distributed.all_reduce_tensor(values.to(dist.device), dist).cpu() / len(batches)
    out = {("val_loss" if k == "loss" else f"val_{k}"): float(v) for k, v in zip(keys, values, strict=True)}
    if "val_loss" not in out:
        raise TrainingError(f"the loss returned no 'loss' term on the validation data (terms: {keys})")
    return out


def improves(value: float, best: dict[str, Any] | None) -> bool:
    """Lower is better; a non-finite loss never selects a checkpoint; ties keep the earlier one."""
    return math.isfinite(value) and (best is None or value < best["value"])


def selection(value: float, step: int) -> dict[str, Any]:
    """What ``best/selection.json`` says about how the checkpoint was chosen."""
    return {"metric": METRIC, "value": value, "step": step, "split": "val"}
