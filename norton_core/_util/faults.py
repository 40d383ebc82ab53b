"""Fault points for crash tests: ``NORTON_FAULT=<point>:<n>[:TERM|:TERMGROUP][,...]`` sends this process SIGKILL
(SIGTERM with ``:TERM``; SIGTERM to its whole process group from a helper process, as a scheduler preempting a job
does, with ``:TERMGROUP``) the n-th time the named point is reached (counted per process). Unset in normal runs,
where a point costs one dict lookup.

Training points: ``step`` (after an optimizer step); inside a checkpoint commit, after each file is written and
fsynced (``ckpt_model``, ``ckpt_optimizer``, ``ckpt_rng``, ``ckpt_loss``, ``ckpt_batches``, ``ckpt_state``), then
``ckpt_manifest``, ``ckpt_before_rename``, on a re-save of an existing step ``ckpt_replace_aside`` (the old copy
renamed aside, the new one still staged) and ``ckpt_replace_renamed`` (the new one in place, the old one not yet
deleted), then ``ckpt_after_rename``, ``ckpt_after_latest`` and ``ckpt_purge`` (between renaming an old
checkpoint aside and deleting it); the same for the ``best`` checkpoint as ``best_<file>``, ``best_manifest``,
``best_before_rename``, ``best_replace_aside``, ``best_replace_renamed`` and ``best_after_rename``; in a retrieval
round ``retrieval_embed`` (after each embedding batch), ``retrieval_index`` (after the index is built) and
``retrieval_batches`` (after the batches are fixed).

Data preparation points: ``shard_file_renamed`` (after each of a shard's six files is renamed into place) and
``shard_committed`` (after a shard's record is written).

Feature extraction points: ``extract_batch`` (after each batch of chunks is embedded, before its rows are stored),
``extract_video_written`` (after a video's ``.npy`` is renamed into place) and, in a decoding process,
``extract_decode`` (when it starts on a video).
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "TERMGROUP": signal.SIGTERM}


def _targets() -> dict[str, tuple[int, str]]:
    out = {}
    for part in filter(None, (p.strip() for p in os.environ.get("NORTON_FAULT", "").split(","))):
        name, _, rest = part.partition(":")
        nth, _, sig = rest.partition(":")
        out[name] = (int(nth or 1), sig or "KILL")
    return out


def fault_point(name: str) -> None:
    """Count one pass through ``name``; signal ourselves when ``NORTON_FAULT`` asks for this pass."""
    if "NORTON_FAULT" not in os.environ:
        return
    _counts[name] = _counts.get(name, 0) + 1
    nth, sig = _targets().get(name, (0, "KILL"))
    if nth == _counts[name]:
        if sig == "TERMGROUP":
            # from a helper process, as a scheduler would: DataLoader workers treat their parent's SIGTERM as a
            # shutdown request, anyone else's as the job's preemption
            helper = os.fork()
            if helper == 0:
                os.killpg(os.getpgrp(), signal.SIGTERM)
                os._exit(0)
            os.waitpid(helper, 0)
        else:
            os.kill(os.getpid(), _SIGNALS[sig])
