"""The directory lock shared by runs and prepares: one holder at a time, released by the kernel, one-line
refusals."""

from __future__ import annotations

import os

import pytest

from norton_core._util.dir_lock import DirectoryLock
from norton_core.errors import NortonError


def test_a_second_holder_is_refused_naming_the_first_and_the_advice(tmp_path):
    first = DirectoryLock(tmp_path, "output directory", "choose another --out")
    with first:
        with pytest.raises(NortonError, match=rf"^output directory {tmp_path} is locked by pid {os.getpid()} on "
                                              r"host .* since .*; choose another --out$"):
            DirectoryLock(tmp_path, "output directory", "choose another --out").acquire()
    with DirectoryLock(tmp_path):  # released
        pass


def test_a_process_refused_before_the_holder_wrote_its_line_still_names_the_holder(tmp_path):
    """The holder takes the lock, then writes who it is: a second process refused in that window waits for the line
    (a pair of prepares started together hit it on CI and named "another process")."""
    import fcntl
    import threading

    fd = os.open(tmp_path / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, nothing written yet
    writer = threading.Timer(0.2, lambda: os.pwrite(fd, b"pid 4242 on host elsewhere since now\n", 0))
    writer.start()
    try:
        with pytest.raises(NortonError, match=r"is locked by pid 4242 on host elsewhere since now; wait for it"):
            DirectoryLock(tmp_path).acquire()
    finally:
        writer.join()
        os.close(fd)
    with DirectoryLock(tmp_path):  # the kernel dropped the lock with the descriptor
        pass


def test_a_directory_lock_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / ".lock").mkdir()  # the lock's name is taken by a directory
    with pytest.raises(NortonError, match=r"\.lock: cannot open the lock of directory .*\(Is a directory\)"):
        DirectoryLock(tmp_path).acquire()
