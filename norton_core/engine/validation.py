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
from typing import TYPE_CHECKING, Any

import numpy as np

from norton_core.engine import distributed
from norton_core.engine import loader as dataio
from norton_core.errors import TrainingError

if TYPE_CHECKING:
    from norton_core.engine.setup import Run

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

    from norton_core.engine import loop
    from norton_core.engine.state import host_rng_state, set_host_rng_state

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
                _, terms = loop.forward_and_loss(model, loss_fn, batch, autocast)  # as the training step computes it
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


def open_validation(paths: Any, tcfg: Any, dist: distributed.Dist,
                    log: Callable[[str], None]) -> tuple[Any, list[list[int]]]:
    """The validation store (``data.val``) and its fixed batches, or ``(None, [])`` when there is none (or
    ``train.validate`` is off)."""
    if getattr(paths, "val", None) is None or not tcfg.validate:
        return None, []
    store = dataio.open_store(paths.val, tcfg.read_mode, tcfg.check_finite, tcfg.check_chunks)
    videos = dataio.sampleable_videos(store, log)
    batches = validation_batches(videos, tcfg.videos_per_batch, dist.world_size)
    if not batches:
        log(f"norton: warning: {getattr(store, 'path', 'the validation store')} has {len(videos)} usable videos, "
            f"fewer than one batch per rank ({dist.world_size}); no validation loss and no best checkpoint")
        return None, []
    log(f"norton: validation: {sum(map(len, batches))} videos of {getattr(store, 'path', 'data.val')} in "
        f"{len(batches)} batches at each checkpoint; the best one by val_loss is kept in checkpoints/best")
    return store, batches


def validate(run: Run) -> None:
    """Before a scheduled checkpoint: the validation loss, logged, and the state's best record updated (the
    checkpoint commit then writes ``best/`` when this step became the best). Once per step."""
    state = run.state
    if not run.val_batches or state.validated_step == state.step:
        return
    terms = validation_loss(run.model, run.loss_fn, run.val_store, run.aligner, run.val_batches, run.cfg.seed,
                            run.dist, run.autocast, run.tcfg.num_workers)
    value = terms["val_loss"]
    better = improves(value, state.best)
    if better:
        state.best = selection(value, state.step)
    state.validated_step = state.step
    run.metrics.write({"event": "validation", "step": state.step, "epoch": state.epoch, **terms, "best": better})
    best = state.best
    run.log(f"norton: step {state.step}: val_loss {value:.6g}"
            + (" (best so far)" if better else f" (best {best['value']:.6g} at step {best['step']})" if best else ""))
