"""Built-in video feature extractors: ``s3d-howto100m`` (the S3D-G model that made the released HowTo100M,
YouCook2 and MSR-VTT ``*_fps30_512`` features) and ``clip-frames`` (a local CLIP image encoder, one row per
second).

What is registered are light entries (name + Config) whose ``create`` imports torch and builds the network, so
that listing plugins (``norton plugins``) does not import torch.
"""

from __future__ import annotations

from typing import Any

from norton_core import EmptyConfig, FeatureExtractor, hookimpl

from .config import ClipConfig


class S3DHowTo100MEntry(FeatureExtractor):
    """S3D-G text-video model of MIL-NCE trained on HowTo100M: 30 fps, short side 224, centre crop 224, pixels / 255,
    one L2-normalised 512-d float16 row per 30 frames (one per second). Needs ``--weights s3d_howto100m.pth``."""

    name = "s3d-howto100m"
    Config = EmptyConfig

    @classmethod
    def create(cls, config: EmptyConfig, **context: Any) -> Any:  # context: weights, device
        from .s3d import S3DHowTo100M

        return S3DHowTo100M(config, **context)

    def embed(self, chunks: Any) -> Any:  # pragma: no cover - the entry is never built, ``create`` returns the model
        raise NotImplementedError


class ClipFramesEntry(FeatureExtractor):
    """CLIP image encoder from a local model directory (``--weights DIR``): the L2-normalised mean of the image
    embeddings of each second's frames, one float16 row per second. Decoding follows the directory's
    preprocessor_config.json (short side, crop, mean, std)."""

    name = "clip-frames"
    Config = ClipConfig

    @classmethod
    def create(cls, config: ClipConfig, **context: Any) -> Any:  # context: weights, device
        from .clip import ClipFrames

        return ClipFrames(config, **context)

    def embed(self, chunks: Any) -> Any:  # pragma: no cover - the entry is never built, ``create`` returns the model
        raise NotImplementedError


@hookimpl
def norton_register_feature_extractors(register):  # noqa: ANN001 - pluggy passes the Register
    register(S3DHowTo100MEntry)
    register(ClipFramesEntry)
