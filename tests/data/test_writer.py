"""The output lock of ``norton prepare``: two prepares into one ``--out`` never interleave (the second is refused at
once, naming the holder), and a store that one of them finishes verifies."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from norton_core.data.synthetic import SyntheticPaths
from norton_core.data.writer import OutputLock
from norton_core.errors import DataError

ENV = {**os.environ, "NORTON_LOAD_PLUGINS": "norton", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def norton(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "norton_core.cli", *args], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_the_lock_refuses_a_second_holder_and_is_released(tmp_path):
    with OutputLock(tmp_path):
        with pytest.raises(DataError, match=rf"output directory {tmp_path} is locked by pid {os.getpid()} on host "
                                            r".*; another norton prepare is writing it"):
            OutputLock(tmp_path).acquire()
    with OutputLock(tmp_path):
        pass


def test_a_prepare_into_a_locked_out_is_refused_and_touches_nothing(small_raw: SyntheticPaths, tmp_path):
    """Another process holds --out: the prepare exits 2 with one line, and its staging clean-up never runs."""
    out = tmp_path / "prepared"
    (out / "train").mkdir(parents=True)
    staging = out / "train" / ".train_0.npy.tmp-123"
    staging.write_bytes(b"the other prepare's half-written shard")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from norton_core.data.writer import OutputLock; "
                               f"lock = OutputLock({str(out)!r}); lock.acquire(); print('held', flush=True); "
                               "sys.stdin.read()"], env=ENV, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = norton("prepare", "how2", str(small_raw.root), "--out", str(out), "--no-progress")
        _, err = second.communicate(timeout=120)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert second.returncode == 2, err
    assert err.strip().splitlines()[-1] == (f"norton: error: output directory {out} is locked by pid {holder.pid} "
                                           f"on host {os.uname().nodename} since " + err.split(" since ")[1].split(";")[0]
                                           + "; another norton prepare is writing it; wait for it to end or choose "
                                             "another --out")
    assert staging.read_bytes() == b"the other prepare's half-written shard"
    assert not (out / "train" / "manifest.json").exists()


@pytest.mark.slow
def test_two_prepares_with_different_options_started_together_leave_a_store_that_verifies(
        small_raw: SyntheticPaths, tmp_path):
    """Before the lock, 4 of 5 such pairs left a store `norton verify` rejects while one process exited 0."""
    from norton_core.data.verify import verify_store

    out = tmp_path / "out"
    pair = [norton("prepare", "how2", str(small_raw.root), "--out", str(out), "--no-progress", "--shard-size", size,
                   "--workers", "1") for size in ("4", "5")]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in pair]
    assert sorted(code for code, _ in results) == [0, 2], results  # one wrote the store, the other was refused
    refused = next(err for code, err in results if code == 2)
    assert "is locked by pid" in refused or "prepared with other options" in refused, refused
    for split in ("train", "val"):
        assert verify_store(out / split, progress=False)["videos"] > 0
