"""One training forward pass: the model over the whole batch, then the loss under its declared precision.

The model runs under the recipe's autocast. A loss runs inside that region only when it declares
``autocast = True``; otherwise (the default, :class:`norton_core.Loss`) it runs outside it on float32 copies of
the model's reduced-precision outputs, so a plugin loss never computes its softmaxes in bf16 without saying so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def loss_runs_under_autocast(loss_fn: Any) -> bool:
    return bool(getattr(loss_fn, "autocast", False))


def forward_batch(model: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The model's ``forward_batch`` (every batch key), or the four layout tensors for a model without one."""
    method = getattr(model, "forward_batch", None)
    if method is not None:
        return method(batch)
    return model(batch["caps"], batch["cmasks"], batch["vfeats"], batch["vmasks"])


def as_float32(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Reduced-precision floating tensors as float32; everything else (masks, ids, float32) as it is."""
    import torch

    return {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != torch.float32
                else v) for k, v in outputs.items()}


def forward_and_loss(model: Any, loss_fn: Any, batch: Mapping[str, Any],
                     autocast: Callable[[], Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(outputs, terms)`` of one micro-batch."""
    with autocast():
        outputs = forward_batch(model, batch)
        if loss_runs_under_autocast(loss_fn):
            return outputs, loss_fn(outputs, batch)
    return outputs, loss_fn(as_float32(outputs), batch)
