"""Reading small files whose size the reader bounds: recipes, JSON metadata (:func:`read_json`), pickles,
checkpoint files.

:func:`read_bounded` checks the file's type and size *before* reading: a FIFO (which would block forever), a
character device such as ``/dev/zero`` (endless), a directory or a file larger than the limit (a sparse 20 GB file
costs nothing on disk but everything in memory) is refused with one line naming the file and the limit. The file is
opened with ``O_NONBLOCK`` so that opening a FIFO without a writer cannot hang either, and at most ``limit + 1``
bytes are read, so a file that grows after the check is still refused instead of being read whole.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from norton_core.errors import NortonError

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB


def human_bytes(n: int) -> str:
    """``1048576`` -> ``1 MiB``; exact multiples only get a unit (limits are round numbers)."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def read_bounded(path: Path | str, limit: int, what: str, error: type[NortonError] = NortonError) -> bytes:
    """The bytes of the regular file ``path`` (symlinks followed), at most ``limit`` of them.

    :param what: what the file is, for the message (``"a recipe"``, ``"a checkpoint's rng.json"``).
    :param error: the :class:`NortonError` subclass raised (``RecipeError`` for recipes, ...).
    :raises error: one line naming the file and, for an oversized file, its size and ``limit``; also when the
        file is missing or unreadable.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{path}: symbolic link loop; expected {what}") from None
        if exc.errno == errno.ENOENT:
            raise error(f"{path}: not found; expected {what}") from None
        raise error(f"{path}: cannot open {what} ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path}: is {_kind(st.st_mode)}, not a regular file; expected {what}")
        if st.st_size > limit:
            raise error(f"{path}: {st.st_size} bytes, more than the {human_bytes(limit)} limit for {what}")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(limit + 1 - total, 8 * MIB))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise error(f"{path}: grew past the {human_bytes(limit)} limit for {what} while being read")
        return b"".join(chunks)
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def read_text_bounded(path: Path | str, limit: int, what: str, error: type[NortonError] = NortonError) -> str:
    """:func:`read_bounded`, decoded as UTF-8; invalid bytes are an error naming the byte offset."""
    data = read_bounded(path, limit, what, error)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); expected {what}") from None


def read_json(path: Path | str, limit: int, what: str, error: type[NortonError] = NortonError, *,
              expect: type | None = None) -> Any:
    """The JSON value of ``path``, read by :func:`read_bounded`: the one way norton reads a JSON file.

    Every failure is one ``error`` line naming the file: missing, not a regular file, over ``limit``, not UTF-8,
    not JSON (with the position), or, with ``expect`` (``dict`` or ``list``), a value of another type. Callers for
    which a missing file is normal check ``path.exists()`` first and say what they do instead.
    """
    text = read_text_bounded(path, limit, what, error)
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise error(f"{path}: not valid JSON ({exc}); expected {what}") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply; expected {what}") from None
    if expect is not None and not isinstance(value, expect):
        wanted = "a JSON object" if expect is dict else "a JSON list" if expect is list else expect.__name__
        raise error(f"{path}: expected {wanted} ({what}), got {type(value).__name__}")
    return value
