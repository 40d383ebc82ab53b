"""Built-in clip samplers: ``overlapped`` (pretraining, VideoCLIP's sampler) and ``aligned`` (video span = caption
span, for retrieval embedding and evaluation). Both batch their clips with norton's default collate (flat
``(V*C, ...)`` tensors)."""

from __future__ import annotations

from norton_core import hookimpl

from .aligners import AlignedAligner, OverlappedAligner

__all__ = ["AlignedAligner", "OverlappedAligner"]


@hookimpl
def norton_register_aligners(register):  # noqa: ANN001 - pluggy passes the Register
    register(OverlappedAligner)
    register(AlignedAligner)
