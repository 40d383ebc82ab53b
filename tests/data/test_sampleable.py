"""Which videos can be sampled: a shard store answers from its offsets (no data read), other stores video by video,
and both paths decide alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from norton_core.data.store import ShardStore
from norton_core.engine.loader import sampleable_videos
from norton_core.errors import DataError
from norton_core.plugin.interfaces import VideoRecord


@pytest.mark.parametrize("mode", ["mmap", "pread"])
def test_content_counts_match_the_records(small_store_dir: Path, mode: str) -> None:
    store = ShardStore.open(small_store_dir, mode)
    rows, captions = store.content_counts()
    assert rows.dtype == captions.dtype == np.int64 and len(rows) == len(captions) == len(store)
    for i in range(len(store)):
        record = store.get(i)
        assert (rows[i], captions[i]) == (record.features.shape[0], len(record.tokens))


def test_a_shard_store_is_decided_without_reading_videos(small_store_dir: Path, monkeypatch) -> None:  # noqa: ANN001
    store = ShardStore.open(small_store_dir, "pread")

    def no_reads(*args, **kwargs):
        raise AssertionError("sampleable_videos read a video's data")

    monkeypatch.setattr(type(store), "get", no_reads)
    monkeypatch.setattr(type(store), "features", no_reads)
    assert sampleable_videos(store, print).tolist() == list(range(len(store)))


class _Records:
    """A store without offsets (read video by video), and the same store with ``content_counts``."""

    def __init__(self, records: list[VideoRecord]) -> None:
        self.records, self.path = records, Path("<records>")

    def __len__(self) -> int:
        return len(self.records)

    def get(self, i: int) -> VideoRecord:
        return self.records[i]


class _Counted(_Records):
    @property
    def video_ids(self) -> list[str]:
        return [r.video_id for r in self.records]

    def content_counts(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray([r.features.shape[0] for r in self.records], dtype=np.int64),
                np.asarray([len(r.tokens) for r in self.records], dtype=np.int64))


def _record(i: int, rows: int, captions: int) -> VideoRecord:
    times = np.arange(captions, dtype=np.float32)
    tokens = [np.asarray([5, 6], dtype=np.int32) for _ in range(captions)]
    return VideoRecord(f"v{i}", np.zeros((rows, 4), np.float16), times, times + 1, tokens)


def test_both_paths_skip_the_same_videos_and_say_so() -> None:
    shape = [(3, 2), (0, 2), (4, 0), (2, 1), (0, 0), (5, 3)]
    records = [_record(i, rows, caps) for i, (rows, caps) in enumerate(shape)]
    for store in (_Records(records), _Counted(records)):
        lines: list[str] = []
        assert sampleable_videos(store, lines.append).tolist() == [0, 3, 5]
        assert lines == ["norton: skipping 1 video(s) with no captions (e.g. v2)",
                         "norton: skipping 2 video(s) with no feature rows (e.g. v1, v4)"]
    with pytest.raises(DataError, match="no video can be sampled .2 without captions, 1 without features"):
        sampleable_videos(_Counted([_record(0, 0, 1), _record(1, 2, 0), _record(2, 1, 0)]), print)
