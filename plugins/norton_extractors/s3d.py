"""The ``s3d-howto100m`` feature extractor: :class:`~norton_extractors.s3dg.S3DG` with the released weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from norton_core import (
    CheckpointError,
    DecodeSpec,
    EmptyConfig,
    FeatureExtractor,
    LazyTensor,
    OutputSpec,
    PluginError,
    load_checkpoint,
)

from .s3dg import EMBEDDING_WIDTH, S3DG

#: entries of the released file that belong to the text tower, which feature extraction does not use
TEXT_TOWER_PREFIX = "text_module."
#: decoding as the released features were made: 30 fps, short side 224, centre crop 224, pixels / 255
S3D_DECODE = DecodeSpec(fps=30, short_side=224, crop=224, frames_per_row=30)


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The released ``s3d_howto100m.pth`` (or any state dict of the same network) read with the restricted
    checkpoint reader: no pickled code runs. Raises :class:`CheckpointError` naming missing or unexpected keys."""
    try:
        tree, placeholders = load_checkpoint(path)
    except CheckpointError as exc:
        if "legacy" in str(exc):
            raise CheckpointError(
                f"{exc}; convert it once with torch's weights-only loader: python -c \"import torch; "
                f"torch.save(torch.load('{path}', weights_only=True), '{path}.zip.pth')\" and pass that file") from None
        raise
    if isinstance(tree, Mapping) and isinstance(tree.get("state_dict"), Mapping):
        tree = tree["state_dict"]
    if not isinstance(tree, Mapping) or not all(isinstance(v, LazyTensor) for v in tree.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors (found {type(tree).__name__}"
                              + (f" holding {', '.join(sorted(placeholders))}" if placeholders else "") + ")")
    expected = S3DG().state_dict()
    given = {str(k): v for k, v in tree.items() if not str(k).startswith(TEXT_TOWER_PREFIX)}
    missing = sorted(k for k in expected if k not in given and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in given if k not in expected)
    if missing or unexpected:
        parts = ([f"missing keys {_names(missing)}"] if missing else []) + \
                ([f"unexpected keys {_names(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"{path}: not an S3D-G (s3d-howto100m) state dict: {'; '.join(parts)}")
    wrong = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})" for k, v in given.items()
             if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise CheckpointError(f"{path}: S3D-G tensors of the wrong shape: {_names(wrong)}")
    return {k: v.load() for k, v in given.items()}


class S3DHowTo100M(FeatureExtractor):
    """S3D-G on 30-frame chunks of 224 x 224 RGB frames: the L2-normalised 512-d ``video_embedding`` per chunk."""

    name = "s3d-howto100m"
    Config = EmptyConfig

    def __init__(self, config: EmptyConfig, weights: Path | None = None, device: str = "cpu") -> None:
        if weights is None:
            raise PluginError("feature extractor 's3d-howto100m' needs its weights: pass --weights s3d_howto100m.pth "
                              "(the S3D-G HowTo100M state dict released with MIL-NCE)")
        self.config = config
        self.decode = S3D_DECODE
        self.output = OutputSpec(width=EMBEDDING_WIDTH, dtype="float16")
        self.device = torch.device(device)
        self.net = S3DG()
        self.net.load_state_dict(read_state_dict(Path(weights)), strict=False)
        self.net.eval().to(self.device)

    @torch.inference_mode()
    def embed(self, chunks: torch.Tensor) -> Any:
        clips = chunks.to(self.device).permute(0, 2, 1, 3, 4)  # (N, F, 3, H, W) -> (N, 3, F, H, W)
        return torch.nn.functional.normalize(self.net(clips).float(), dim=1)
