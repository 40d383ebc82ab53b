"""A complete third-party aligner plugin: one clip per sampled caption, with a per-clip weight that a loss uses."""

from __future__ import annotations

import math

import attrs
import numpy as np
import torch

from norton_core import Aligner, DataError, Loss, build_text_seq, build_video_seq, hookimpl, option


class WeightedCaptionAligner(Aligner):
    """Each clip is one random caption and exactly its seconds; longer captions are trusted more."""

    name = "example-weighted"

    @attrs.frozen
    class Config:
        clip_per_video: int = option(4, ge=1, help="clips (captions) sampled per video")
        max_video_len: int = option(16, ge=1, help="video tokens (seconds) per clip")
        max_len: int = option(32, ge=5, help="video + caption tokens")
        min_weight: float = option(0.2, gt=0.0, le=1.0, help="weight of a one-token caption")

    def __init__(self, config: Config, special_tokens) -> None:
        self.config, self.special_tokens = config, special_tokens
        self.clips_per_video = config.clip_per_video
        self.text_len = config.max_len - config.max_video_len

    def __call__(self, record, rng) -> dict[str, np.ndarray]:
        cfg, seconds = self.config, record.features.shape[0]
        picks = sorted(rng.randrange(len(record.tokens)) for _ in range(cfg.clip_per_video))  # temporal order
        clips = []
        for i in picks:
            start = min(int(math.floor(record.starts[i])), seconds - 1)
            end = min(max(int(math.ceil(record.ends[i])), start + 1), seconds)
            vfeats, vmasks = build_video_seq(record.features, start, end, cfg.max_video_len)
            caps, cmasks = build_text_seq(np.asarray(record.tokens[i], dtype=np.int64), self.special_tokens,
                                          self.text_len)
            share = min(1.0, len(record.tokens[i]) / (self.text_len - 3))
            clips.append((caps, cmasks, vfeats, vmasks, cfg.min_weight + (1 - cfg.min_weight) * share))
        caps, cmasks, vfeats, vmasks, weights = zip(*clips, strict=True)
        return {"caps": np.stack(caps), "cmasks": np.stack(cmasks), "vfeats": np.stack(vfeats),
                "vmasks": np.stack(vmasks), "clip_weight": np.asarray(weights, dtype=np.float32)}

    def collate(self, items, video_ids):
        batch = super().collate(items, video_ids)  # the default: every key as flat (V*C, ...) tensors
        batch["clip_weight"] = batch["clip_weight"] / batch["clip_weight"].mean()  # weights average 1 per batch
        return batch


class WeightedNCE(Loss, torch.nn.Module):
    """Symmetric InfoNCE whose per-clip terms are weighted by the aligner's ``clip_weight``."""

    name = "example-weighted-nce"
    autocast = False  # the default, stated: run in float32 on float32 outputs

    @attrs.frozen
    class Config:
        temperature: float = option(1.0, gt=0.0, help="logits are similarities divided by this")

    def __init__(self, config: Config, rank: int = 0, world_size: int = 1) -> None:
        torch.nn.Module.__init__(self)
        self.temperature = config.temperature

    def forward(self, outputs: dict, batch: dict) -> dict:
        if "clip_weight" not in batch:
            raise DataError("loss 'example-weighted-nce' needs batch['clip_weight']: use [aligner] name = "
                            "\"example-weighted\"")
        logits = outputs["pooled_video"] @ outputs["pooled_text"].T / self.temperature
        target = torch.arange(len(logits), device=logits.device)
        per_clip = (torch.nn.functional.cross_entropy(logits, target, reduction="none")
                    + torch.nn.functional.cross_entropy(logits.T, target, reduction="none")) / 2
        weight = batch["clip_weight"].to(per_clip)
        loss = (weight * per_clip).sum() / weight.sum()
        return {"loss": loss, "nce_loss": loss, "clip_weight_mean": weight.mean().detach(),
                "clip_weight_min": weight.min().detach()}


@hookimpl
def norton_register_aligners(register):
    register(WeightedCaptionAligner)


@hookimpl
def norton_register_losses(register):
    register(WeightedNCE)
