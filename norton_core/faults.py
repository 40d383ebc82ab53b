"""Fault points for crash tests : ``NORTON_FAULT=<point>:<n>[:TERM][,...]`` sends this process
SIGKILL (or SIGTERM with ``:TERM``) the n-th time the named point is reached (counted per process). Unset in normal
runs, where a point costs one dict lookup.

Training points: ``step`` (after an optimizer step); inside a checkpoint commit, after each file is written and
fsynced (``ckpt_model``, ``ckpt_optimizer``, ``ckpt_rng``, ``ckpt_loss``, ``ckpt_batches``, ``ckpt_state``), then
``ckpt_manifest``, ``ckpt_before_rename``, ``ckpt_after_rename``, ``ckpt_after_latest`` and ``ckpt_purge`` (between
renaming an old checkpoint aside and deleting it); in a retrieval round ``retrieval_embed`` (after each embedding
batch), ``retrieval_index`` (after the index is built) and ``retrieval_batches`` (after the batches are fixed).

Data preparation points: ``shard_file_renamed`` (after each of a shard's six files is renamed into place) and
``shard_committed`` (after a shard's record is written).
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}


def _targets() -> dict[str, tuple[int, signal.Signals]]:
    out = {}
    for part in filter(None, (p.strip() for p in os.environ.get("NORTON_FAULT", "").split(","))):
        name, _, rest = part.partition(":")
        nth, _, sig = rest.partition(":")
        out[name] = (int(nth or 1), _SIGNALS[sig or "KILL"])
    return out


def fault_point(name: str) -> None:
    """Count one pass through ``name``; signal ourselves when ``NORTON_FAULT`` asks for this pass."""
    if "NORTON_FAULT" not in os.environ:
        return
    _counts[name] = _counts.get(name, 0) + 1
    nth, sig = _targets().get(name, (0, signal.SIGKILL))
    if nth == _counts[name]:
        os.kill(os.getpid(), sig)
