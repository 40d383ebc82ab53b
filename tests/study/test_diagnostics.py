"""Ground-truth diagnostics on cases with a known answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from norton_core.study.diagnostics import GroundTruth, _Tally, tally_batch

K = 4


def _truth(tmp_path: Path, kinds: list[str]) -> GroundTruth:
    """One 40-second video with four 10-second steps and one caption per step second-range, of the given kinds."""
    steps = [[0, 10, "chop", "onion"], [10, 20, "stir", "sauce"], [20, 30, "chop", "onion"], [30, 40, "fry", "eggs"]]
    spans = [None if k == "nonvisual" else steps[i][:2] for i, k in enumerate(kinds)]
    names = [None if k == "nonvisual" else " ".join(steps[i][2:]) for i, k in enumerate(kinds)]
    videos = {vid: {"split": "val", "task": "t", "steps": steps, "caption_kinds": kinds, "caption_spans": spans,
                    "caption_steps": names} for vid in ("a", "b")}
    path = tmp_path / "ground_truth.json"
    path.write_text(json.dumps({"options": {}, "videos": videos}))
    return GroundTruth(path)


def _batch() -> dict:
    """Two videos x one sequence of 4 clips; clip i shows step i (seconds 10 i .. 10 i + 8), caption i is text i."""
    starts = np.array([0, 10, 20, 30] * 2)
    return {"video": ["a"] * 4 + ["b"] * 4, "text_start": np.array([0, 1, 2, 3] * 2), "video_start": starts,
            "video_end": starts + 8}


def _plans(bucket_rows: set[int], on_diagonal: float = 1.0) -> dict:
    """Sequence plans whose rows in ``bucket_rows`` send all their mass to the bucket, the others ``on_diagonal`` of
    it to their own clip; a clip plan that is the identity plus 0.1 on every cross-video pair."""
    seq = np.zeros((2, K, K + 1))
    for g in range(2):
        for r in range(K):
            if r in bucket_rows:
                seq[g, r, K] = 1 / (2 * K)
            else:
                seq[g, r, :K] = (1 - on_diagonal) / (K - 1) / (2 * K)
                seq[g, r, r] = on_diagonal / (2 * K)
    clip = np.eye(8)
    clip[:4, 4:] = clip[4:, :4] = 0.1
    return {"sequence_plan": seq, "clip_plan": clip}


def test_bucket_that_flags_exactly_the_nonvisual_captions(tmp_path: Path) -> None:
    truth = _truth(tmp_path, ["aligned", "nonvisual", "aligned", "nonvisual"])
    tally = _Tally()
    tally_batch(tally, _batch(), _plans({1, 3}), truth, K)
    res = tally.result()
    assert res["bucket_precision"] == 1.0 and res["bucket_recall"] == 1.0
    assert res["bucket_visual_flag_rate"] == 0.0 and res["nonvisual_captions"] == 4
    assert res["plan_on_step"] == 1.0 and res["plan_on_step_chance"] == pytest.approx(0.25)


def test_all_visual_captions_and_a_bucket_that_flags_nothing(tmp_path: Path) -> None:
    truth = _truth(tmp_path, ["aligned"] * 4)
    tally = _Tally()
    tally_batch(tally, _batch(), _plans(set(), on_diagonal=0.25), truth, K)
    res = tally.result()
    assert res["bucket_precision"] is None and res["bucket_recall"] is None  # nothing flagged, nothing to find
    assert res["bucket_flag_rate"] == 0.0 and res["visual_captions"] == 8
    assert res["plan_on_step"] == pytest.approx(0.25) == res["plan_on_step_chance"]  # a uniform plan = chance
    # cross-video pairs: clip i of one video vs caption j of the other; duplicates share the step name: step 0 and
    # step 2 are both "chop onion", so (0, 0), (0, 2), (2, 0), (2, 2), (1, 1), (3, 3) of 16 pairs per direction
    assert res["faulty_on_duplicates"] == pytest.approx(6 / 16) == res["faulty_on_duplicates_chance"]


def test_a_bucket_that_flags_visual_captions(tmp_path: Path) -> None:
    truth = _truth(tmp_path, ["aligned", "nonvisual", "shifted", "aligned"])
    tally = _Tally()
    tally_batch(tally, _batch(), _plans({0, 2}), truth, K)
    res = tally.result()
    assert res["bucket_precision"] == 0.0 and res["bucket_recall"] == 0.0
    assert res["bucket_visual_flag_rate"] == pytest.approx(4 / 6)
