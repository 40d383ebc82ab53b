"""Random weights for the built-in extractors' tests: an S3D-G state dict and a tiny CLIP model directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from norton_extractors.s3dg import S3DG


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for every entry: convolutions with He (fan-in) scaling so that the signal survives the ~20
    layers, BatchNorm parameters and statistics near the identity, linear maps with 1/sqrt(fan-in) scaling."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in S3DG().state_dict().items():
        if value.dim() == 5:
            out[key] = torch.randn(value.shape, generator=gen) * math.sqrt(2.0 / value[0].numel())
        elif ".bn" in key and key.endswith(("running_var", "weight")):
            out[key] = 1.0 + 0.2 * torch.rand(value.shape, generator=gen)
        elif ".bn" in key and key.endswith(("running_mean", "bias")):
            out[key] = 0.01 * torch.randn(value.shape, generator=gen)
        elif value.dtype.is_floating_point:
            out[key] = torch.randn(value.shape, generator=gen) / math.sqrt(value.shape[-1])
        else:
            out[key] = value
    return out


def make_tiny_clip(path: Path) -> Path:
    """A tiny random CLIP model saved as a local model directory (32 x 32 images, 16-d embeddings), with an image
    processor config asking for short side 36, crop 32 and its own mean and std."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                        text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "vocab_size": 99, "bos_token_id": 0,
                                     "eos_token_id": 2, "pad_token_id": 1},
                        projection_dim=16)
    CLIPModel(config).save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": 36}, "crop_size": {"height": 32, "width": 32},
        "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}))
    return path
