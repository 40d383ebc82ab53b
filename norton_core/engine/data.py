"""From a shard store to model batches: which videos can be sampled, per-video seeded clip sampling, and the
DataLoader that turns a list of batches (each V store indices) into collated tensors in worker processes.

Every random choice of an aligner comes from ``random.Random`` seeded by (run seed, epoch, purpose, video), so a
sample does not depend on which worker drew it, on the batch it landed in, or on whether the run was resumed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError


def open_store(path: Path, read_mode: str = "mmap", check_finite: bool = False) -> Any:
    """Open a prepared shard store (``norton_core.data.store.ShardStore``) read-only.

    ``mmap`` is fastest while the page cache holds the shards; ``pread`` reads each video's byte span explicitly and
    avoids mmap's ~9x read-ahead over-read when the dataset is larger than RAM (tests/benchmarks/io_bench.py).
    """
    from ..data.store import ShardStore

    return ShardStore.open(path, read_mode, check_finite=check_finite)


def sample_rng(seed: int, epoch: int, purpose: str, video: int) -> random.Random:
    # string seeds are hashed with sha512 by ``random`` (version 2): stable across processes and PYTHONHASHSEED
    return random.Random(f"{seed}:{epoch}:{purpose}:{video}")


def sampleable_videos(store: Any, log: Callable[[str], None]) -> np.ndarray:
    """Store indices of the videos an aligner can sample (at least one caption with tokens and one feature row);
    the others are counted and reported once, with examples."""
    keep, no_caps, no_frames = [], [], []
    for i in range(len(store)):
        record = store.get(i)
        if record.features.shape[0] == 0:
            no_frames.append(record.video_id)
        elif len(record.tokens) == 0 or not any(len(t) for t in record.tokens):
            no_caps.append(record.video_id)
        else:
            keep.append(i)
    for what, ids in (("no captions", no_caps), ("no feature rows", no_frames)):
        if ids:
            log(f"norton: skipping {len(ids)} video(s) with {what} (e.g. {', '.join(ids[:3])})")
    if not keep:
        raise DataError(f"{getattr(store, 'path', 'the training store')}: no video can be sampled "
                        f"({len(no_caps)} without captions, {len(no_frames)} without features)")
    return np.asarray(keep, dtype=np.int64)


class BatchDataset:
    """Item ``i`` = the clips of ``batches[i]`` as one batch, made by the aligner's own ``collate`` (a map-style
    dataset for ``torch.utils.data``)."""

    def __init__(self, store: Any, aligner: Any, batches: Sequence[Sequence[int]], seed: int, epoch: int,
                 purpose: str) -> None:
        # -1 pads a short retrieval batch (retrieval.short_batches = "keep"): it is not a video
        self.store, self.aligner = store, aligner
        self.batches = [[int(v) for v in b if int(v) >= 0] for b in batches]
        self.seed, self.epoch, self.purpose = seed, epoch, purpose

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, Any]:
        items, ids = [], []
        for video in self.batches[i]:
            record = self.store.get(video)
            try:
                items.append(self.aligner(record, sample_rng(self.seed, self.epoch, self.purpose, video)))
            except DataError:
                raise
            except Exception as exc:  # name the video: a worker traceback alone does not say which one
                where = self.store.describe(video) if hasattr(self.store, "describe") else f"video {video}"
                raise DataError(f"aligner {getattr(self.aligner, 'name', '?')!r} failed on {where}: {exc!r}") from exc
            ids.append(record.video_id)
        import torch

        batch = collate_batch(self.aligner, items, ids)
        batch["store_index"] = torch.tensor(self.batches[i], dtype=torch.int64)
        return batch


def collate_batch(aligner: Any, items: list[dict[str, Any]], video_ids: list[str]) -> dict[str, Any]:
    """The aligner's ``collate`` (an aligner without one gets the default), checked at the plugin boundary."""
    from ..batching import collate_clips

    collate = getattr(aligner, "collate", None)
    batch = collate(items, video_ids) if collate is not None else collate_clips(items, video_ids)
    who = f"aligner {getattr(aligner, 'name', type(aligner).__name__)!r}"
    if not isinstance(batch, dict):
        raise DataError(f"{who}: collate() returned {type(batch).__name__}, expected a dict of tensors")
    missing = [k for k in ("caps", "cmasks", "vfeats", "vmasks", "video_index") if k not in batch]
    if missing:
        raise DataError(f"{who}: collate() returned no {', '.join(missing)} (videos {', '.join(video_ids[:3])}...)")
    return batch


def make_loader(dataset: BatchDataset, num_workers: int, seed: int, pin_memory: bool = False) -> Any:
    """A DataLoader over whole batches, in order. Its own seeded generator keeps it from drawing on the global
    torch RNG (which would shift dropout masks between a resumed and an uninterrupted run). ``pin_memory`` (for
    CUDA) puts batches in page-locked memory, so that ``.to(device, non_blocking=True)`` overlaps the copy."""
    import torch

    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=num_workers, generator=generator, pin_memory=pin_memory,
        prefetch_factor=2 if num_workers else None, persistent_workers=False,
        timeout=600 if num_workers else 0,
    )


def random_batches(videos: np.ndarray, per_batch: int, seed: int, epoch: int) -> np.ndarray:
    """A seeded shuffle of the sampleable videos cut into (n, V) batches; the remainder is dropped."""
    order = [int(v) for v in videos]
    random.Random(f"{seed}:{epoch}:random-batches").shuffle(order)
    n = len(order) // per_batch
    if n == 0:
        raise DataError(f"only {len(order)} sampleable videos, fewer than train.videos_per_batch = {per_batch}")
    return np.asarray(order[: n * per_batch], dtype=np.int64).reshape(n, per_batch)
