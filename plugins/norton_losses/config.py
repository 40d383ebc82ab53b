"""Options of the built-in losses (no torch import: the CLI reads them at start-up)."""

from __future__ import annotations

from typing import Literal

import attrs

from norton_core import option

#: smallest fine-grained alpha: exp arguments stay >= -80 (see norton_losses.finegrained)
MIN_ALPHA = 0.025


@attrs.frozen
class NortonConfig:
    sequence_weight: float = option(0.1, ge=0.0, help="lambda: weight of L_video (0 = clip loss only)")
    sequence_length: int = option(8, ge=1, help="K: consecutive clips per sequence (must divide the batch)")
    prompt_ratio: float = option(0.3, ge=0.0, le=1.0, help="alignable prompt bucket value = this quantile of the "
                                                           "positive similarities; 0 = no bucket")
    video_epsilon: float = option(0.1, gt=0.0, help="entropic scale of the sequence OT")
    clip_epsilon: float = option(1.0, gt=0.0, help="entropic scale of the faulty-negative OT (reference: 1)")
    sinkhorn_iterations: int = option(50, ge=1)
    beta: float = option(0.3, ge=0.0, le=1.0, help="weight of the OT plan in the clip targets")
    clip_temperature: float = option(1.0, gt=0.0, help="X = Zv Zt^T / this in the clip loss and its OT (reference: "
                                                       "1); set it to the first stage's loss.temperature")
    faulty_negatives: bool = option(True, help="false = plain symmetric InfoNCE clip loss (VideoCLIP)")
    alpha: float = option(1.0, ge=MIN_ALPHA, help="temperature of the fine-grained log-sum-exp")
    fusion_weight: float = option(0.5, ge=0.0, help="w in S = (w S_mean + S_lse) / (w + 1)")
    sequence_similarity: Literal["fused", "mean"] = option("fused", help="S of L_video: fused = mean-pooled and "
                                                                         "fine-grained (the paper); mean = S_mean only")
    temperature: float = option(0.07, ge=0.01, le=1.0, help="initial tau of the sequence logits")
    learn_temperature: bool = option(False, help="fix: learn tau (a registered parameter); reference: fixed")
    lse_padding_bias: bool = option(True, help="reference: padded tokens add alpha log N to the fine-grained "
                                               "similarity; false = exact masking")
    fine_grained_cache_mb: float = option(640.0, ge=0.0, help="memory for keeping fine-grained block exps between "
                                                               "forward and backward (the rest is recomputed)")
    video_similarity_norm: Literal["minmax", "none"] = option("minmax", help="reference: global min-max of S_mean, "
                                                                             "t2v, v2t; none = raw (from scratch)")


@attrs.frozen
class NCEConfig:
    temperature: float = option(1.0, gt=0.0, help="logits = Zv Zt^T / temperature (VideoCLIP: 1; the demos: 5, so "
                                                  "that the first logits are small and the loss starts at chance)")
    learn_temperature: bool = option(False, help="learn the temperature from its start value (a registered parameter "
                                                 "on a log scale, kept in [0.01, 100]); VideoCLIP: fixed")
