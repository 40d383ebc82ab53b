"""Durable, atomic file writes shared by the shard writer and the checkpointer.

A name becomes visible only when its content is complete and on disk: write to a staging name, fsync the file,
rename, fsync the directory (so the rename itself survives a crash).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (the caller makes the name visible atomically)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def replace_atomic(path: Path, data: bytes) -> None:
    """Replace ``path``'s content atomically: a reader sees nothing, the old bytes or the new bytes, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write_durable(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)
