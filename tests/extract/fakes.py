"""A tiny feature extractor for the runner's tests: rows a reader can work out by hand, computed in no time.

``tiny-stats`` decodes at 4 fps, short side 16, centre crop 16, 4 frames per row; its row for a chunk is the mean
pixel of each of the 4 frames, then the largest pixel of each (8 values), on pixels / 255 - 0.5 (so the runner's
mean/std step is exercised), repeated to the ``width`` option.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import attrs

from norton_core import DecodeSpec, FeatureExtractor, OutputSpec, hookimpl, option

TINY = DecodeSpec(fps=4, short_side=16, crop=16, frames_per_row=4, mean=(0.5, 0.5, 0.5))


@attrs.frozen
class TinyConfig:
    delay: float = option(0.0, ge=0.0, help="seconds to sleep per batch (to kill a run midway)")
    width: int = option(8, ge=8, help="row width: the 8 statistics repeated (512 makes rows a model can train on)")
    scale: float = option(1.0, help="factor on every row value")


class TinyStats(FeatureExtractor):
    """Per-frame mean and max of a 4-frame chunk."""

    name = "tiny-stats"
    Config = TinyConfig

    def __init__(self, config: TinyConfig, weights: Path | None = None, device: str = "cpu") -> None:
        self.config, self.decode, self.output = config, TINY, OutputSpec(width=config.width, dtype="float16")

    def embed(self, chunks: Any) -> Any:
        import torch

        if self.config.delay:
            time.sleep(self.config.delay)
        flat = chunks.flatten(2)  # (N, F, 3*H*W)
        stats = torch.cat([flat.mean(dim=2), flat.amax(dim=2)], dim=1)
        return self.config.scale * stats.repeat(1, -(-self.config.width // 8))[:, : self.config.width]


@hookimpl
def norton_register_feature_extractors(register):  # noqa: ANN001
    register(TinyStats)


def run_cli(argv: list[str]) -> int:
    """``norton`` with the built-in plugins plus this module's extractor (for subprocess tests)."""
    from norton_core.cli import main
    from norton_core.plugin.manager import set_default_plugins
    from norton_core.testing import builtin_plugins

    plugins = builtin_plugins()
    plugins.register(sys.modules[__name__], name="tiny")
    set_default_plugins(plugins)
    return main(argv)


if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:]))
