"""From a shard store to model batches: which videos can be sampled, per-video seeded clip sampling, and the
DataLoader that turns a list of batches (each V store indices) into collated tensors in worker processes.

Every random choice of an aligner comes from ``random.Random`` seeded by (run seed, epoch, purpose, video), so a
sample does not depend on which worker drew it, on the batch it landed in, or on whether the run was resumed.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from norton_core.errors import DataError


def open_store(path: Path, read_mode: str = "mmap", check_finite: bool = True, check_chunks: bool = True) -> Any:
    """Open a prepared shard store (``norton_core.data.store.ShardStore``) read-only.

    ``mmap`` is fastest while the page cache holds the shards; ``pread`` reads each video's byte span explicitly and
    avoids mmap's ~9x read-ahead over-read when the dataset is larger than RAM (benchmarks/io_bench.py).
    ``check_finite`` refuses a video with NaN/inf features when it is read; ``check_chunks`` hashes each chunk of a
    shard file the first time a process reads it (see ``train.check_finite`` / ``train.check_chunks``).
    """
    from norton_core.data.store import ShardStore

    mode = cast("Literal['mmap', 'pread']", read_mode)  # the recipe's schema allows only these two
    return ShardStore.open(path, mode, check_finite=check_finite, check_chunks=check_chunks)


def sample_rng(seed: int, epoch: int, purpose: str, video: int) -> random.Random:
    # string seeds are hashed with sha512 by ``random`` (version 2): stable across processes and PYTHONHASHSEED
    return random.Random(f"{seed}:{epoch}:{purpose}:{video}")


def sampleable_videos(store: Any, log: Callable[[str], None]) -> np.ndarray:
    """Store indices of the videos an aligner can sample (at least one caption with tokens and one feature row);
    the others are counted and reported once, with examples. The one place that decides it.

    A shard store answers from its offsets and manifest alone (``content_counts``, ``unsampleable``): ``norton
    prepare how2`` drops captions without tokens, and an adopted MMPT store records the videos whose captions have
    none. Other stores are read video by video."""
    if hasattr(store, "content_counts"):
        rows, captions = store.content_counts()
        no_frames, no_caps = rows == 0, captions == 0
        for reason, indices in (store.unsampleable() if hasattr(store, "unsampleable") else {}).items():
            (no_frames if reason == "no_feature_rows" else no_caps)[indices] = True
        no_caps &= ~no_frames
    else:
        no_frames, no_caps = np.zeros(len(store), dtype=bool), np.zeros(len(store), dtype=bool)
        for i in range(len(store)):
            record = store.get(i)
            no_frames[i] = record.features.shape[0] == 0
            no_caps[i] = not no_frames[i] and not any(len(t) for t in record.tokens)
    for what, mask in (("no captions", no_caps), ("no feature rows", no_frames)):
        if mask.any():
            examples = [store.get(int(i)).video_id for i in np.flatnonzero(mask)[:3]]
            log(f"norton: skipping {int(mask.sum())} video(s) with {what} (e.g. {', '.join(examples)})")
    keep = np.flatnonzero(~(no_frames | no_caps)).astype(np.int64)
    if not len(keep):
        raise DataError(f"{getattr(store, 'path', 'the training store')}: no video can be sampled "
                        f"({int(no_caps.sum())} without captions, {int(no_frames.sum())} without features)")
    return keep


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
        try:
            return self._batch(i)
        except DataError as exc:
            import torch.utils.data

            if torch.utils.data.get_worker_info() is None:
                raise
            # in a worker: hand the error over as the item, so the main process raises it with its one-line
            # message (torch would re-raise it with the worker's whole traceback as the message)
            return {WORKER_ERROR: str(exc)}

    def _batch(self, i: int) -> dict[str, Any]:
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
    from norton_core.data.collate import collate_clips

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
    return _Loader(torch.utils.data.DataLoader(
        cast("torch.utils.data.Dataset[Any]", dataset),  # map-style: __getitem__ and __len__
        batch_size=None, shuffle=False, num_workers=num_workers, generator=generator, pin_memory=pin_memory,
        prefetch_factor=2 if num_workers else None, persistent_workers=False,
        timeout=600 if num_workers else 0, worker_init_fn=ignore_sigterm if num_workers else None,
    ))


#: the key of an item that carries a worker's DataError instead of a batch
WORKER_ERROR = "norton_worker_error"


class _Loader:
    """Iterates a DataLoader and raises a DataError a worker handed over (see :meth:`BatchDataset.__getitem__`)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        with workers_born_deaf_to_sigterm():
            batches = iter(self.loader)  # forks the workers
        for batch in batches:
            if WORKER_ERROR in batch:
                raise DataError(batch[WORKER_ERROR])
            yield batch


@contextlib.contextmanager
def workers_born_deaf_to_sigterm() -> Iterator[None]:
    """SIGTERM blocked in the calling thread while it forks DataLoader workers, then its mask restored.

    A forked child starts with the forking thread's signal mask, and every thread the child creates inherits the
    mask of its creator: so each thread of a worker, including those born before ``worker_init_fn`` runs (torch's
    and its libraries' own), starts with SIGTERM blocked, and a scheduler's SIGTERM to the job's process group
    stays pending in the worker until its ``norton-sigterm`` thread (:func:`ignore_sigterm`) takes and ignores it.
    The main process is not deaf: a SIGTERM that arrives inside this window is delivered when the mask is
    restored, and its other threads never had it blocked."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_sigterm(worker_id: int) -> None:
    """DataLoader worker start-up: SIGTERM from anyone but the main process is ignored.

    Schedulers (SLURM, Kubernetes, ``kill -- -PGID``) signal every process of the job; the main process commits
    a checkpoint at the step boundary and stops its workers itself, whereas a worker dying of the signal would make
    the main process fail before it gets there. The main process's own SIGTERM (``Process.terminate`` when it shuts
    workers down) still ends the worker at once, as torch's worker handler does. Where the sender cannot be told
    (no ``sigwaitinfo``), every SIGTERM is ignored and the worker ends when the main process stops it or dies.
    """
    if not hasattr(signal, "sigwaitinfo"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return
    parent = os.getppid()
    # already blocked since the fork (workers_born_deaf_to_sigterm); blocked again for workers started some other
    # way. Inherited by the thread below, which is then the only one that takes the signal.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent:
                os._exit(0)

    threading.Thread(target=wait, name="norton-sigterm", daemon=True).start()


def random_batches(videos: np.ndarray, per_batch: int, seed: int, epoch: int) -> np.ndarray:
    """A seeded shuffle of the sampleable videos cut into (n, V) batches; the remainder is dropped."""
    order = [int(v) for v in videos]
    random.Random(f"{seed}:{epoch}:random-batches").shuffle(order)
    n = len(order) // per_batch
    if n == 0:
        raise DataError(f"only {len(order)} sampleable videos, fewer than train.videos_per_batch = {per_batch}")
    return np.asarray(order[: n * per_batch], dtype=np.int64).reshape(n, per_batch)
