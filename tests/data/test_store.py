"""ShardStore: lookups, both read paths, cheap pickling and use from worker processes (fork and spawn)."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest

from norton_core.data.store import ShardStore, stack_float32
from norton_core.errors import DataError


def _fingerprint(store_path: str, mode: str, index: int) -> tuple[str, bytes, bytes, list[list[int]]]:
    rec = ShardStore.open(store_path, mode).get(index)
    return rec.video_id, rec.features.tobytes(), np.stack([rec.starts, rec.ends]).tobytes(), [
        t.tolist() for t in rec.tokens
    ]


def _read_in_worker(args: tuple[bytes, int]) -> tuple[str, bytes, bytes, list[list[int]]]:
    store = pickle.loads(args[0])
    rec = store.get(args[1])
    return rec.video_id, rec.features.tobytes(), np.stack([rec.starts, rec.ends]).tobytes(), [
        t.tolist() for t in rec.tokens
    ]


def test_contract_and_lookup(small_store_dir: Path, small_raw) -> None:  # noqa: ANN001
    store = ShardStore.open(small_store_dir)
    ids = small_raw.lists["train"].read_text().split()
    assert store.video_ids == ids and len(store) == 24
    for key in ("tokenizer", "vocab_hash", "feature_dim", "split"):
        assert key in store.manifest
    assert store.manifest["split"] == "train" and store.manifest["feature_dim"] == 512
    for i, vid in enumerate(ids):
        assert store.index_of(vid) == i
        rec = store.get_by_id(vid)
        assert rec.video_id == vid
        assert rec.features.shape[1] == 512 and rec.features.dtype == np.float16
        assert rec.starts.dtype == np.float32 and rec.ends.dtype == np.float32
        assert len(rec.tokens) == len(rec.starts) > 0 and all((t >= 0).all() and len(t) for t in rec.tokens)
        assert (np.diff(rec.starts) >= 0).all() and (rec.ends >= rec.starts).all()
    with pytest.raises(KeyError, match="not in the store"):
        store.index_of("nope")
    with pytest.raises(IndexError):
        store.get(24)
    assert "train_1_data.npy" in store.describe(9) and repr(ids[9]) in store.describe(9)


def test_mmap_and_pread_read_identical_records(small_store_dir: Path) -> None:
    a, b = ShardStore.open(small_store_dir, "mmap"), ShardStore.open(small_store_dir, "pread")
    for i in range(len(a)):
        assert _fingerprint(str(small_store_dir), "mmap", i) == _fingerprint(str(small_store_dir), "pread", i)
        ra, rb = a.get(i), b.get(i)
        np.testing.assert_array_equal(ra.features, rb.features)
    with pytest.raises(DataError, match="read_mode"):
        ShardStore.open(small_store_dir, "bogus")  # type: ignore[arg-type]


def test_pickles_small_and_reads_in_spawned_and_forked_workers(small_store_dir: Path) -> None:
    for mode in ("mmap", "pread"):
        store = ShardStore.open(small_store_dir, mode)
        store.get(3)  # open maps/descriptors first: they must not travel
        blob = pickle.dumps(store)
        assert len(blob) < 600, len(blob)
        want = [_fingerprint(str(small_store_dir), mode, i) for i in (0, 7, 23)]
        for method in ("fork", "spawn"):
            with multiprocessing.get_context(method).Pool(2) as pool:
                got = pool.map(_read_in_worker, [(blob, i) for i in (0, 7, 23)])
            assert got == want, (mode, method)


def test_forked_dataloader_workers_read_the_store(small_store_dir: Path) -> None:
    import torch

    store = ShardStore.open(small_store_dir)

    class _Videos(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(store)

        def __getitem__(self, i: int) -> np.ndarray:
            return store.get(i).features[:4]

    loader = torch.utils.data.DataLoader(_Videos(), batch_size=6, num_workers=2,
                                         collate_fn=lambda xs: stack_float32(xs), timeout=60)
    batches = list(loader)
    assert len(batches) == 4 and batches[0].dtype == np.float32 and batches[0].shape == (6, 4, 512)
    np.testing.assert_array_equal(batches[1][2], store.get(8).features[:4].astype(np.float32))


def test_stack_float32_converts_once_per_batch() -> None:
    parts = [np.full((2, 3), i, np.float16) for i in range(4)]
    out = np.empty((4, 2, 3), np.float32)
    assert stack_float32(parts, out=out) is out and out[3, 1, 2] == 3.0
    assert stack_float32(parts).dtype == np.float32


def test_changed_manifest_is_noticed_in_a_worker(store_copy: Path) -> None:
    store = ShardStore.open(store_copy)
    blob = pickle.dumps(store)
    manifest = store_copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"split": "train"', '"split": "train" '))
    with pytest.raises(DataError, match="changed since"):
        len(pickle.loads(blob))
