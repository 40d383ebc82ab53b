"""Built-in clip samplers: ``overlapped`` (pretraining, VideoCLIP's sampler) and ``aligned`` (video span = caption
span, for retrieval embedding and evaluation), plus :func:`collate` for flat ``(V*C, ...)`` batches."""

from __future__ import annotations

from norton_core import hookimpl

from .aligners import AlignedAligner, OverlappedAligner
from .collate import collate

__all__ = ["AlignedAligner", "OverlappedAligner", "collate"]


@hookimpl
def norton_register_aligners(register):  # noqa: ANN001 - pluggy passes the Register
    register(OverlappedAligner)
    register(AlignedAligner)
