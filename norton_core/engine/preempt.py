"""Graceful preemption: SIGTERM asks the loop to commit a checkpoint at the next step boundary and stop, instead of
dying mid-step and losing the work since the last checkpoint."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any, ClassVar


class Preemption:
    """While active, SIGTERM only sets :attr:`requested`; the loop checks it after each optimizer step.

    Blocks nest: an inner ``with Preemption() as p`` gets the outermost active one (its flag and its handler), so
    that ``train`` can hold one over both stages of a two-stage recipe and ``norton run`` one over the whole command,
    and no moment between them falls back to SIGTERM's default action (the process dies without a word).

    :param then: what SIGTERM does after the outermost block ends: by default what it did before the block;
        ``signal.SIG_IGN`` for a program whose only work left is to exit (its run's work is committed, and a signal
        that comes now must not turn a finished command into one killed by SIGTERM).
    """

    _active: ClassVar[Preemption | None] = None

    def __init__(self, *, then: Any = None) -> None:
        self.requested = False
        self._then = then
        self._previous: Any = None
        self._outer: Preemption | None = None
        self._pid = 0
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __enter__(self) -> Preemption:
        active = Preemption._active
        # shared only where it is this process's SIGTERM handler now: not one a forked child inherited, nor one that
        # other code replaced with its own handler since
        if active is not None and active._pid == os.getpid() and signal.getsignal(signal.SIGTERM) == active._handle:
            return active
        # signal handlers can only be installed from the main thread (a notebook's worker thread keeps the default)
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._outer, self._pid, self._installed = active, os.getpid(), True
            Preemption._active = self
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if not self._installed:
            return
        self._installed = False
        Preemption._active = self._outer
        after = self._previous if self._then is None else self._then
        if after is not None:  # None: a handler installed outside Python, which cannot be put back; ours stays
            signal.signal(signal.SIGTERM, after)


# set by the ``norton`` and ``norton-run`` programs: their command is the process's last work
_process_ends = False


def command_is_the_process() -> None:
    """Say that this process ends when its command does (the ``norton`` programs; not a test or a notebook calling
    the command in-process): :func:`until_exit` then leaves SIGTERM ignored."""
    global _process_ends
    _process_ends = True


@contextlib.contextmanager
def until_exit(log: Callable[[str], None], *, process_ends: bool | None = None) -> Iterator[Preemption]:
    """For a command whose last work is this block (``norton run``): SIGTERM is the preemption flag inside it and,
    where the process ends with the command, ignored after it while the process exits, so that a scheduler's signal
    that comes after the run's work is committed does not make a finished job look killed. A SIGTERM the run did
    not act on (it came during the evaluation after the last step, or later) is said in one line.

    :param process_ends: whether the process ends after the block (default: :func:`command_is_the_process` was
        called); where it lives on, SIGTERM then does again what it did before the block.
    """
    ends = _process_ends if process_ends is None else process_ends
    with Preemption(then=signal.SIG_IGN if ends else None) as preempt:
        yield preempt
    if preempt.requested:
        log("norton: SIGTERM came after the last training step; the work was finished and written first (nothing "
            "to resume)")
