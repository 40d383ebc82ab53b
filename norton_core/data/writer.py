"""Write one shard (six MMPT ``.npy`` files) crash-safely, and commit a shard set's manifest.

Each file is streamed to a hidden staging name, fsynced and renamed into place, so a file under its final name is
always complete. A shard counts as finished only when its record ``.parts/<split>_<k>.json`` exists (written last,
atomically); the manifest is assembled from those records after every shard is finished, so its presence means
the whole set is complete. Everything written is a pure function of the inputs, so a rerun after a kill produces
byte-identical files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from norton_core._util.dir_lock import DirectoryLock
from norton_core._util.faults import fault_point
from norton_core._util.files import fsync_dir, replace_atomic
from norton_core.data import manifest as mf
from norton_core.data.npyfile import NpyStreamWriter, hash_file
from norton_core.errors import DataError

PARTS = ".parts"


class ShardWriter:
    """Append videos to shard ``k`` of ``split`` in ``out_dir``; :meth:`commit` makes it final."""

    def __init__(
        self, out_dir: Path, split: str, k: int, prefix: str, feature_dim: int, max_text_len: int, chunk_bytes: int
    ) -> None:
        self.out_dir, self.split, self.k = out_dir, split, k
        self.names = mf.shard_file_names(split, k, prefix)
        self.chunk_bytes = chunk_bytes
        self.video_ids: list[str] = []
        self._stage = {role: out_dir / f".{name}.tmp-{os.getpid()}" for role, name in self.names.items()}
        self._data = {
            "video_data": NpyStreamWriter(self._stage["video_data"], mf.ROLES["video_data"], (feature_dim,)),
            "times_data": NpyStreamWriter(self._stage["times_data"], mf.ROLES["times_data"], (2,)),
            "tokens_data": NpyStreamWriter(self._stage["tokens_data"], mf.ROLES["tokens_data"], (max_text_len,)),
        }
        self._starts: dict[str, list[int]] = {"video_starts": [0], "times_starts": [0], "tokens_starts": [0]}

    def add(self, video_id: str, features: np.ndarray, times: np.ndarray, tokens: np.ndarray) -> None:
        """``features`` (T, D) float16, ``times`` (n, 2) float32, ``tokens`` (n, L) int32 padded with -1."""
        self.video_ids.append(video_id)
        for s_role, d_role, rows in (
            ("video_starts", "video_data", features),
            ("times_starts", "times_data", times),
            ("tokens_starts", "tokens_data", tokens),
        ):
            self._data[d_role].append(rows)
            self._starts[s_role].append(self._starts[s_role][-1] + rows.shape[0])

    def commit(self) -> dict[str, Any]:
        """Finish the files, rename them into place, write the shard record; returns the manifest entry."""
        for role, values in self._starts.items():
            w = NpyStreamWriter(self._stage[role], mf.ROLES[role], ())
            w.append(np.asarray(values, dtype=np.int64))
            w.close()
        for w in self._data.values():
            w.close()
        files: dict[str, Any] = {}
        for role, tmp in self._stage.items():
            final = self.out_dir / self.names[role]
            sha, chunks = hash_file(tmp, self.chunk_bytes)
            shape = (len(self._starts[role]),) if role in self._starts else (self._data[role].rows, *self._data[role].row_shape)
            files[role] = {
                "name": self.names[role],
                "dtype": mf.ROLES[role],
                "shape": list(shape),
                "bytes": tmp.stat().st_size,
                "sha256": sha,
                "chunk_sha256": chunks,
            }
            os.replace(tmp, final)
            fault_point("shard_file_renamed")
        fsync_dir(self.out_dir)
        entry = {
            "index": self.k,
            "num_videos": len(self.video_ids),
            "video_ids": self.video_ids,
            "feature_rows": self._data["video_data"].rows,
            "caption_rows": self._data["times_data"].rows,
            "files": files,
        }
        return entry

    def abort(self) -> None:
        for w in self._data.values():
            w.abort()
        for tmp in self._stage.values():
            tmp.unlink(missing_ok=True)


def part_path(out_dir: Path, split: str, k: int) -> Path:
    return out_dir / PARTS / f"{split}_{k}.json"


def write_part(out_dir: Path, split: str, k: int, record: dict[str, Any]) -> None:
    (out_dir / PARTS).mkdir(exist_ok=True)
    replace_atomic(part_path(out_dir, split, k), mf.dumps(record))


def read_finished_part(out_dir: Path, split: str, k: int) -> dict[str, Any] | None:
    """The record of a finished shard, or None when it must be (re)made (no record, or a file of the wrong size)."""
    path = part_path(out_dir, split, k)
    try:
        record = json.loads(path.read_bytes())
        for f in record["entry"]["files"].values():
            if (out_dir / f["name"]).stat().st_size != f["bytes"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def remove_staging(out_dir: Path) -> None:
    """Drop staging files of an interrupted run (ours only: hidden names with ``.tmp-``)."""
    for p in list(out_dir.glob(".*.tmp-*")) + list((out_dir / PARTS).glob(".*.tmp-*")):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)


class OutputLock(DirectoryLock):
    """The lock of a ``norton prepare`` output directory, held while it is written: a second prepare into the same
    ``--out`` is refused at once, before it removes the first one's staging files or writes a shard."""

    error = DataError
    clear_on_release = True

    def __init__(self, out_dir: Path) -> None:
        super().__init__(out_dir, "output directory", "another norton prepare is writing it; wait for it to end "
                                                      "or choose another --out")


def locked_output(out_dir: Path) -> OutputLock:
    """Create ``out_dir`` if needed and return its :class:`OutputLock`, to be held with ``with``."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"{out_dir}: exists and is not a directory; choose another --out") from None
    return OutputLock(out_dir)
