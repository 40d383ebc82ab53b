"""The ``norton`` loss (Lin et al., ICLR 2024) and the ``videoclip-nce`` baseline.

``norton``: ``L = L_clip + lambda * L_video``.

- ``L_clip`` (faulty-negative exploitation): ``X = Zv Zt^T / clip_temperature`` on the raw pooled vectors (the
  reference: tau = 1; a run post-training a first stage trained at ``loss.temperature = T`` sets T here), an entropic OT
  plan ``Q`` of ``X / clip_epsilon`` with uniform marginals ``1/(2B)`` rescaled by ``2B`` (rows sum to ~1), soft
  targets ``beta Q + (1 - beta) I`` (video rows) and ``beta Q^T + (1 - beta) I`` (text rows), cross-entropy both
  ways, summed. ``faulty_negatives = false`` gives VideoCLIP's symmetric InfoNCE.
- ``L_video`` (video-paragraph contrast): ``S = (w S_mean + S_lse) / (w + 1)`` with rows = captions, cut into
  ``G x G`` blocks of ``K`` consecutive clips, an OT plan per block with an alignable prompt bucket of value
  ``p`` = the ``int(prompt_ratio B)``-th smallest diagonal entry, the bucket dropped, the plan rescaled to mass K,
  ``Y = exp(logit_scale) sum(P * D)`` and cross-entropy over the G sequences both ways.

Every quirk of the reference loss code, decided (default = the reference code's numbers; an option = the fix):

==========================  =========================================  ============================================
quirk                       default (reference)                        option
==========================  =========================================  ============================================
tau of L_video never        fixed logit scale log(1/0.07), a buffer    ``learn_temperature = true``: a registered
trained (plain object)      (the clamp to [0, ln 100] is applied)      nn.Parameter, clamped to [0, ln 100] per use
padded tokens bias the      ``lse_padding_bias = true``: masked rows   ``false``: exact masking, means of LSEs over
fine-grained LSE            add alpha log N (closed form, = reference) valid tokens only (the paper's Eq. 5)
global min-max of S_mean,   ``video_similarity_norm = "minmax"``       ``"none"``: raw cosine / LSE similarities
t2v, v2t                                                               (trains from scratch, see below)
OT in fp16 under --fp16     always float32, whatever the autocast      -
assert on Q that never      no assert; a non-finite plan makes the     -
fires                       loss non-finite (the engine's policy)
bucket not optional         ``prompt_ratio = 0.3``                     ``prompt_ratio = 0``: plain OT with uniform
                                                                       marginals 1/K, no bucket
p carries a gradient path   p is detached (it only enters the          -
                            no-grad OT, so no number changes)
orientation                 L_video rows = text, L_clip rows = video   -
batch-size changes          k = int(prompt_ratio B), G = B / K per     B not a multiple of K: RecipeError
                            batch; k >= 1
==========================  =========================================  ============================================

Min-max normalisation divides by ``max(max - min, 1e-12)`` so that an all-equal matrix gives zeros, not NaN.

**From scratch the full loss stays at chance** (measured by the team on the generated How2-like data): the three
global min-max normalisations squeeze the video-paragraph similarities into [0, 1] set by the batch's extremes, so
the block logits barely separate sequences and their gradient reaches the normalisers only through the extreme
entries. The paper only post-trains an NCE-pretrained (VideoCLIP) model with it: train in two stages
(``videoclip-nce``, or ``sequence_weight = 0``, then ``norton``), or set ``video_similarity_norm = "none"``, with
which the video-paragraph term alone trains from scratch (tests/plugins/test_losses_training.py). On the small toy
problems of that test file (and a 1-layer model on class-prototype features) the default min-max loss did train too,
so how strongly it stalls depends on the data; the option is there to make the comparison easy.

Efficiency: the fine-grained similarity never materialises ``B x B x Tt x Tv`` (see
:mod:`norton_losses.finegrained`); Sinkhorn runs in the stabilised scaling domain with a log-domain fallback (see
:mod:`norton_losses.sinkhorn`). ``alpha`` must be >= 0.025 (the shifted exp stays above -80).

Negatives are the local batch only (no all-gather), as in the reference; ``rank`` and ``world_size`` are unused.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from norton_core import Loss, RecipeError

from .config import NCEConfig, NortonConfig
from .finegrained import fine_grained_sums
from .sinkhorn import bucket_log_marginals, sinkhorn, uniform_log_marginals

#: the reference clamps the video logit scale to [0, ln 100], i.e. tau in [0.01, 1]
MAX_LOGIT_SCALE = math.log(100.0)
#: a learnt NCE temperature stays in [1 / 100, 100] (open_clip keeps its logit scale <= 100 likewise)
NCE_TEMPERATURE_RANGE = (0.01, 100.0)


def minmax(x: torch.Tensor) -> torch.Tensor:
    """``(x - min) / (max - min)`` over the whole tensor (the reference's normaliser), NaN-free when flat."""
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo).clamp_min(1e-12)


class NortonLoss(nn.Module, Loss):
    """Clip-caption contrast with faulty-negative exploitation plus video-paragraph OT contrast: what the registered
    ``norton`` loss (:class:`norton_losses.NortonLossEntry`, its name and options) builds."""

    def __init__(self, config: NortonConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.config = config
        init = torch.tensor(math.log(1.0 / config.temperature), dtype=torch.float32)
        if config.learn_temperature:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init, persistent=False)

    # -- parts -----------------------------------------------------------------------------------------------------

    def clip_loss(self, pooled_video: torch.Tensor, pooled_text: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        logits = pooled_video @ pooled_text.t()  # rows: clips
        if cfg.clip_temperature != 1.0:
            logits = logits / cfg.clip_temperature
        batch = logits.shape[0]
        eye = torch.eye(batch, dtype=logits.dtype, device=logits.device)
        if cfg.faulty_negatives and cfg.beta > 0:
            plan = self._clip_plan(logits.detach())
            target_v = cfg.beta * plan + (1 - cfg.beta) * eye
            target_t = cfg.beta * plan.t() + (1 - cfg.beta) * eye
        else:
            target_v = target_t = eye
        loss_v = -(target_v * F.log_softmax(logits, dim=1)).sum(1).mean()
        loss_t = -(target_t * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
        return loss_v + loss_t

    def similarity(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The fused caption x clip similarity S (B, B), rows = captions (``sequence_similarity = "mean"``: the
        mean-pooled cosine S_mean alone)."""
        cfg = self.config
        norm = (lambda x: minmax(x)) if cfg.video_similarity_norm == "minmax" else (lambda x: x)
        zt = F.normalize(outputs["pooled_text"].float(), dim=-1)
        zv = F.normalize(outputs["pooled_video"].float(), dim=-1)
        s_mean = norm(zt @ zv.t())
        if cfg.sequence_similarity == "mean":  # the paper's Table 7 ablation: no fine-grained term
            return s_mean
        ht = outputs["text_outputs"].float()  # L2-normalised per token inside fine_grained_sums
        hv = outputs["video_outputs"].float()
        mt = outputs["text_mask_outputs"].bool()
        mv = outputs["video_mask_outputs"].bool()
        sum_t2v, sum_v2t = fine_grained_sums(ht, mt, hv, mv, cfg.alpha, cfg.fine_grained_cache_mb)
        nt = mt.sum(1).to(sum_t2v.dtype).clamp_min(1.0)
        nv = mv.sum(1).to(sum_t2v.dtype).clamp_min(1.0)
        if cfg.lse_padding_bias:  # masked rows/columns each add alpha * log(count of the other side)
            sum_t2v = sum_t2v + cfg.alpha * (mt.shape[1] - nt).unsqueeze(1) * nv.log().unsqueeze(0)
            sum_v2t = sum_v2t + cfg.alpha * (mv.shape[1] - nv).unsqueeze(0) * nt.log().unsqueeze(1)
        t2v = norm(sum_t2v / nt.unsqueeze(1))
        v2t = norm(sum_v2t / nv.unsqueeze(0))
        s_lse = (t2v + v2t) / 2
        return (cfg.fusion_weight * s_mean + s_lse) / (cfg.fusion_weight + 1)

    def _blocks(self, sim: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor | None]:
        """``(G, blocks (G*G, K, K), bucket value p or None)`` of the fused similarity S."""
        cfg = self.config
        batch, k = sim.shape[0], cfg.sequence_length
        if batch % k:
            raise RecipeError(f"loss.sequence_length = {k} must divide the clips per batch, got a batch of {batch} "
                              "clips (videos_per_batch x clip_per_video)")
        groups = batch // k
        prompt = None
        if cfg.prompt_ratio > 0:
            rank = min(max(int(cfg.prompt_ratio * batch), 1), batch)
            prompt = torch.kthvalue(sim.diagonal().detach(), rank).values
        return groups, sim.view(groups, k, groups, k).transpose(1, 2).reshape(groups * groups, k, k), prompt

    def _sequence_log_plan(self, blocks: torch.Tensor, prompt: torch.Tensor | None) -> torch.Tensor:
        """No-grad log OT plans of the blocks: (n, K+1, K+1) with the bucket last, or (n, K, K) without one."""
        cfg = self.config
        with torch.no_grad():
            n, k, _ = blocks.shape
            scores = blocks.detach().float() / cfg.video_epsilon
            if prompt is not None:
                edge = (prompt.float() / cfg.video_epsilon).expand(n, k, 1)
                scores = torch.cat([torch.cat([scores, edge], 2),
                                    torch.cat([edge.transpose(1, 2), edge[:, :1]], 2)], 1)
                log_mu, log_nu = bucket_log_marginals(k, k, blocks.device)
            else:
                log_mu = log_nu = torch.full((k,), -math.log(k), device=blocks.device)
            return sinkhorn(scores, log_mu, log_nu, cfg.sinkhorn_iterations)

    def sequence_plan(self, blocks: torch.Tensor, prompt: torch.Tensor | None) -> torch.Tensor:
        """No-grad OT plans (n, K, K) of the blocks, bucket dropped, each rescaled to mass K."""
        k = blocks.shape[1]
        with torch.no_grad():
            plan = self._sequence_log_plan(blocks, prompt)[:, :k, :k].exp_()
            return plan.mul_(k / plan.sum(dim=(1, 2), keepdim=True))

    def _clip_plan(self, logits: torch.Tensor) -> torch.Tensor:
        """The faulty-negative OT plan ``Q`` (B, B) of clip x caption logits (rows each summing to ~1)."""
        cfg = self.config
        batch = logits.shape[0]
        log_mu, log_nu = uniform_log_marginals(batch, batch, logits.device)
        log_plan = sinkhorn((logits / cfg.clip_epsilon).unsqueeze(0), log_mu, log_nu, cfg.sinkhorn_iterations)[0]
        return (log_plan + math.log(2 * batch)).exp_()

    def plans(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The transport plans this loss would use on ``outputs``, for diagnostics (no grad, not on the hot path).

        ``clip_plan`` (B, B): faulty-negative plan Q (rows: clips, columns: captions), whatever
        ``faulty_negatives`` says; ``sequence_plan`` (G, K, K + 1): each sequence's plan against its own clips
        (the diagonal blocks: rows = its K captions, columns = its K clips then the alignable prompt bucket; each
        real row holds mass ``1 / (2K)``), before the bucket is dropped; without a bucket (``prompt_ratio = 0``)
        the last column is zeros; ``prompt`` (): the bucket value p (NaN without a bucket).
        """
        cfg = self.config
        with torch.no_grad(), torch.autocast(device_type=outputs["pooled_video"].device.type, enabled=False):
            sim = self.similarity(outputs)
            groups, blocks, prompt = self._blocks(sim)
            k = cfg.sequence_length
            own = blocks[:: groups + 1]  # block g_t * G + g_v with g_t == g_v
            log_plan = self._sequence_log_plan(own, prompt)
            if prompt is None:
                plan = torch.cat([log_plan.exp() / 2, log_plan.new_zeros(groups, k, 1)], 2)
            else:  # SuperGlue-style marginals: each real row holds 1 / (2K) before the rescale by 2K
                plan = log_plan[:, :k, :].exp()
            clip_logits = outputs["pooled_video"].float() @ outputs["pooled_text"].float().t()
            return {"clip_plan": self._clip_plan(clip_logits),
                    "sequence_plan": plan, "prompt": prompt if prompt is not None else sim.new_full((), math.nan)}

    def video_loss(self, outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        sim = self.similarity(outputs)
        groups, blocks, prompt = self._blocks(sim)
        plan = self.sequence_plan(blocks, prompt)
        scale = self.logit_scale.clamp(0.0, MAX_LOGIT_SCALE).exp()
        logits = scale * (plan * blocks).sum(dim=(1, 2)).view(groups, groups)
        target = torch.arange(groups, device=logits.device)
        loss = F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)
        return loss, prompt if prompt is not None else sim.new_zeros(())

    # -- Loss interface --------------------------------------------------------------------------------------------

    def chance_levels(self, clips: int) -> dict[str, float]:
        """Each term at chance for a batch of B = ``clips`` pairs, where chance means outputs that say nothing
        about which clip goes with which caption, so that every row of logits is flat (all clips alike give
        exactly that).

        - ``clip_loss``: 2 ln B. Each direction is a cross-entropy of a uniform softmax over B columns against a
          target row summing to 1 (``beta Q + (1 - beta) I``, or ``I`` without faulty negatives): ln B whatever
          the target is.
        - ``video_loss``: 2 ln G over the G = B / K sequences (the fused similarity S is flat, so every sequence's
          transported score is the same; min-max normalisation maps a flat S to zeros, the same thing). 0 when
          the batch holds one sequence: nothing is contrasted then.
        - ``loss``: ``clip_loss + lambda video_loss`` at chance.
        """
        clip = 2 * math.log(clips) if clips > 1 else 0.0
        levels = {"clip_loss": clip, "loss": clip}
        if self.config.sequence_weight > 0:
            groups = clips // self.config.sequence_length
            video = 2 * math.log(groups) if groups > 1 else 0.0
            levels["video_loss"] = video
            levels["loss"] = clip + self.config.sequence_weight * video
        return levels

    def forward(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
        device_type = outputs["pooled_video"].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            clip = self.clip_loss(outputs["pooled_video"].float(), outputs["pooled_text"].float())
            terms = {"clip_loss": clip}
            if self.config.sequence_weight > 0:
                video, prompt = self.video_loss(outputs)
                terms["video_loss"] = video
                terms["prompt_value"] = prompt.detach()
                terms["loss"] = clip + self.config.sequence_weight * video
            else:
                terms["loss"] = clip
            terms["temperature"] = (-self.logit_scale.detach().clamp(0.0, MAX_LOGIT_SCALE)).exp()
        return terms


class VideoCLIPNCELoss(nn.Module, Loss):
    """VideoCLIP's symmetric InfoNCE on the pooled vectors: ``CE(X, I) + CE(X^T, I)``, in-batch negatives; what the
    registered ``videoclip-nce`` loss (:class:`norton_losses.VideoCLIPNCEEntry`) builds."""

    def __init__(self, config: NCEConfig, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.config = config
        self.log_temperature: nn.Parameter | None = None
        if config.learn_temperature:
            low, high = NCE_TEMPERATURE_RANGE
            if not low <= config.temperature <= high:
                raise RecipeError(f"loss.temperature = {config.temperature} is outside [{low:g}, {high:g}], the range "
                                  "a learnt temperature (loss.learn_temperature = true) is kept in")
            self.log_temperature = nn.Parameter(torch.tensor(math.log(config.temperature), dtype=torch.float32))

    def temperature(self) -> torch.Tensor | float:
        """The fixed temperature, or the learnt one held in its range (the bound is in the option's help)."""
        if self.log_temperature is None:
            return self.config.temperature
        low, high = NCE_TEMPERATURE_RANGE
        return self.log_temperature.clamp(math.log(low), math.log(high)).exp()

    def chance_levels(self, clips: int) -> dict[str, float]:
        """At chance (flat logit rows: outputs that say nothing about the pairing) each direction's cross-entropy
        over B = ``clips`` pairs is ln B, so the symmetric loss is 2 ln B, whatever the temperature."""
        one = math.log(clips) if clips > 1 else 0.0
        return {"loss": 2 * one, "clip_loss": 2 * one, "v2t_loss": one, "t2v_loss": one}

    def forward(self, outputs: dict[str, torch.Tensor], batch: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
        with torch.autocast(device_type=outputs["pooled_video"].device.type, enabled=False):
            temperature = self.temperature()
            logits = outputs["pooled_video"].float() @ outputs["pooled_text"].float().t() / temperature
            target = torch.arange(logits.shape[0], device=logits.device)
            loss_v = F.cross_entropy(logits, target)
            loss_t = F.cross_entropy(logits.t(), target)
        terms = {"loss": loss_v + loss_t, "clip_loss": loss_v + loss_t, "v2t_loss": loss_v, "t2v_loss": loss_t}
        if isinstance(temperature, torch.Tensor):  # learnt: logged beside the loss, where a user watches it move
            terms["temperature"] = temperature.detach()
        return terms
