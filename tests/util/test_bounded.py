"""Bounded reads: the file's type and size are checked before anything is read, so a FIFO, /dev/zero or a sparse
20 GB file costs one line, not a hang or a MemoryError."""

from __future__ import annotations

import os
import time

import pytest

from norton_core._util.bounded import human_bytes, read_bounded, read_text_bounded
from norton_core.errors import NortonError, RecipeError


def test_a_regular_file_within_the_limit_is_read_whole(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100, "a test file") == b"x" * 100


def test_a_fifo_is_refused_at_once_without_blocking(tmp_path):
    fifo = tmp_path / "rng.json"
    os.mkfifo(fifo)
    began = time.monotonic()
    with pytest.raises(NortonError, match=r"rng\.json: is a FIFO \(named pipe\), not a regular file; expected a "
                                          r"checkpoint file"):
        read_bounded(fifo, 1024, "a checkpoint file")
    assert time.monotonic() - began < 2


def test_a_symlink_to_dev_zero_is_refused_as_a_device(tmp_path):
    link = tmp_path / "recipe.toml"
    link.symlink_to("/dev/zero")
    with pytest.raises(RecipeError, match="is a character device, not a regular file"):
        read_bounded(link, 1024, "a recipe", RecipeError)


def test_a_sparse_20_gb_file_is_refused_by_its_size_before_reading(tmp_path):
    sparse = tmp_path / "big.toml"
    with open(sparse, "wb") as fh:
        fh.truncate(20 * 1024**3)  # no blocks on disk: only reading it would cost memory
    with pytest.raises(NortonError, match=r"21474836480 bytes, more than the 1 MiB limit for a recipe"):
        read_bounded(sparse, 1024 * 1024, "a recipe")


def test_a_symlink_loop_and_a_missing_file_are_one_line_each(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(NortonError, match="symbolic link loop"):
        read_bounded(tmp_path / "a", 10, "a recipe")
    with pytest.raises(NortonError, match="not found; expected a recipe"):
        read_bounded(tmp_path / "missing", 10, "a recipe")


def test_non_utf8_bytes_name_the_offset(tmp_path):
    path = tmp_path / "r.toml"
    path.write_bytes(b'name = "ok"\n\xff\xfe')
    with pytest.raises(NortonError, match=r"not UTF-8 text \(byte 12 is 0xff\)"):
        read_text_bounded(path, 1024, "a recipe")


def test_limits_are_printed_in_round_units():
    assert human_bytes(1024 * 1024) == "1 MiB"
    assert human_bytes(16 * 1024**3) == "16 GiB"
    assert human_bytes(1000) == "1000 bytes"



def test_read_json_is_one_line_per_failure_and_checks_the_type(tmp_path):
    from norton_core._util.bounded import read_json
    from norton_core.errors import DataError

    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2]}')
    assert read_json(good, 1024, "a test file", DataError, expect=dict) == {"a": [1, 2]}
    cases = {"missing.json": None, "bad.json": b'{"a": ', "latin.json": b'{"a": "\xe9"}', "list.json": b"[1]",
             "deep.json": b"[" * 100_000 + b"]" * 100_000}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError) as info:
            read_json(tmp_path / name, 1024 * 1024, "a test file", DataError, expect=dict)
        message = str(info.value)
        assert message.startswith(str(tmp_path / name)) and "\n" not in message, message


def test_a_resumed_runs_unreadable_eval_json_is_an_error_not_an_empty_table(tmp_path):
    from norton_core.engine.setup import read_evaluation
    from norton_core.errors import CheckpointError

    assert read_evaluation(tmp_path / "eval.json") == {}
    (tmp_path / "eval.json").write_text('{"after": {"youcook2_clip/R@1": 1.5}')
    with pytest.raises(CheckpointError, match="eval.json: not valid JSON.*delete it to evaluate again"):
        read_evaluation(tmp_path / "eval.json")
