"""An exclusive lock on a directory that one writer owns at a time: a training run's directory, the ``--out`` of
``norton prepare``.

The lock is an ``flock`` on ``<directory>/.lock``. The kernel drops it when the holder dies (even by SIGKILL), so
it never goes stale; forked children (DataLoader workers, pool processes) close their copy, so a child that
outlives its parent cannot keep the directory locked. The file records who holds it (pid, host, since when), which
the refusal names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from norton_core.errors import NortonError

LOCK_FILE = ".lock"

#: lock descriptors this process holds; forked children close their copies
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    # A forked child shares the lock's open file description: if it outlived a SIGKILLed parent (a DataLoader
    # worker notices its parent died only after a few seconds), the directory would stay locked. Closing (never
    # unlocking, which would release the parent's lock too) drops the child's reference.
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


#: how long a refused process waits for the holder to write who it is (it writes right after taking the lock)
HOLDER_WAIT_S = 1.0


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says. A holder writes that line just after taking the lock, so a process
    refused in between reads an empty file: it waits a moment for the line rather than name nobody."""
    deadline = time.monotonic() + HOLDER_WAIT_S
    while True:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if holder or time.monotonic() >= deadline:
            return holder or "another process"
        time.sleep(0.01)


class DirectoryLock:
    """An exclusive, non-blocking ``flock`` on ``<directory>/.lock``; a second holder gets ``error`` at once.

    Subclasses (or callers, through ``advice``) say what the user should do when the directory is busy.
    """

    error: type[NortonError] = NortonError
    #: empty the file when the lock is released: a directory whose content is compared byte for byte (a generated
    #: dataset, rerun after a kill) then holds the same empty ``.lock`` whoever wrote it last
    clear_on_release = False

    def __init__(self, directory: Path, what: str = "directory", advice: str = "wait for it to finish") -> None:
        self.path = Path(directory) / LOCK_FILE
        self.what, self.advice = what, advice
        self.fd: int | None = None

    def busy_message(self, holder: str) -> str:
        return f"{self.what} {self.path.parent} is locked by {holder}; {self.advice}"

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:  # a read-only directory, a .lock that is a directory...
            raise self.error(f"{self.path}: cannot open the lock of {self.what} {self.path.parent} "
                             f"({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise self.error(self.busy_message(holder)) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {stamp}\n".encode(), 0)
        self.fd = fd
        _HELD.add(fd)

    def release(self) -> None:
        if self.fd is not None:
            _HELD.discard(self.fd)
            if self.clear_on_release:
                os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
