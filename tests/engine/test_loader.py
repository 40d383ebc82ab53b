"""DataLoader workers and the job's SIGTERM: every thread of a worker, however it was born, has SIGTERM blocked, so
a signal from anyone but the main process leaves the worker running; the main process's own mask is unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from norton_core.engine import loader as dataio
from tests.engine.fakes import thread_at_fork

SIGTERM_BIT = 1 << (signal.SIGTERM - 1)
_born_at_fork = False


def _maybe_thread_at_fork() -> None:
    if _born_at_fork:
        thread_at_fork()


os.register_at_fork(after_in_child=_maybe_thread_at_fork)


@pytest.fixture
def thread_born_at_fork() -> Iterator[None]:
    """Every child forked meanwhile starts an idle thread before anything else runs in it (as the thread pools of
    some torch builds do in a DataLoader worker before ``worker_init_fn``)."""
    global _born_at_fork
    _born_at_fork = True
    try:
        yield
    finally:
        _born_at_fork = False


def _blocked(tid: int) -> bool:
    status = open(f"/proc/self/task/{tid}/status").read()  # noqa: SIM115 - /proc, read at once
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:"))
    return bool(int(mask, 16) & SIGTERM_BIT)


class ThreadMasks:
    """Item i: (worker pid, {thread name: SIGTERM blocked}) of the worker that reads it."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        names = {t.native_id: t.name for t in threading.enumerate()}
        tasks = {names.get(int(tid), f"native-{tid}"): _blocked(int(tid)) for tid in os.listdir("/proc/self/task")}
        time.sleep(0.05)
        return {"pid": os.getpid(), "masks": tasks}


def _loader(workers: int):  # noqa: ANN202 - the loader's own type is private
    import torch

    return dataio._Loader(torch.utils.data.DataLoader(
        ThreadMasks(), batch_size=None, num_workers=workers, worker_init_fn=dataio.ignore_sigterm, timeout=60))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread masks from /proc")
def test_every_worker_thread_is_born_with_sigterm_blocked(thread_born_at_fork):
    before = _blocked(threading.get_native_id())
    items = list(_loader(2))
    assert _blocked(threading.get_native_id()) == before is False  # the main process still takes SIGTERM
    for item in items:
        masks = item["masks"]
        assert "born-at-fork" in masks and "MainThread" in masks
        # the norton-sigterm thread waits in sigwaitinfo, which unblocks the signal for it alone while it waits
        assert {name for name, blocked in masks.items() if not blocked} <= {"norton-sigterm"}, masks


def test_sigterm_from_an_unrelated_process_leaves_the_workers_running(thread_born_at_fork):
    """``kill -TERM`` to each worker (process-directed, as a group signal is) from a process that is not their
    parent: the workers go on and every item arrives."""
    batches = iter(_loader(2))
    first = [next(batches), next(batches)]
    pids = sorted({item["pid"] for item in first})
    assert len(pids) == 2
    subprocess.run(["kill", "-TERM", *map(str, pids)], check=True)
    time.sleep(0.3)
    rest = list(batches)
    assert len(first) + len(rest) == 6
    assert {item["pid"] for item in rest} <= set(pids)
