"""Plain ``.npy`` files without pickle: header parsing, streamed writing and crash-safe renames.

We write arrays exactly as ``np.save`` would (version 1.0 header padded to 64 bytes) but stream the rows, so a shard
of several GB never sits in memory: the header is reserved first and patched once the row count is known. Headers
are read with numpy's own parser (a literal, never a pickle); anything but a plain little-endian C-order array is
refused by the callers.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from norton_core.errors import DataError

#: size of the header we reserve; np.save produces exactly this for any 1-D/2-D shape with < 40-digit dimensions
HEADER_BYTES = 128


def read_header(path: Path) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """``(dtype, shape, fortran_order, data_offset)`` of an ``.npy`` file, read without loading the data."""
    try:
        with open(path, "rb") as fh:
            major, minor = np.lib.format.read_magic(fh)
            if (major, minor) == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif (major, minor) in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {major}.{minor}")
            offset = fh.tell()
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing") from None
    except (ValueError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects (dtype {dtype}); only plain numeric arrays are accepted")
    return dtype, tuple(int(d) for d in shape), bool(fortran), offset


class NpyStreamWriter:
    """Append rows of a fixed trailing shape to a staged ``.npy`` file; :meth:`close` patches the header and
    fsyncs. The file is written under ``tmp_path`` and renamed by the caller."""

    def __init__(self, tmp_path: Path, dtype: str, row_shape: tuple[int, ...]) -> None:
        self.path = tmp_path
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._fh = open(tmp_path, "wb")
        self._fh.write(b"\0" * HEADER_BYTES)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        self._fh.write(rows.tobytes())
        self.rows += rows.shape[0]

    def close(self) -> tuple[int, ...]:
        header: dict[str, Any] = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, *self.row_shape),
        }
        self._fh.seek(0)
        np.lib.format.write_array_header_1_0(self._fh, header)
        if self._fh.tell() != HEADER_BYTES:  # would corrupt the data: a real error, not an assert
            raise RuntimeError(f"{self.path}: .npy header is {self._fh.tell()} bytes, expected {HEADER_BYTES}")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        return header["shape"]

    def abort(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


def hash_file(path: Path, chunk_bytes: int) -> tuple[str, list[str]]:
    """sha256 of the whole file and of each ``chunk_bytes`` block (blocks locate a corruption to a row range)."""
    whole = hashlib.sha256()
    chunks: list[str] = []
    buf = bytearray(min(chunk_bytes, 1 << 22))
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            block = hashlib.sha256()
            got = 0
            while got < chunk_bytes:
                n = fh.readinto(view[: min(len(buf), chunk_bytes - got)])
                if not n:
                    break
                whole.update(view[:n])
                block.update(view[:n])
                got += n
            if got == 0:
                break
            chunks.append(block.hexdigest())
            if got < chunk_bytes:
                break
    return whole.hexdigest(), chunks
