"""The built-in aligners batch their clips with norton's default collate (flat ``(V*C, ...)`` tensors)."""

from __future__ import annotations

from norton_core.data.collate import collate_clips as collate

__all__ = ["collate"]
