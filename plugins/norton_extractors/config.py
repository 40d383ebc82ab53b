"""Options of the built-in extractors (no torch import: ``norton plugins`` and ``norton describe`` read them)."""

from __future__ import annotations

import attrs

from norton_core import option


@attrs.frozen
class ClipConfig:
    frames_per_second: int = option(1, ge=1, le=30, help="frames embedded per second of video (one row per second)")
