"""Reads checked as they happen: a flipped byte is refused the first time a process reads its
chunk, and a NaN feature row when its video is read; both name the file and the video."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from norton_core.data.store import ShardStore
from norton_core.errors import DataError


def _entry(store: Path, shard: int, role: str) -> dict:
    return json.loads((store / "manifest.json").read_text())["shards"][shard]["files"][role]


@pytest.mark.parametrize("read_mode", ["mmap", "pread"])
def test_a_flipped_byte_is_refused_on_first_read_naming_file_and_videos(store_copy: Path, read_mode: str) -> None:
    entry = _entry(store_copy, 1, "video_data")
    path = store_copy / entry["name"]
    data = bytearray(path.read_bytes())
    data[len(data) - 700] ^= 0x04  # inside the last video's rows
    path.write_bytes(bytes(data))
    unchecked = ShardStore.open(store_copy, read_mode)
    unchecked.get(len(unchecked) - 1)  # the unchecked reader trains on it silently: what the check is for
    store = ShardStore.open(store_copy, read_mode, check_chunks=True)
    last_of_shard = 8 + json.loads((store_copy / "manifest.json").read_text())["shards"][1]["num_videos"] - 1
    with pytest.raises(DataError) as info:
        store.get(last_of_shard)
    message = str(info.value)
    assert str(path) in message and "chunk hash" in message and "video" in message, message
    store.get(0)  # other shards still read
    clone = pickle.loads(pickle.dumps(store))  # as a DataLoader worker gets it
    assert clone.check_chunks
    with pytest.raises(DataError, match="chunk hash"):
        clone.get(last_of_shard)


def test_a_clean_store_reads_identically_with_checks_on(store_copy: Path) -> None:
    plain, checked = ShardStore.open(store_copy), ShardStore.open(store_copy, check_chunks=True, check_finite=True)
    for i in range(len(plain)):
        a, b = plain.get(i), checked.get(i)
        assert np.array_equal(a.features, b.features) and list(map(list, a.tokens)) == list(map(list, b.tokens))


def test_a_store_without_chunk_hashes_needs_an_explicit_choice(store_copy: Path) -> None:
    manifest = json.loads((store_copy / "manifest.json").read_text())
    for shard in manifest["shards"]:
        for entry in shard["files"].values():
            entry.pop("chunk_sha256")
    (store_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="no chunk hashes.*train.check_chunks = false"):
        ShardStore.open(store_copy, check_chunks=True)
    assert len(ShardStore.open(store_copy)) == manifest["num_videos"]


def _first_batch_with(store_dir: Path, video: int, workers: int) -> None:
    from norton_core.engine import loader as dataio

    store = dataio.open_store(store_dir)  # the training defaults: finite and chunk checks on
    # the read fails before the aligner and the collate run: they are never reached
    dataset = dataio.BatchDataset(store, lambda record, rng: {}, [[video, 0]], 1, 1, "train")
    next(iter(dataio.make_loader(dataset, workers, 1)))


@pytest.mark.parametrize("workers", [0, 1])
def test_default_training_reads_stop_at_a_nan_row_naming_file_video_and_row(store_copy: Path, workers: int) -> None:
    """Issue 10 #3: one NaN row (written into the shard after preparation, with its chunk hash updated as a
    preparation that did not check would have left it) stops the first batch holding its video, in the DataLoader
    worker, before anything reaches the model; the one-line message names the file, the video and the row."""
    from norton_core.data.npyfile import hash_file

    manifest = json.loads((store_copy / "manifest.json").read_text())
    entry = manifest["shards"][1]["files"]["video_data"]
    path = store_copy / entry["name"]
    starts = np.load(store_copy / manifest["shards"][1]["files"]["video_starts"]["name"])
    mm = np.load(path, mmap_mode="r+")
    mm[starts[2] + 4, 7] = np.nan  # video 2 of shard 1, its row 4
    mm.flush()
    del mm
    entry["sha256"], entry["chunk_sha256"] = hash_file(path, manifest["chunk_bytes"])
    (store_copy / "manifest.json").write_text(json.dumps(manifest))
    vid = manifest["shards"][1]["video_ids"][2]
    with pytest.raises(DataError) as info:
        _first_batch_with(store_copy, 8 + 2, workers)
    first = str(info.value).splitlines()[0]
    assert str(path) in first and repr(vid) in first and "row 4" in first, str(info.value)
