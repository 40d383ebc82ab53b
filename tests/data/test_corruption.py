"""Every bad input to the reader is refused with the file and what is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from norton_core.data.store import ShardStore
from norton_core.data.verify import verify_store
from norton_core.errors import DataError


def _manifest(store: Path) -> dict:
    return json.loads((store / "manifest.json").read_text())


def _file(store: Path, role: str, shard: int = 1) -> Path:
    return store / _manifest(store)["shards"][shard]["files"][role]["name"]


def _rewrite(store: Path, role: str, array: np.ndarray, shard: int = 1, update_manifest: bool = False) -> Path:
    path = _file(store, role, shard)
    np.save(path, array)
    if update_manifest:
        m = _manifest(store)
        entry = m["shards"][shard]["files"][role]
        entry["shape"], entry["bytes"] = list(array.shape), path.stat().st_size
        (store / "manifest.json").write_text(json.dumps(m))
    return path


def _refused(store: Path, *needles: str, **kw: object) -> str:
    with pytest.raises(DataError) as info:
        ShardStore.open(store, **kw)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize("cut", [1, "half", "all"])
def test_truncated_data_file_is_refused_on_open(store_copy: Path, cut: object) -> None:
    path = _file(store_copy, "video_data")
    size = path.stat().st_size
    keep = {1: size - 1, "half": size // 2, "all": 0}[cut]
    with open(path, "r+b") as fh:
        fh.truncate(keep)
    if keep == 0:
        _refused(store_copy, str(path), "not a readable .npy")
    else:
        _refused(store_copy, str(path), "truncated", f"expected {size} bytes", f"got {keep}")


@pytest.mark.parametrize("role", ["video_data", "video_starts", "tokens_data"])
def test_extended_file_is_refused(store_copy: Path, role: str) -> None:
    path = _file(store_copy, role)
    size = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(b"\0" * 7)
    _refused(store_copy, str(path), "extra bytes", f"got {size + 7}")


def test_flipped_byte_is_located_by_verify(store_copy: Path) -> None:
    path = _file(store_copy, "video_data")
    m = _manifest(store_copy)
    with open(path, "r+b") as fh:
        fh.seek(128 + 5 * 1024 + 3)  # row 5 of shard 1, inside its first video
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x40]))
    ShardStore.open(store_copy).close()  # same size and header: only the content hash can tell
    with pytest.raises(DataError) as info:
        verify_store(store_copy, progress=False)
    message = str(info.value)
    first = m["shards"][1]["video_ids"][0]
    assert str(path) in message and "rows [0," in message and repr(first) in message, message


def test_verify_passes_a_clean_store(small_store_dir: Path) -> None:
    summary = verify_store(small_store_dir, progress=False)
    assert summary["videos"] == 24 and summary["hashed_files"] == 18


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: np.concatenate([s[:2], s[3:4], s[2:3], s[4:]]), "offsets decrease at index"),
        (lambda s: s + 1, "index 0 is 1, expected 0"),
        (lambda s: np.concatenate([s[:-1], s[-1:] - 1]), "last offset"),
        (lambda s: s - 5, "index 0 is -5"),
    ],
)
def test_invalid_offsets_are_refused_with_index_and_values(store_copy: Path, edit, needle: str) -> None:
    starts = np.load(_file(store_copy, "video_starts"))
    path = _rewrite(store_copy, "video_starts", edit(starts).astype(np.int64))
    _refused(store_copy, str(path), needle)


def test_int32_offsets_are_refused(store_copy: Path) -> None:
    starts = np.load(_file(store_copy, "times_starts"))
    path = _rewrite(store_copy, "times_starts", starts.astype(np.int32))
    _refused(store_copy, str(path), "dtype <i4", "expected <i8")


def test_big_endian_and_fortran_features_are_refused(store_copy: Path) -> None:
    data = np.load(_file(store_copy, "video_data"))
    path = _rewrite(store_copy, "video_data", data.astype(">f2"))
    _refused(store_copy, str(path), "dtype >f2", "no silent cast")
    _rewrite(store_copy, "video_data", np.asfortranarray(data))
    _refused(store_copy, str(path), "Fortran order")


def test_float32_features_are_refused_not_cast(store_copy: Path) -> None:
    data = np.load(_file(store_copy, "video_data"))
    path = _rewrite(store_copy, "video_data", data.astype(np.float32), update_manifest=True)
    _refused(store_copy, str(path), "dtype <f4", "expected <f2")


def test_wrong_feature_width_is_refused(store_copy: Path) -> None:
    data = np.load(_file(store_copy, "video_data"))
    path = _rewrite(store_copy, "video_data", data[:, :256])
    _refused(store_copy, str(path), "header shape", "manifest says")
    _rewrite(store_copy, "video_data", data[:, :256], update_manifest=True)  # consistent manifest, wrong width
    _refused(store_copy, str(path), "expected (rows, 512)")


def test_nan_row_is_named_by_verify_and_by_checked_reads(store_copy: Path) -> None:
    path = _file(store_copy, "video_data")
    m = _manifest(store_copy)
    starts = np.load(_file(store_copy, "video_starts"))
    mm = np.load(path, mmap_mode="r+")
    mm[starts[2] + 4] = np.nan  # video 2 of shard 1, its row 4
    mm.flush()
    del mm
    vid = m["shards"][1]["video_ids"][2]
    with pytest.raises(DataError) as info:
        verify_store(store_copy, progress=False)
    assert any("non-finite" in p and repr(vid) in p and str(path) in p for p in info.value.problems), info.value
    store = ShardStore.open(store_copy, check_finite=True)
    with pytest.raises(DataError, match=rf"{vid}.*row 4"):
        store.get_by_id(vid)
    store.get(0)  # other videos still read


def test_missing_shard_file_and_manifest_are_refused(store_copy: Path) -> None:
    path = _file(store_copy, "tokens_starts", shard=2)
    path.unlink()
    _refused(store_copy, str(path), "missing")
    (store_copy / "manifest.json").unlink()
    _refused(store_copy, "no shard manifest")


def test_extra_shard_file_is_ignored_with_a_warning(store_copy: Path) -> None:
    np.save(store_copy / "train_9_data.npy", np.zeros((3, 512), np.float16))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = ShardStore.open(store_copy)
    assert len(store) == 24
    assert any("train_9_data.npy" in str(w.message) for w in caught)


def test_manifest_inconsistencies_are_refused(store_copy: Path) -> None:
    m = _manifest(store_copy)
    m["shards"][2]["video_ids"][0] = m["shards"][0]["video_ids"][0]
    (store_copy / "manifest.json").write_text(json.dumps(m))
    _refused(store_copy, "appears in more than one place")
    m["format_version"] = 99
    (store_copy / "manifest.json").write_text(json.dumps(m))
    _refused(store_copy, "format version 99 is not supported")


def test_checks_survive_python_O(store_copy: Path) -> None:
    path = _file(store_copy, "video_data")
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 2)
    code = (
        "import sys\nfrom norton_core.data.store import ShardStore\nfrom norton_core.errors import DataError\n"
        f"try:\n    ShardStore.open({str(store_copy)!r})\nexcept DataError as e:\n    print('refused', e)\n"
        "    sys.exit(0)\nsys.exit(1)\n"
    )
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "truncated" in out.stdout, out.stdout + out.stderr


def test_reader_code_uses_no_assert_and_no_pickle_writes() -> None:
    root = Path(__file__).resolve().parents[2] / "norton_core" / "data"
    for path in root.glob("*.py"):
        text = path.read_text()
        assert "\n    assert " not in text and "\nassert " not in text, path
        if path.name != "mmpt.py":
            assert "import pickle" not in text and "allow_pickle=True" not in text, path
