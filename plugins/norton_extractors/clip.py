"""The ``clip-frames`` feature extractor: a CLIP image encoder (transformers' ``CLIPModel``) from a local model
directory; each second's frames are embedded one by one and their L2-normalised embeddings averaged into the row.

Frames are decoded as the model's ``preprocessor_config.json`` asks (short side ``size``, centre crop
``crop_size``, ``image_mean``/``image_std``), but resized by FFmpeg's scaler rather than the image processor's
PIL resize, so pixel values differ slightly from those of ``CLIPImageProcessor``. Like every extractor, the last
second of a video is padded with black frames, which take part in its row's average.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from norton_core import DecodeSpec, FeatureExtractor, OutputSpec, PluginError

from .config import ClipConfig

#: OpenAI CLIP's pixel statistics, used when the model directory has no preprocessor_config.json
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _side(value: Any, *keys: str) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in keys:
            if isinstance(value.get(key), int):
                return value[key]
    return None


def decode_spec(model_dir: Path, image_size: int, frames_per_second: int) -> DecodeSpec:
    """The decoding the model's image processor describes (its config file), or CLIP's defaults."""
    path = model_dir / "preprocessor_config.json"
    config: dict[str, Any] = {}
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise PluginError(f"{path}: unreadable image processor config ({exc})") from None
    crop = _side(config.get("crop_size"), "height", "shortest_edge") or image_size
    short = _side(config.get("size"), "shortest_edge", "height") or crop
    mean = tuple(float(v) for v in config.get("image_mean", CLIP_MEAN))
    std = tuple(float(v) for v in config.get("image_std", CLIP_STD))
    if len(mean) != 3 or len(std) != 3:
        raise PluginError(f"{path}: image_mean and image_std must have 3 values (RGB)")
    return DecodeSpec(fps=frames_per_second, short_side=short, crop=crop, frames_per_row=frames_per_second,
                      mean=mean, std=std)


class ClipFrames(FeatureExtractor):
    """CLIP image embeddings of each second's frames, averaged: one L2-normalised float16 row per second."""

    name = "clip-frames"
    Config = ClipConfig

    def __init__(self, config: ClipConfig, weights: Path | None = None, device: str = "cpu") -> None:
        from transformers import CLIPModel

        if weights is None or not Path(weights).is_dir():
            raise PluginError("feature extractor 'clip-frames' needs --weights DIR: a local CLIP model directory "
                              "(config.json, model.safetensors, preprocessor_config.json)")
        model_dir = Path(weights)
        try:
            model = CLIPModel.from_pretrained(model_dir, local_files_only=True, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise PluginError(f"{model_dir}: not a CLIP model directory with safetensors weights ({exc})") from None
        self.config, self.device = config, torch.device(device)
        self.vision, self.projection = model.vision_model.eval().to(self.device), model.visual_projection.to(self.device)
        clip_config: Any = model.config  # transformers' stubs allow a dict or None for its parts
        self.decode = decode_spec(model_dir, int(clip_config.vision_config.image_size), config.frames_per_second)
        self.output = OutputSpec(width=int(clip_config.projection_dim), dtype="float16")

    @torch.inference_mode()
    def embed(self, chunks: torch.Tensor) -> torch.Tensor:
        n, f = chunks.shape[:2]
        pooled = self.vision(pixel_values=chunks.to(self.device).flatten(0, 1)).pooler_output
        frames = torch.nn.functional.normalize(self.projection(pooled).float(), dim=1)
        return torch.nn.functional.normalize(frames.view(n, f, -1).mean(dim=1), dim=1)
