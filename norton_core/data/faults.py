"""Crash injection for tests: ``NORTON_FAULT=<point>:<n>[,<point>:<n>...]`` SIGKILLs this process the n-th time
``point`` is reached (the engine's convention, reliability.md A4).

Points of data preparation: ``shard_file_renamed`` (after each of a shard's six files is renamed into place) and
``shard_committed`` (after a shard's record is written).
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def fault_point(point: str) -> None:
    spec = os.environ.get("NORTON_FAULT")
    if not spec:
        return
    _counts[point] = _counts.get(point, 0) + 1
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, nth = part.partition(":")
        if name == point and int(nth or 1) == _counts[point]:
            os.kill(os.getpid(), signal.SIGKILL)
