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


def test_a_directory_lock_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / ".lock").mkdir()  # the lock's name is taken by a directory
    with pytest.raises(NortonError, match=r"\.lock: cannot open the lock of directory .*\(Is a directory\)"):
        DirectoryLock(tmp_path).acquire()
