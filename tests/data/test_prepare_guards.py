"""``norton prepare how2`` guards: ids are file names (never paths), the dirty-record summary is always shown, and
a split that ends up empty is an error unless asked for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from norton_core.cli import main as norton_main
from norton_core.data.store import ShardStore

CAPTION = {"start": [0.0], "end": [1.0], "text": ["chop the onion"]}


def _raw(root: Path, ids: list[str], features: dict[str, int]) -> Path:
    (root / "features").mkdir(parents=True)
    for vid, rows in features.items():
        np.save(root / "features" / f"{vid}.npy", np.ones((rows, 512), np.float16))
    (root / "captions.json").write_text(json.dumps({vid: CAPTION for vid in ids}))
    (root / "train.lst").write_text("".join(f"{vid}\n" for vid in ids))
    return root


def _prepare(raw: Path, out: Path, *extra: str) -> int:
    return norton_main(["prepare", "how2", str(raw), "--out", str(out), "--no-progress", *extra])


def test_ids_with_path_separators_or_dotdot_are_refused_and_reported(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path / "raw", ["good", "../secret", "sub/inner", "..", "a\\b", "x..y"], {"good": 4})
    np.save(tmp_path / "raw" / "secret.npy", np.full((3, 512), 7, np.float16))  # outside features/
    (tmp_path / "raw" / "features" / "sub").mkdir()
    np.save(tmp_path / "raw" / "features" / "sub" / "inner.npy", np.ones((3, 512), np.float16))
    assert _prepare(raw, tmp_path / "out") == 0
    store = ShardStore.open(tmp_path / "out" / "train")
    assert store.video_ids == ["good"]
    report = json.loads((tmp_path / "out" / "train" / "prepare_report.json").read_text())["kinds"]
    assert report["unsafe_id"]["count"] == 5
    assert any("../secret" in e and "separator" in e for e in report["unsafe_id"]["examples"])
    err = capsys.readouterr().err
    assert "unsafe_id: 5 (video skipped)" in err  # shown although --no-progress


def test_the_dirty_record_summary_is_printed_without_progress(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path / "raw", ["good", "nofile"], {"good": 4})
    assert _prepare(raw, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "train: dirty records" in err and "missing_features: 1 (video skipped), e.g. nofile" in err


def test_an_empty_split_list_is_an_error_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path / "raw", [], {})
    assert _prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.lst: split 'train' lists no videos" in err[0] and "--allow-empty" in err[0]
    assert not (tmp_path / "out" / "train" / "manifest.json").exists()
    assert _prepare(raw, tmp_path / "out", "--allow-empty") == 0
    assert len(ShardStore.open(tmp_path / "out" / "train")) == 0


def test_an_all_skipped_split_is_an_error_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path / "raw", ["a", "b"], {"a": 0})  # a: zero rows, b: no feature file
    assert _prepare(raw, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "missing_features: 1" in err and "empty_features: 1" in err
    assert "every listed video of split 'train' was skipped (2 dirty records" in err
    assert not (tmp_path / "out" / "train" / "manifest.json").exists()
    assert (tmp_path / "out" / "train" / "prepare_report.json").exists()
    assert _prepare(raw, tmp_path / "out", "--allow-empty") == 0  # resumes from the built (empty) shard
    assert ShardStore.open(tmp_path / "out" / "train").manifest["skipped"] == {"empty_features": 1,
                                                                             "missing_features": 1}


def test_split_names_cannot_leave_the_output_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path / "raw", ["good"], {"good": 2})
    code = norton_main(["prepare", "how2", str(raw), "--out", str(tmp_path / "out"), "--no-progress",
                        "--split", f"../escape={raw / 'train.lst'}"])
    assert code == 2 and "split name '../escape'" in capsys.readouterr().err
    assert not (tmp_path / "escape").exists()
