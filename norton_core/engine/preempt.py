"""Graceful preemption : SIGTERM asks the loop to commit a checkpoint at the next step boundary
and stop, instead of dying mid-step and losing the work since the last checkpoint."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class Preemption:
    """While active, SIGTERM only sets :attr:`requested`; the loop checks it after each optimizer step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __enter__(self) -> Preemption:
        # signal handlers can only be installed from the main thread (a notebook's worker thread keeps the default)
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
