"""Collate per-video aligner outputs into one flat ``(V*C, ...)`` model batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from norton_core.errors import DataError

if TYPE_CHECKING:
    import torch

_KEYS = ("caps", "cmasks", "vfeats", "vmasks", "video_start", "video_end", "text_start", "text_end")


def collate(items: list[dict[str, np.ndarray]], video_ids: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Concatenate the aligner dicts of V videos along the clip axis.

    ``vfeats`` is converted from the store's float16 to float32 once, on the whole batch. ``video_index`` (V*C,)
    int64 says which video of the batch each clip came from. ``video_ids`` only names videos in error messages.
    """
    import torch

    if not items:
        raise DataError("collate: empty list of videos (expected at least one aligner output)")
    if video_ids is not None and len(video_ids) != len(items):
        raise DataError(f"collate: {len(items)} videos but {len(video_ids)} video ids")
    names = video_ids or [f"#{i}" for i in range(len(items))]
    for name, item in zip(names, items, strict=True):
        missing = [k for k in _KEYS if k not in item]
        if missing:
            raise DataError(f"collate: video {name}: aligner output lacks {', '.join(missing)}")
        for key in _KEYS[1:]:
            if len(item[key]) != len(item["caps"]):
                raise DataError(f"collate: video {name}: {key} has {len(item[key])} clips, caps has "
                                f"{len(item['caps'])}")
    out: dict[str, torch.Tensor] = {}
    for key in _KEYS:
        try:
            arr = np.concatenate([item[key] for item in items])
        except ValueError as exc:
            shapes = {name: tuple(item[key].shape) for name, item in zip(names, items, strict=True)}
            raise DataError(f"collate: {key} shapes differ between videos: {shapes}") from exc
        out[key] = torch.from_numpy(arr)
    out["vfeats"] = out["vfeats"].float()
    out["caps"] = out["caps"].long()
    out["cmasks"] = out["cmasks"].bool()
    out["vmasks"] = out["vmasks"].bool()
    counts = [len(item["caps"]) for item in items]
    out["video_index"] = torch.repeat_interleave(torch.arange(len(items), dtype=torch.int64),
                                                 torch.tensor(counts, dtype=torch.int64))
    return out
