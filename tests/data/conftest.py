from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from norton_core.data.prepare_how2 import PrepareOptions, prepare_how2
from norton_core.data.synthetic import SyntheticPaths, generate

SMALL = {"val_videos": 6, "youcook2_videos": 3, "htm_align_videos": 2, "msrvtt_clips": 4}
SMALL_OPTIONS = PrepareOptions(shard_size=8)


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    """24 generated videos in the raw How2 layout."""
    return generate(tmp_path_factory.mktemp("raw"), 24, seed=7, **SMALL)


@pytest.fixture(scope="session")
def small_store_dir(small_raw: SyntheticPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small raw set prepared into 3 shards (read-only: copy it before corrupting)."""
    out = tmp_path_factory.mktemp("prepared")
    prepare_how2(small_raw.features, small_raw.captions, {"train": small_raw.lists["train"]}, out, SMALL_OPTIONS,
                 workers=1, progress=False)
    return out / "train"


@pytest.fixture
def store_copy(small_store_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(small_store_dir, dst)
    return dst
