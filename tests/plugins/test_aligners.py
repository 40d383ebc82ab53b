"""The overlapped and aligned clip samplers on a hand-made video, and the batch collate."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from norton_aligners.sampling import aligned_video_span, sample_text_span, sample_video_center, sample_video_span

import norton_core
from norton_core import DataError, SpecialTokens, VideoRecord
from norton_core import collate_clips as collate

SPECIAL = SpecialTokens(cls=101, sep=102, pad=0)
STARTS = np.array([0.0, 5.0, 10.0, 20.0, 30.0], dtype=np.float32)
ENDS = np.array([4.0, 9.5, 14.2, 24.0, 34.0], dtype=np.float32)
LENGTHS = [3, 4, 5, 6, 7]


def hand_made(seconds: int = 40, video_id: str = "vid_hand") -> VideoRecord:
    """Caption i has LENGTHS[i] tokens 1000 + 10 i + j; second s has feature value s in every dimension."""
    tokens = [np.arange(1000 + 10 * i, 1000 + 10 * i + n, dtype=np.int32) for i, n in enumerate(LENGTHS)]
    feats = np.repeat(np.arange(seconds, dtype=np.float16)[:, None], 512, axis=1)
    return VideoRecord(video_id, feats, STARTS, ENDS, tokens)


class Scripted(random.Random):
    """A generator whose draws are given in advance (randint values and random() values, in call order)."""

    def __init__(self, ints: list[int] = (), floats: list[float] = ()) -> None:
        super().__init__(0)
        self.ints, self.floats = list(ints), list(floats)

    def randint(self, a: int, b: int) -> int:  # type: ignore[override]
        value = self.ints.pop(0)
        assert a <= value <= b, (a, value, b)
        return value

    def random(self) -> float:  # type: ignore[override]
        return self.floats.pop(0)


def test_text_span_grows_right_left_and_overshoots() -> None:
    rec = hand_made()
    # centre 2 (5 tokens), budget 10: coin 0.3 -> right (caption 3, 11 tokens) -> budget reached
    assert sample_text_span(rec.starts, rec.ends, rec.tokens, 2, 10, Scripted(floats=[0.3])) == (2, 4)
    # centre 4 is the last caption: a right coin falls back to the left
    assert sample_text_span(rec.starts, rec.ends, rec.tokens, 4, 10, Scripted(floats=[0.1])) == (3, 5)
    # centre 0, a left coin cannot go left: right
    assert sample_text_span(rec.starts, rec.ends, rec.tokens, 0, 5, Scripted(floats=[0.9])) == (0, 2)
    # budget already met by the centre caption: no draw at all
    assert sample_text_span(rec.starts, rec.ends, rec.tokens, 4, 7, Scripted()) == (4, 5)
    # a budget above every token stops when no extension is left
    rng = Scripted(floats=[0.9] * 4)
    assert sample_text_span(rec.starts, rec.ends, rec.tokens, 2, 999, rng) == (0, 5)


def test_video_centre_and_span() -> None:
    assert sample_video_center(10.0, 24.0, 40, Scripted(ints=[17])) == 17
    assert sample_video_center(30.0, 34.0, 32, Scripted(ints=[33])) == 31  # clamped to the video
    assert sample_video_center(7.0, 7.0, 40, Scripted()) == 7  # no draw when low == high
    assert sample_video_span(0, 5, 40, Scripted()) == (0, 5)  # at the start: only right
    assert sample_video_span(39, 4, 40, Scripted(floats=[0.9])) == (36, 40)  # right once, then only left
    assert sample_video_span(20, 3, 40, Scripted(floats=[0.2, 0.7, 0.1])) == (18, 21)
    assert sample_video_span(1, 10, 3, Scripted(floats=[0.9, 0.9])) == (0, 3)  # length capped at T


def test_aligned_span_is_caption_seconds() -> None:
    assert aligned_video_span(5.0, 14.2, 40) == (5, 15)
    assert aligned_video_span(30.0, 34.0, 32) == (30, 32)
    assert aligned_video_span(35.0, 38.0, 32) == (31, 32)  # wholly after the video: its last second


def _aligner(name: str, **options: int) -> norton_core.Aligner:
    return norton_core.build("aligner", name, options, special_tokens=SPECIAL)


def test_overlapped_layout_order_and_spans() -> None:
    aligner = _aligner("overlapped")
    rec = hand_made()
    out = aligner(rec, random.Random(7))
    c = aligner.clips_per_video
    assert c == 16
    assert out["caps"].shape == (c, 32) and out["caps"].dtype == np.int64
    assert out["vfeats"].shape == (c, 16, 512) and out["vfeats"].dtype == np.float16
    assert out["vmasks"].dtype == np.bool_ and out["cmasks"].dtype == np.bool_
    keys = list(zip(out["text_start"], out["video_start"], out["text_end"], out["video_end"], strict=True))
    assert keys == sorted(keys)
    for i in range(c):
        ts, te, vs, ve = (int(out[k][i]) for k in ("text_start", "text_end", "video_start", "video_end"))
        toks = np.concatenate(rec.tokens[ts:te])[:29]
        n = len(toks)
        assert out["caps"][i, :2].tolist() == [101, 102]
        assert out["caps"][i, 2:2 + n].tolist() == toks.tolist()
        assert out["caps"][i, 2 + n] == 102 and (out["caps"][i, 3 + n:] == 0).all()
        assert out["cmasks"][i].sum() == n + 3 and out["cmasks"][i, : n + 3].all()
        assert 3 <= ve - vs <= 16 and 0 <= vs < ve <= 40
        # the video span contains a second of the caption span's [floor(start), ceil(end)] (overlap, not alignment)
        low, high = int(np.floor(rec.starts[ts])), int(np.ceil(rec.ends[te - 1]))
        assert vs <= high and ve - 1 >= low
        length = ve - vs
        assert out["vmasks"][i, :length].all() and not out["vmasks"][i, length:].any()
        assert out["vfeats"][i, :length, 0].tolist() == list(range(vs, ve))
        assert (out["vfeats"][i, length:] == 0).all()
        budget_ok = sum(LENGTHS[ts:te]) >= 8 or (ts, te) == (0, 5)
        assert budget_ok


def test_overlapped_is_deterministic_by_seed() -> None:
    aligner = _aligner("overlapped", clip_per_video=6)
    a = aligner(hand_made(), random.Random(3))
    b = aligner(hand_made(), random.Random(3))
    c = aligner(hand_made(), random.Random(4))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in ("video_start", "text_start", "video_end", "text_end"))
    # pinned draw order (a change here changes every run's data): seed 3, 6 clips
    spans = [tuple(int(a[k][i]) for k in ("text_start", "text_end", "video_start", "video_end")) for i in range(6)]
    assert spans == PINNED_SEED3


PINNED_SEED3 = [(0, 5, 0, 12), (0, 5, 0, 14), (0, 5, 0, 16), (0, 5, 3, 11), (0, 5, 29, 38), (1, 3, 3, 19)]


def test_aligned_video_equals_caption_seconds() -> None:
    aligner = _aligner("aligned", clip_per_video=8, max_video_len=8, max_len=24)
    out = aligner(hand_made(), random.Random(0))
    assert out["caps"].shape == (8, 16) and out["vfeats"].shape == (8, 8, 512)
    for i in range(8):
        ts, te = int(out["text_start"][i]), int(out["text_end"][i])
        assert (out["video_start"][i], out["video_end"][i]) == aligned_video_span(STARTS[ts], ENDS[te - 1], 40)
        length = min(8, int(out["video_end"][i] - out["video_start"][i]))
        assert out["vmasks"][i].sum() == length
        assert out["cmasks"][i].sum() == min(sum(LENGTHS[ts:te]), 13) + 3  # 16 - 3 tokens at most


@pytest.mark.parametrize("name", ["overlapped", "aligned"])
def test_empty_videos_raise_data_error_naming_the_video(name: str) -> None:
    aligner = _aligner(name)
    no_caps = VideoRecord("vid_nocaps", np.zeros((10, 512), np.float16), np.zeros(0, np.float32),
                          np.zeros(0, np.float32), [])
    with pytest.raises(DataError, match="vid_nocaps"):
        aligner(no_caps, random.Random(0))
    rec = hand_made()
    no_secs = VideoRecord("vid_nosecs", np.zeros((0, 512), np.float16), rec.starts, rec.ends, rec.tokens)
    with pytest.raises(DataError, match="vid_nosecs"):
        aligner(no_secs, random.Random(0))


def test_bad_sampling_bounds_are_recipe_errors() -> None:
    with pytest.raises(norton_core.RecipeError, match="sampled_min_len"):
        _aligner("overlapped", sampled_min_len=40, sampled_max_len=32)


def test_collate_flattens_and_converts_once() -> None:
    aligner = _aligner("overlapped", clip_per_video=4)
    items = [aligner(hand_made(video_id=f"v{i}"), random.Random(i)) for i in range(3)]
    batch = collate(items, video_ids=["v0", "v1", "v2"])
    assert batch["caps"].shape == (12, 32) and batch["caps"].dtype == torch.int64
    assert batch["vfeats"].shape == (12, 16, 512) and batch["vfeats"].dtype == torch.float32
    assert batch["vmasks"].dtype == torch.bool and batch["cmasks"].dtype == torch.bool
    assert batch["video_index"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(batch["vfeats"][4:8], torch.from_numpy(items[1]["vfeats"]).float())
    assert batch["video_start"].tolist()[:4] == items[0]["video_start"].tolist()
    with pytest.raises(DataError, match="2 video ids"):
        collate(items, video_ids=["a", "b"])
