"""Fault points for crash tests: ``NORTON_FAULT=<point>:<n>[,<point>:<n>...]`` SIGKILLs this process the n-th time
the named point is reached (counted per process). Unset in normal runs, where a point costs one dict lookup.

Points: ``step`` (after an optimizer step); inside a checkpoint commit, after each file is written and fsynced
(``ckpt_model``, ``ckpt_optimizer``, ``ckpt_rng``, ``ckpt_loss``, ``ckpt_batches``, ``ckpt_state``), then
``ckpt_manifest``, ``ckpt_before_rename``, ``ckpt_after_rename``, ``ckpt_after_latest`` and ``ckpt_purge`` (between
renaming an old checkpoint aside and deleting it); in a retrieval round ``retrieval_embed`` (after each embedding
batch), ``retrieval_index`` (after the index is built) and ``retrieval_batches`` (after the batches are fixed).
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _targets() -> dict[str, int]:
    spec = os.environ.get("NORTON_FAULT", "")
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, n = part.partition(":")
        out[name] = int(n or 1)
    return out


def fault_point(name: str) -> None:
    """Count one pass through ``name``; kill -9 ourselves when ``NORTON_FAULT`` asks for this pass."""
    if "NORTON_FAULT" not in os.environ:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _targets().get(name) == _counts[name]:
        os.kill(os.getpid(), signal.SIGKILL)
