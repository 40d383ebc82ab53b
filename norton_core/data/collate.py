"""The default way an aligner's per-video clips become one model batch: flat ``(V*C, ...)`` tensors.

:meth:`norton_core.Aligner.collate` calls :func:`collate_clips` unless an aligner overrides it. Every key an aligner
returns reaches the batch (and so the model's ``forward_batch`` and the loss): the layout keys are converted to their
model dtypes, any other key with a leading clip axis is concatenated as it is, and a key that cannot be (no clip axis,
or a different length) is an error naming it; nothing is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from norton_core.errors import DataError

if TYPE_CHECKING:
    import torch

#: what the engine itself reads from every batch: the model's four inputs (embedding also needs ``video_index``)
LAYOUT_KEYS = ("caps", "cmasks", "vfeats", "vmasks")
#: the built-in aligners' clip spans, kept in the batch for losses and diagnostics
SPAN_KEYS = ("video_start", "video_end", "text_start", "text_end")


def collate_clips(items: list[dict[str, np.ndarray]], video_ids: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Concatenate the aligner dicts of V videos along the clip axis.

    ``vfeats`` is converted from the store's float16 to float32 once, on the whole batch; ``caps`` to int64 and the
    masks to bool. ``video_index`` (V*C,) int64 says which video of the batch each clip came from. Every other key
    (the spans, or an aligner's own such as per-clip weights) is concatenated in its own dtype. ``video_ids`` only
    names videos in error messages.
    """
    import torch

    if not items:
        raise DataError("collate: empty list of videos (expected at least one aligner output)")
    if video_ids is not None and len(video_ids) != len(items):
        raise DataError(f"collate: {len(items)} videos but {len(video_ids)} video ids")
    names = video_ids or [f"#{i}" for i in range(len(items))]
    keys = list(items[0])
    for name, item in zip(names, items, strict=True):
        missing = [k for k in LAYOUT_KEYS if k not in item]
        if missing:
            raise DataError(f"collate: video {name}: aligner output lacks {', '.join(missing)}")
        if set(item) != set(keys):
            raise DataError(f"collate: video {name}: keys {sorted(item)} differ from the first video's {sorted(keys)}")
        for key in keys:
            shape = np.shape(item[key])
            if not shape or shape[0] != len(item["caps"]):
                raise DataError(f"collate: video {name}: {key!r} has shape {shape}, expected a leading clip axis of "
                                f"{len(item['caps'])} (caps); an aligner with per-video values overrides collate()")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        try:
            arr = np.concatenate([np.asarray(item[key]) for item in items])
        except ValueError as exc:
            shapes = {name: tuple(np.shape(item[key])) for name, item in zip(names, items, strict=True)}
            raise DataError(f"collate: {key} shapes differ between videos: {shapes}") from exc
        out[key] = torch.from_numpy(np.ascontiguousarray(arr))
    out["vfeats"] = out["vfeats"].float()
    out["caps"] = out["caps"].long()
    out["cmasks"] = out["cmasks"].bool()
    out["vmasks"] = out["vmasks"].bool()
    counts = [len(item["caps"]) for item in items]
    out["video_index"] = torch.repeat_interleave(torch.arange(len(items), dtype=torch.int64),
                                                 torch.tensor(counts, dtype=torch.int64))
    return out
