"""A small store prepared with ``norton prepare how2`` (not the synthetic source), shared by the study tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from norton_core.data.prepare_how2 import PrepareOptions, prepare_how2
from norton_core.data.synthetic import generate


@pytest.fixture(scope="session")
def how2_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """24 generated videos in the raw How2 layout, prepared into a store; returns (store, evaluation sets)."""
    root = tmp_path_factory.mktemp("how2")
    raw = generate(root / "raw", 24, seed=7, val_videos=0, youcook2_videos=4, htm_align_videos=2, msrvtt_clips=0)
    prepare_how2(raw.features, raw.captions, {"train": raw.lists["train"]}, root / "prepared",
                 PrepareOptions(shard_size=8), workers=1, progress=False)
    return root / "prepared" / "train", raw.eval_root
