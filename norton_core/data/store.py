"""Random access to a prepared shard set: ``ShardStore.open(dir)`` then ``store.get(i)`` / ``store.get_by_id(vid)``.

Opening checks every file the manifest lists against its header and size (a truncated, extended, re-typed or
missing file is refused before training starts) and every offsets array (``starts[0] == 0``, non-decreasing, last
== rows of data). Content hashes are checked by ``norton verify`` (reading hundreds of GB on every open would be
too slow). All checks raise :class:`~norton_core.errors.DataError`, never ``assert``, so they survive ``python -O``.

Two read paths:

- ``"mmap"``: numpy memory maps. Fastest when the page cache holds the data (a slice is a view, no copy).
- ``"pread"``: one ``preadv`` of exactly a video's byte span into a fresh buffer. For data larger than RAM: the
  kernel's read-ahead turns each memory-map fault into a multi-MB read (~9x over-read on random access).

A store pickles as (path, read mode, manifest digest) and reopens its files lazily in the process that uses it,
so it can be handed to DataLoader workers under fork or spawn. Features stay float16 per video: convert a whole
batch at once with :func:`stack_float32` (fp16 -> fp32 costs more than the read itself).
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import itertools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from norton_core.data import manifest as mf
from norton_core.data.npyfile import read_header
from norton_core.errors import DataError
from norton_core.plugin.interfaces import VideoRecord

ReadMode = Literal["mmap", "pread"]


class _Shard:
    """One shard's files: offsets in memory, data arrays mapped or read on demand."""

    def __init__(self, index: int, entry: dict[str, Any], data_dir: Path) -> None:
        self.index = index
        self.video_ids: list[str] = entry["video_ids"]
        self.paths = {role: data_dir / f["name"] for role, f in entry["files"].items()}
        self.shapes = {role: tuple(f["shape"]) for role, f in entry["files"].items()}
        #: on-disk dtypes (checked against the format in :meth:`check`); reads return ``manifest.ROLES``'s
        self.dtypes = {role: np.dtype(f["dtype"]) for role, f in entry["files"].items()}
        self.unsampleable: dict[str, list[int]] = entry.get("unsampleable", {})
        self.offsets: dict[str, int] = {}
        self.starts: dict[str, np.ndarray] = {}
        self._maps: dict[str, np.ndarray] = {}
        self._fds: dict[str, int] = {}
        #: per role, the manifest's sha256 of each chunk and which chunks this process has checked (1 byte each)
        self.chunk_sha256: dict[str, list[str]] = {
            role: f["chunk_sha256"] for role, f in entry["files"].items() if f.get("chunk_sha256")}
        self._checked: dict[str, bytearray] = {role: bytearray(len(h)) for role, h in self.chunk_sha256.items()}
        self.chunk_bytes = 0

    def check(self, entry: dict[str, Any], manifest: dict[str, Any]) -> None:
        n = len(self.video_ids)
        for role, f in entry["files"].items():
            path = self.paths[role]
            if f["dtype"] not in mf.DISK_DTYPES[role]:
                raise DataError(f"{path}: manifest says dtype {f['dtype']}, the format requires "
                                f"{' or '.join(mf.DISK_DTYPES[role])}")
            want = np.dtype(f["dtype"])
            dtype, shape, fortran, offset = read_header(path)
            if dtype.str != want.str:
                raise DataError(f"{path}: dtype {dtype.str} ({dtype}), expected {want.str} ({want}); no silent cast")
            if fortran:
                raise DataError(f"{path}: stored in Fortran order, expected C order")
            if list(shape) != list(f["shape"]):
                raise DataError(f"{path}: header shape {shape}, manifest says {tuple(f['shape'])}")
            expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            size = path.stat().st_size
            if size != expected:
                what = "truncated" if size < expected else "has extra bytes"
                raise DataError(
                    f"{path}: {what}: expected {expected} bytes (header {offset} + shape {shape} x {dtype.itemsize}) "
                    f"got {size}"
                )
            if size != f["bytes"]:
                raise DataError(f"{path}: {size} bytes, manifest says {f['bytes']}")
            self.offsets[role] = offset
        width = {"video_data": manifest["feature_dim"], "times_data": 2}
        for role, dim in width.items():
            shape = self.shapes[role]
            if len(shape) != 2 or shape[1] != dim:
                raise DataError(f"{self.paths[role]}: shape {shape}, expected (rows, {dim})")
        if len(self.shapes["tokens_data"]) != 2 or self.shapes["tokens_data"][1] < 1:
            raise DataError(f"{self.paths['tokens_data']}: shape {self.shapes['tokens_data']}, expected (rows, L)")
        for s_role, d_role in mf.PAIRS:
            self.starts[s_role] = self._check_starts(s_role, n, self.shapes[d_role][0], d_role)
        for s_role, what, reason in (("video_starts", "feature rows", "no_feature_rows"),
                                     ("times_starts", "captions", "no_captions")):
            empty = np.flatnonzero(np.diff(self.starts[s_role]) == 0)
            unrecorded = np.setdiff1d(empty, np.asarray(self.unsampleable.get(reason, []), dtype=np.int64))
            if unrecorded.size:  # an empty video the manifest does not know about: the files changed
                j = int(unrecorded[0])
                raise DataError(
                    f"{self.paths[s_role]}: video {self.video_ids[j]!r} (index {j}) has no {what}, and the manifest "
                    f"does not record it as unsampleable; {unrecorded.size} such videos in this shard (prepare the "
                    "store again: `norton prepare how2` skips them, `norton prepare mmpt` records them)"
                )
        if not np.array_equal(self.starts["times_starts"], self.starts["tokens_starts"]):
            j = int(np.flatnonzero(self.starts["times_starts"] != self.starts["tokens_starts"])[0])
            raise DataError(
                f"{self.paths['tokens_starts']}: index {j} is {int(self.starts['tokens_starts'][j])} but the caption "
                f"times file {self.paths['times_starts'].name} has {int(self.starts['times_starts'][j])}"
            )

    def _check_starts(self, role: str, n: int, rows: int, data_role: str) -> np.ndarray:
        path = self.paths[role]
        if self.shapes[role] != (n + 1,):
            raise DataError(f"{path}: shape {self.shapes[role]}, expected ({n + 1},) for {n} videos")
        starts = np.fromfile(path, dtype="<i8", offset=self.offsets[role], count=n + 1)
        if starts.size != n + 1:
            raise DataError(f"{path}: could read only {starts.size} of {n + 1} offsets")
        if starts[0] != 0:
            raise DataError(f"{path}: index 0 is {int(starts[0])}, expected 0")
        bad = np.flatnonzero(np.diff(starts) < 0)
        if bad.size:
            j = int(bad[0])
            raise DataError(
                f"{path}: offsets decrease at index {j + 1}: starts[{j}] = {int(starts[j])}, "
                f"starts[{j + 1}] = {int(starts[j + 1])}"
            )
        if starts[-1] != rows:
            raise DataError(
                f"{path}: last offset starts[{n}] = {int(starts[-1])}, but {self.paths[data_role].name} has {rows} rows"
            )
        return starts

    # -- reading -------------------------------------------------------------------------------------------------

    def rows(self, role: str, a: int, b: int, read_mode: ReadMode) -> np.ndarray:
        """Rows ``[a, b)`` of a data file (a view of the map, or a fresh array read with one ``preadv``); with chunk
        checks on, every chunk the rows touch is hashed first, the first time this process reads it."""
        if self.chunk_bytes and b > a:
            row_bytes = self.row_bytes(role)
            self.check_chunks(role, self.offsets[role] + a * row_bytes, self.offsets[role] + b * row_bytes)
        if read_mode == "mmap":
            arr = self._maps.get(role)
            if arr is None:
                arr = self._map(role)
            out = arr[a:b]
        else:
            fd = self._fds.get(role)
            if fd is None:
                fd = self._fds[role] = os.open(self.paths[role], os.O_RDONLY)
            shape = self.shapes[role]
            out = np.empty((b - a, *shape[1:]), dtype=self.dtypes[role])
            row_bytes = out.itemsize * (shape[1] if len(shape) > 1 else 1)
            view = memoryview(cast("Any", out)).cast("B")  # numpy arrays are buffers; its stubs do not say so
            _pread_into(fd, view, self.offsets[role] + a * row_bytes, self.paths[role])
        if out.dtype.str != mf.ROLES[role]:  # float32 features of an adopted MMPT shard
            out = out.astype(mf.ROLES[role])
        return out

    def row_bytes(self, role: str) -> int:
        """Bytes of one row of a data file as stored on disk (float32 features of adopted MMPT shards: 2048)."""
        shape = self.shapes[role]
        return self.dtypes[role].itemsize * int(np.prod(shape[1:], dtype=np.int64))

    def check_chunks(self, role: str, start: int, end: int) -> None:
        """Hash the not yet checked chunks overlapping file bytes ``[start, end)`` against the manifest."""
        checked = self._checked.get(role)
        if checked is None:
            return
        size = self.chunk_bytes
        for c in range(start // size, (end - 1) // size + 1):
            if c < len(checked) and not checked[c]:
                self._check_chunk(role, c)
                checked[c] = 1

    def _check_chunk(self, role: str, c: int) -> None:
        fd = self._fds.get(role)
        if fd is None:
            fd = self._fds[role] = os.open(self.paths[role], os.O_RDONLY)
        size = self.chunk_bytes
        data = os.pread(fd, size, c * size)
        if hashlib.sha256(data).hexdigest() != self.chunk_sha256[role][c]:
            a, b = c * size, c * size + len(data)
            where = locate_bytes(self, role, a, b)
            raise DataError(
                f"{self.paths[role]}: bytes [{a}, {b}) do not match the manifest's chunk hash ({where}): the file "
                "changed after preparation; run `norton verify` on the store and re-prepare it"
            )

    def _map(self, role: str) -> np.ndarray:
        arr = np.memmap(self.paths[role], dtype=self.dtypes[role], mode="r", offset=self.offsets[role],
                        shape=self.shapes[role])
        # a plain ndarray view of the map: slices stay cheap and never drag the memmap subclass along
        self._maps[role] = arr.view(np.ndarray)
        return self._maps[role]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._maps.clear()


def videos_in_rows(shard: _Shard, starts_role: str, r0: int, r1: int) -> str:
    """The videos whose rows of a data file overlap ``[r0, r1)``, for error messages."""
    starts = shard.starts[starts_role]
    n = len(shard.video_ids)
    if n == 0:
        return "no videos"
    i = int(np.searchsorted(starts, r0, side="right")) - 1
    j = int(np.searchsorted(starts, max(r0, r1 - 1), side="right")) - 1
    i, j = min(max(i, 0), n - 1), min(max(j, 0), n - 1)
    if i == j:
        return f"video {shard.video_ids[i]!r} (index {i})"
    return f"videos {shard.video_ids[i]!r} (index {i}) to {shard.video_ids[j]!r} (index {j})"


def locate_bytes(shard: _Shard, role: str, a: int, b: int) -> str:
    """Describe the byte range ``[a, b)`` of a shard file as rows and videos."""
    offset = shard.offsets[role]
    if role.endswith("_starts"):
        return f"offsets [{max(0, a - offset) // 8}, {max(0, b - offset + 7) // 8})"
    if b <= offset:
        return "the .npy header"
    row_bytes = shard.row_bytes(role)
    r0, r1 = max(0, a - offset) // row_bytes, min(shard.shapes[role][0], -(-(b - offset) // row_bytes))
    starts_role = {"video_data": "video_starts", "times_data": "times_starts", "tokens_data": "tokens_starts"}[role]
    if starts_role not in shard.starts:
        return f"rows [{r0}, {r1})"
    return f"rows [{r0}, {r1}) = {videos_in_rows(shard, starts_role, r0, r1)}"


def _pread_into(fd: int, buf: memoryview, offset: int, path: Path) -> None:
    done = 0
    while done < len(buf):
        n = os.preadv(fd, [buf[done:]], offset + done)
        if n <= 0:
            raise DataError(f"{path}: file ended at byte {offset + done} while reading {len(buf)} bytes at {offset}")
        done += n


class ShardStore:
    """A prepared shard set opened by its manifest (see the module docstring)."""

    def __init__(self, path: Path, read_mode: ReadMode = "mmap", check_finite: bool = False,
                 check_chunks: bool = False) -> None:
        if read_mode not in ("mmap", "pread"):
            raise DataError(f"read_mode must be 'mmap' or 'pread', got {read_mode!r}")
        self.path = Path(path)
        self.read_mode: ReadMode = read_mode
        self.check_finite = check_finite
        self.check_chunks = check_chunks
        self._digest: str | None = None
        self._pid = -1
        self._manifest: dict[str, Any] = {}
        self._shards: list[_Shard] = []
        self._firsts: list[int] = [0]
        self._n = 0
        self._ids: list[str] | None = None
        self._index: dict[str, int] | None = None

    @classmethod
    def open(cls, path: str | Path, read_mode: ReadMode = "mmap", *, check_finite: bool = False,
             check_chunks: bool = False) -> ShardStore:
        """Open and check the store in directory ``path`` (holding ``manifest.json``).

        :param read_mode: ``"mmap"`` (page-cache resident data) or ``"pread"`` (data larger than RAM).
        :param check_finite: also refuse, on each read, a video holding NaN/inf features, naming the file, video
            and row (``norton verify`` checks the whole set once).
        :param check_chunks: hash every chunk (the manifest's ``chunk_bytes``, 4 MiB) of a shard file the first
            time this process reads from it and refuse one that differs from the manifest's ``chunk_sha256``; a
            store whose manifest has no chunk hashes is refused (prepare it again with hashing on).
        """
        store = cls(Path(path), read_mode, check_finite, check_chunks)
        store._load()
        return store

    # -- per-process state ---------------------------------------------------------------------------------------

    def _load(self) -> None:
        manifest, raw = mf.load(self.path)
        digest = hashlib.sha256(raw).hexdigest()
        first_open = self._digest is None
        if self._digest is not None and digest != self._digest:
            raise DataError(f"{self.path / mf.MANIFEST}: changed since the store was opened in the parent process")
        data_dir = self.path / manifest.get("data_dir", ".")
        shards = []
        for k, entry in enumerate(manifest["shards"]):
            shard = _Shard(k, entry, data_dir)
            shard.check(entry, manifest)
            if self.check_chunks:
                self._enable_chunk_checks(shard, manifest)
            shards.append(shard)
        counts = [len(s.video_ids) for s in shards]
        self._firsts = [0, *itertools.accumulate(counts)]  # a list: bisect on it is faster than numpy per call
        self._n = self._firsts[-1]
        self._manifest, self._shards, self._digest, self._pid = manifest, shards, digest, os.getpid()
        self._ids, self._index = None, None
        if first_open:  # not again in every DataLoader worker
            self._warn_extra_files(data_dir)
        if len(self.index_map()) != len(self):
            dup = next(v for v, c in collections.Counter(self.video_ids).items() if c > 1)
            raise DataError(f"{self.path / mf.MANIFEST}: video id {dup!r} appears in more than one place")

    def _enable_chunk_checks(self, shard: _Shard, manifest: dict[str, Any]) -> None:
        missing = [role for role in mf.ROLES if role not in shard.chunk_sha256]
        if missing:
            raise DataError(
                f"{self.path / mf.MANIFEST}: no chunk hashes for {shard.paths[missing[0]].name} (and "
                f"{len(missing) - 1} more file(s) of shard {shard.index}), so reads cannot be checked against "
                "corruption; prepare the store again with hashing on (`norton prepare mmpt` without --no-hash), "
                "or set train.check_chunks = false to train on unchecked shards"
            )
        if manifest["chunk_bytes"] < 1:
            raise DataError(f"{self.path / mf.MANIFEST}: chunk_bytes is {manifest['chunk_bytes']}, expected >= 1")
        shard.chunk_bytes = manifest["chunk_bytes"]
        for role in ("video_starts", "times_starts", "tokens_starts"):  # read whole at open: check them now
            shard.check_chunks(role, 0, shard.paths[role].stat().st_size)
        shard.close()

    def _warn_extra_files(self, data_dir: Path) -> None:
        known = {p.name for s in self._shards for p in s.paths.values()}
        split = self._manifest["split"]
        extra = sorted(
            p.name for p in data_dir.glob(f"*{split}_*.npy") if p.name not in known and not p.name.startswith(".")
        )
        if extra:
            warnings.warn(
                f"{data_dir}: {len(extra)} shard file(s) not in the manifest are ignored: {', '.join(extra[:5])}",
                stacklevel=3,
            )

    def _ready(self) -> None:
        if self._pid != os.getpid() and not self._shards:
            self._load()  # unpickled in a new process (spawn): reopen lazily
        elif self._pid != os.getpid():
            self._pid = os.getpid()  # forked: maps and descriptors are inherited and safe to share read-only

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "read_mode": self.read_mode, "check_finite": self.check_finite,
                "check_chunks": self.check_chunks, "digest": self._digest}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(Path(state["path"]), state["read_mode"], state["check_finite"],  # type: ignore[misc]
                      state["check_chunks"])
        self._digest = state["digest"]

    def close(self) -> None:
        for shard in self._shards:
            shard.close()

    # -- public API ----------------------------------------------------------------------------------------------

    @property
    def manifest(self) -> dict[str, Any]:
        self._ready()
        return self._manifest

    @property
    def video_ids(self) -> list[str]:
        self._ready()
        if self._ids is None:
            self._ids = [v for s in self._shards for v in s.video_ids]
        return self._ids

    def index_map(self) -> dict[str, int]:
        self._ready()
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self.video_ids)}
        return self._index

    def __len__(self) -> int:
        self._ready()
        return self._n

    def index_of(self, video_id: str) -> int:
        try:
            return self.index_map()[video_id]
        except KeyError:
            raise KeyError(f"video id {video_id!r} is not in the store {self.path}") from None

    def locate(self, i: int) -> tuple[int, int]:
        """``(shard index, index within the shard)`` of video ``i``."""
        if self._pid != os.getpid():
            self._ready()
        if not 0 <= i < self._n:
            raise IndexError(f"video index {i} out of range for {self._n} videos in {self.path}")
        k = bisect.bisect_right(self._firsts, i) - 1
        return k, i - self._firsts[k]

    def describe(self, i: int) -> str:
        """Where video ``i`` lives, for error messages: ``<data file> video '<id>' (index j)``."""
        k, j = self.locate(i)
        shard = self._shards[k]
        return f"{shard.paths['video_data']} video {shard.video_ids[j]!r} (index {j})"

    def get(self, i: int) -> VideoRecord:
        k, j = self.locate(i)
        shard = self._shards[k]
        vs, ts = shard.starts["video_starts"], shard.starts["times_starts"]
        features = shard.rows("video_data", int(vs[j]), int(vs[j + 1]), self.read_mode)
        if self.check_finite:
            _check_finite(features, shard, j)
        a, b = int(ts[j]), int(ts[j + 1])
        times = shard.rows("times_data", a, b, self.read_mode)
        tokens = TokenRows(shard.rows("tokens_data", a, b, self.read_mode))
        return VideoRecord(shard.video_ids[j], features, times[:, 0], times[:, 1], tokens)

    def features(self, i: int) -> np.ndarray:
        """Only the ``(T, 512)`` float16 features of video ``i`` (no captions): the embedding passes' fast path."""
        k, j = self.locate(i)
        shard = self._shards[k]
        vs = shard.starts["video_starts"]
        features = shard.rows("video_data", int(vs[j]), int(vs[j + 1]), self.read_mode)
        if self.check_finite:
            _check_finite(features, shard, j)
        return features

    def content_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Per video, in store order: its feature rows and its captions (two int64 arrays), from the shard offsets
        alone. Nothing is read from the data files, so this stays cheap at a million videos in ``pread`` mode."""
        self._ready()
        if not self._shards:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        rows = np.concatenate([np.diff(s.starts["video_starts"]) for s in self._shards])
        captions = np.concatenate([np.diff(s.starts["times_starts"]) for s in self._shards])
        return rows, captions

    def unsampleable(self) -> dict[str, np.ndarray]:
        """Store indices (sorted int64) of the videos the manifest records as not sampleable, by reason
        (``"no_feature_rows"``, ``"no_captions"``: no caption with tokens); a video may have both. Reads no shard
        data. Stores made by ``norton prepare how2`` have none (it skips such videos)."""
        self._ready()
        out = {}
        for reason in mf.UNSAMPLEABLE:
            found = [self._firsts[k] + j for k, s in enumerate(self._shards) for j in s.unsampleable.get(reason, [])]
            out[reason] = np.asarray(sorted(found), dtype=np.int64)
        return out

    def get_by_id(self, video_id: str) -> VideoRecord:
        return self.get(self.index_of(video_id))


class TokenRows(Sequence[np.ndarray]):
    """A video's captions as token id arrays without the -1 padding, cut on access.

    Behaves like a list of int32 arrays (``len``, indexing, slicing, iteration); building the arrays only when
    asked keeps ``store.get`` cheap for aligners that use a few captions of a video.
    """

    __slots__ = ("_ids", "_lengths")

    def __init__(self, padded: np.ndarray) -> None:
        self._ids = padded
        self._lengths: list[int] | None = None

    def _lens(self) -> list[int]:
        if self._lengths is None:
            self._lengths = (self._ids != -1).sum(axis=1).tolist()
        return self._lengths

    def __len__(self) -> int:
        return self._ids.shape[0]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[r] for r in range(*i.indices(len(self)))]
        return self._ids[i, : self._lens()[i]]

    def __iter__(self):
        lens = self._lens()
        return (self._ids[r, : lens[r]] for r in range(len(lens)))

    def __repr__(self) -> str:
        return f"TokenRows({[row.tolist() for row in self]})"


def _check_finite(features: np.ndarray, shard: _Shard, j: int) -> None:
    finite = np.isfinite(features).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        base = int(shard.starts["video_starts"][j])
        raise DataError(
            f"{shard.paths['video_data']}: video {shard.video_ids[j]!r} (index {j}) has non-finite features in "
            f"row {row} (file row {base + row}); {int((~finite).sum())} such rows"
        )


def stack_float32(arrays: Sequence[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """Stack same-shaped float16 arrays into one float32 batch with a single conversion per batch."""
    half = np.stack(arrays)
    if out is None:
        return half.astype(np.float32)
    np.copyto(out, half, casting="same_kind")
    return out
