"""A plain dense, log-domain implementation of the Norton loss formulas, for tests and the
benchmark: it materialises the full ``B x B x Tt x Tv`` token-similarity tensor and runs the reference's
``logsumexp`` Sinkhorn loop, with no packing, chunking, scaling domain or custom backward.

The fine-grained similarity follows the reference's arithmetic literally when ``lse_padding_bias`` is on:
masked similarities are zero and ``exp(0)`` of the masked positions along the summed axis is subtracted again.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sinkhorn_log_dense(z: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor, iterations: int) -> torch.Tensor:
    u = torch.zeros_like(z[..., :, 0])
    v = torch.zeros_like(z[..., 0, :])
    for _ in range(iterations):
        u = log_mu - torch.logsumexp(z + v.unsqueeze(-2), dim=-1)
        v = log_nu - torch.logsumexp(z + u.unsqueeze(-1), dim=-2)
    return z + u.unsqueeze(-1) + v.unsqueeze(-2)


def _minmax(x: torch.Tensor) -> torch.Tensor:
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


def dense_clip_loss(zv: torch.Tensor, zt: torch.Tensor, *, beta: float = 0.3, epsilon: float = 1.0,
                    iterations: int = 50, faulty_negatives: bool = True) -> torch.Tensor:
    x = zv @ zt.t()
    b = x.shape[0]
    eye = torch.eye(b, dtype=x.dtype)
    if faulty_negatives:
        with torch.no_grad():
            marg = torch.full((b,), -math.log(2 * b), dtype=x.dtype)
            q = torch.exp(sinkhorn_log_dense(x / epsilon, marg, marg, iterations) + math.log(2 * b))
        tv, tt = beta * q + (1 - beta) * eye, beta * q.t() + (1 - beta) * eye
    else:
        tv = tt = eye
    return -(tv * F.log_softmax(x, 1)).sum(1).mean() - (tt * F.log_softmax(x.t(), 1)).sum(1).mean()


def dense_similarity(out: dict[str, torch.Tensor], *, alpha: float = 1.0, fusion_weight: float = 0.5,
                     lse_padding_bias: bool = True, norm: str = "minmax") -> torch.Tensor:
    nrm = _minmax if norm == "minmax" else (lambda x: x)
    zt = F.normalize(out["pooled_text"], dim=-1)
    zv = F.normalize(out["pooled_video"], dim=-1)
    s_mean = nrm(zt @ zv.t())
    ht = F.normalize(out["text_outputs"], dim=-1)
    hv = F.normalize(out["video_outputs"], dim=-1)
    mt = out["text_mask_outputs"].to(ht.dtype)
    mv = out["video_mask_outputs"].to(ht.dtype)
    tt, tv = mt.shape[1], mv.shape[1]
    nt, nv = mt.sum(1), mv.sum(1)
    r = torch.einsum("atd,bvd->abtv", ht, hv) * mt[:, None, :, None] * mv[None, :, None, :]
    e = torch.exp(r / alpha)
    if lse_padding_bias:  # the reference's arithmetic, literally
        t2v = (alpha * torch.log(e.sum(3) - (tv - nv)[None, :, None])).sum(2) / nt[:, None]
        v2t = (alpha * torch.log(e.sum(2) - (tt - nt)[:, None, None])).sum(2) / nv[None, :]
    else:  # exact masking
        valid = (mt[:, None, :, None] * mv[None, :, None, :]) > 0
        rm = (r / alpha).masked_fill(~valid, -math.inf)
        lse_v = torch.logsumexp(rm, 3).masked_fill(mt[:, None, :] == 0, 0.0)
        lse_t = torch.logsumexp(rm, 2).masked_fill(mv[None, :, :] == 0, 0.0)
        t2v = alpha * lse_v.sum(2) / nt[:, None]
        v2t = alpha * lse_t.sum(2) / nv[None, :]
    s_lse = (nrm(t2v) + nrm(v2t)) / 2
    return (fusion_weight * s_mean + s_lse) / (fusion_weight + 1)


def dense_video_loss(out: dict[str, torch.Tensor], *, k: int = 8, prompt_ratio: float | None = 0.3,
                     epsilon: float = 0.1, iterations: int = 50, logit_scale: torch.Tensor | float = math.log(1 / 0.07),
                     **sim_kwargs) -> torch.Tensor:
    s = dense_similarity(out, **sim_kwargs)
    b = s.shape[0]
    g = b // k
    d = s.view(g, k, g, k).transpose(1, 2).reshape(g * g, k, k)
    with torch.no_grad():
        z = d / epsilon
        if prompt_ratio:
            p = torch.kthvalue(torch.diagonal(s), max(int(prompt_ratio * b), 1)).values
            col = (p / epsilon).expand(g * g, k, 1)
            z = torch.cat([torch.cat([z, col], 2), torch.cat([col.transpose(1, 2), col[:, :1]], 2)], 1)
            log_mu = torch.full((k + 1,), -math.log(2 * k), dtype=s.dtype)
            log_mu[-1] = math.log(k) - math.log(2 * k)
            lp = sinkhorn_log_dense(z, log_mu, log_mu, iterations) + math.log(2 * k)
            lp = lp[:, :k, :k]
        else:
            log_mu = torch.full((k,), -math.log(k), dtype=s.dtype)
            lp = sinkhorn_log_dense(z, log_mu, log_mu, iterations)
        plan = torch.exp(lp)
        plan = plan / plan.sum((1, 2), keepdim=True) * k
    scale = torch.as_tensor(logit_scale, dtype=s.dtype).clamp(0, math.log(100)).exp()
    y = scale * (plan * d).sum((1, 2)).view(g, g)
    target = torch.arange(g)
    return F.cross_entropy(y, target) + F.cross_entropy(y.t(), target)


def dense_norton_loss(out: dict[str, torch.Tensor], *, sequence_weight: float = 0.1, beta: float = 0.3,
                      clip_epsilon: float = 1.0, faulty_negatives: bool = True, iterations: int = 50,
                      **video_kwargs) -> dict[str, torch.Tensor]:
    clip = dense_clip_loss(out["pooled_video"], out["pooled_text"], beta=beta, epsilon=clip_epsilon,
                           iterations=iterations, faulty_negatives=faulty_negatives)
    video = dense_video_loss(out, iterations=iterations, **video_kwargs)
    return {"loss": clip + sequence_weight * video, "clip_loss": clip, "video_loss": video}
