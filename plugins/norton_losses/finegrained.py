"""Fine-grained log-sum-exp similarity between every caption and every clip,
without materialising the ``B x B x Tt x Tv`` token-similarity tensor.

For L2-normalised token vectors ``t`` (captions) and ``v`` (clips; a zero state stays zero) and ``r = t . v``,
the *core* sums are::

    A[a, b] = sum_{valid t of a} alpha * log sum_{valid v of b} exp(r / alpha)      (text -> video)
    B[a, b] = sum_{valid v of b} alpha * log sum_{valid t of a} exp(r / alpha)      (video -> text)

(the loss divides them by the valid counts and adds the reference's padding bias in closed form).

How:

- rows are sorted by their number of valid tokens and cut into runs of similar counts; one ``index_select`` packs
  each run's valid tokens into a dense ``(rows, width, d)`` slab (a row shorter than its run's width is padded with
  some of its own masked tokens, which the masks then ignore). Each ``(caption run, clip run)`` block is one GEMM,
  so the work is close to ``sum N^t x sum N^v`` token pairs instead of ``B^2 Tt Tv`` (about 0.4x with the How2
  recipe's lengths);
- ``exp`` runs on ``(r - 1) / alpha``: at most 0 since ``|r| <= 1``, at least ``-2/alpha >= -80`` for
  ``alpha >= 0.025``, so it neither overflows nor takes torch's slow path for underflowing results;
  the shift comes back as ``+1`` per summed token;
- the block exps are kept for the backward pass while they fit in ``cache_mb`` (one flat buffer); the other blocks
  are recomputed there. Either way the backward is two GEMMs per block. Block work buffers are allocated once per
  call and reused through ``out=`` (fresh large allocations per call cost page faults every time).
"""

from __future__ import annotations

import torch

from .config import MIN_ALPHA

#: at most this many caption rows / clip rows per block
TEXT_ROWS = 64
VIDEO_ROWS = 128
#: a row may have up to this fraction of padded tokens in its run
PAD_TOLERANCE = 0.1


def _runs(counts: list[int], max_rows: int) -> list[tuple[int, int, int]]:
    """``(start, stop, width)`` runs of rows (counts sorted descending) of at most ``max_rows`` rows, each row's
    count within ``PAD_TOLERANCE`` of the run's width (= its first count)."""
    out: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(counts) + 1):
        if i == len(counts) or counts[i] < (1 - PAD_TOLERANCE) * counts[start] or i - start == max_rows:
            out.append((start, i, max(counts[start], 1)))
            start = i
    return out


class _Layout:
    """Sorted order, runs and the flat token index of one modality."""

    def __init__(self, mask: torch.Tensor, max_rows: int) -> None:
        rows, length = mask.shape
        counts = mask.sum(1)
        self.order = torch.argsort(counts, descending=True, stable=True)
        self.counts = counts[self.order]
        self.runs = _runs(self.counts.tolist(), max_rows)
        positions = torch.argsort((~mask[self.order]).to(torch.int8), dim=1, stable=True)
        flat = self.order.unsqueeze(1) * length + positions
        self.index = torch.cat([flat[i0:i1, :w].reshape(-1) for i0, i1, w in self.runs])
        self.offsets = []
        offset = 0
        for i0, i1, w in self.runs:
            self.offsets.append(offset)
            offset += (i1 - i0) * w
        dtype = torch.float32
        # (rows, width) valid-token masks of runs with padded rows; None when no row of the run is padded
        self.masks = [None if bool((self.counts[i0:i1] >= w).all()) else
                      (torch.arange(w, device=mask.device) < self.counts[i0:i1, None]).to(dtype)
                      for i0, i1, w in self.runs]

    def pack(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(sum rows x width, d)``: every run's tokens, run after run (differentiable)."""
        return hidden.reshape(-1, hidden.shape[-1]).index_select(0, self.index)

    def slabs(self, packed: torch.Tensor) -> list[torch.Tensor]:
        return [packed[o: o + (i1 - i0) * w].view(i1 - i0, w, -1)
                for o, (i0, i1, w) in zip(self.offsets, self.runs, strict=True)]


class _Plan:
    """Everything forward and backward share."""

    def __init__(self, text: _Layout, video: _Layout, pt: torch.Tensor, pv: torch.Tensor, alpha: float,
                 cache_mb: float) -> None:
        self.text, self.video, self.alpha = text, video, alpha
        self.t_unit, self.v_unit = pt, pv
        self.t_slabs, self.v_slabs = text.slabs(pt), video.slabs(pv)
        self.t_masks = [None if m is None else m.to(pt.dtype) for m in text.masks]
        self.v_masks = [None if m is None else m.to(pt.dtype) for m in video.masks]
        self.t_sizes = [s.shape[0] * s.shape[1] for s in self.t_slabs]
        self.v_sizes = [s.shape[0] * s.shape[1] for s in self.v_slabs]
        self.shift = pt.new_full((1, 1), -1.0 / alpha)
        self.work = pt.new_empty(max(self.t_sizes) * max(self.v_sizes))
        budget = int(cache_mb * 2**20 / pt.element_size())
        total = sum(self.t_sizes) * sum(self.v_sizes)
        self.cache = pt.new_empty(min(budget, total)) if budget > 0 else None
        self.cache_used = 0
        self.cached: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def block(self, ti: int, vi: int, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``E = exp((r - 1)/alpha)`` of one block (ca, wt, nb, wv) written into ``out``, padded clip tokens
        zeroed; with ``Sv`` (ca, wt, nb) = sum over valid v and ``St`` (ca, nb, wv) = sum over valid t."""
        tc, vc = self.t_slabs[ti], self.v_slabs[vi]
        ca, wt, d = tc.shape
        nb, wv, _ = vc.shape
        e2 = out[: ca * wt * nb * wv].view(ca * wt, nb * wv)
        torch.addmm(self.shift, tc.reshape(ca * wt, d), vc.reshape(nb * wv, d).t(), alpha=1.0 / self.alpha, out=e2)
        e = e2.exp_().view(ca, wt, nb, wv)
        mt, mv = self.t_masks[ti], self.v_masks[vi]
        if mv is not None:
            e.mul_(mv.view(1, 1, nb, wv))
        sv = e.sum(dim=3)
        st = e.sum(dim=1) if mt is None else torch.bmm(mt.view(ca, 1, wt), e.view(ca, wt, nb * wv)).view(ca, nb, wv)
        return e, sv, st

    def forward_block(self, ti: int, vi: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = self.t_sizes[ti] * self.v_sizes[vi]
        if self.cache is not None and self.cache_used + size <= self.cache.numel():
            result = self.block(ti, vi, self.cache[self.cache_used:])
            self.cache_used += size
            self.cached[ti, vi] = result
            return result
        return self.block(ti, vi, self.work)

    def backward_block(self, ti: int, vi: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.cached.get((ti, vi)) or self.block(ti, vi, self.work)


def _forward(plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
    text, video = plan.text, plan.video
    a_sorted = plan.shift.new_zeros(len(text.order), len(video.order))
    b_sorted = torch.zeros_like(a_sorted)
    for ti, (i0, i1, _) in enumerate(text.runs):
        mt = plan.t_masks[ti]
        for vi, (j0, j1, _) in enumerate(video.runs):
            mv = plan.v_masks[vi]
            _, sv, st = plan.forward_block(ti, vi)
            log_sv, log_st = sv.log(), st.log()
            if mt is not None:  # padded caption rows are left out of the text->video sum
                log_sv = torch.where(mt.bool().unsqueeze(2), log_sv, 0.0)
            if mv is not None:
                log_st = torch.where(mv.bool().unsqueeze(0), log_st, 0.0)
            a_sorted[i0:i1, j0:j1] = log_sv.sum(1)
            b_sorted[i0:i1, j0:j1] = log_st.sum(2)
    a_sorted.mul_(plan.alpha).add_(text.counts.to(a_sorted.dtype).unsqueeze(1))
    b_sorted.mul_(plan.alpha).add_(video.counts.to(b_sorted.dtype).unsqueeze(0))
    inv_t, inv_v = torch.argsort(text.order), torch.argsort(video.order)
    return a_sorted[inv_t][:, inv_v], b_sorted[inv_t][:, inv_v]


def _backward(plan: _Plan, grad_a: torch.Tensor, grad_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    text, video = plan.text, plan.video
    ga = grad_a[text.order][:, video.order]
    gb = grad_b[text.order][:, video.order]
    d = plan.t_slabs[0].shape[-1]
    grad_pt = plan.shift.new_zeros(sum(plan.t_sizes), d)
    grad_pv = plan.shift.new_zeros(sum(plan.v_sizes), d)
    grad_t, grad_v = text.slabs(grad_pt), video.slabs(grad_pv)
    tiny = torch.finfo(grad_pt.dtype).tiny
    gbuf = torch.empty_like(plan.work)
    t_out = grad_pt.new_empty(max(plan.t_sizes) * d)
    v_out = grad_pt.new_empty(max(plan.v_sizes) * d)
    for ti, (i0, i1, wt) in enumerate(text.runs):
        tc, mt, ca = plan.t_slabs[ti], plan.t_masks[ti], i1 - i0
        for vi, (j0, j1, wv) in enumerate(video.runs):
            nb, mv = j1 - j0, plan.v_masks[vi]
            e, sv, st = plan.backward_block(ti, vi)
            # dA/dr = E / Sv on valid t, dB/dr = E / St on valid v (softmaxes over v and over t); the masks go into
            # the numerators so that padded rows (sums of 0) give 0, not 0/0
            ga_blk = ga[i0:i1, j0:j1].unsqueeze(1)
            gb_blk = gb[i0:i1, j0:j1].unsqueeze(2)
            if mt is not None:
                ga_blk = ga_blk * mt.unsqueeze(2)
            if mv is not None:
                gb_blk = gb_blk * mv.unsqueeze(0)
            ct = ga_blk / sv.clamp_min(tiny)  # (ca, wt, nb)
            cv = gb_blk / st.clamp_min(tiny)  # (ca, nb, wv)
            g = gbuf[: e.numel()].view(ca, wt, nb, wv)
            if mt is None:
                torch.add(ct.unsqueeze(3), cv.unsqueeze(1), out=g)
            else:  # the video->text softmax covers valid t only
                torch.mul(cv.unsqueeze(1), mt.view(ca, wt, 1, 1), out=g)
                g.add_(ct.unsqueeze(3))
            g.mul_(e)
            g2 = g.view(ca * wt, nb * wv)
            tg = t_out[: ca * wt * d].view(ca * wt, d)
            torch.mm(g2, plan.v_slabs[vi].reshape(nb * wv, d), out=tg)
            grad_t[ti].add_(tg.view(ca, wt, d))
            vg = v_out[: nb * wv * d].view(nb * wv, d)
            torch.mm(g2.t(), tc.reshape(ca * wt, d), out=vg)
            grad_v[vi].add_(vg.view(nb, wv, d))
    return grad_pt, grad_pv


def _normalize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x / max(|x|, 1e-12), max(|x|, 1e-12))`` per row, as ``F.normalize``."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(1e-12)
    return x / norm, norm


def _normalize_backward(grad: torch.Tensor, unit: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """Gradient through :func:`_normalize`, in place on ``grad``: ``(g - u (u . g)) / |x|`` (a zero row has u = 0
    and gets ``g / 1e-12``, as ``F.normalize``)."""
    dot = (grad * unit).sum(dim=-1, keepdim=True)
    return grad.sub_(unit * dot).div_(norm)


class _FineGrained(torch.autograd.Function):
    """Inputs are the packed raw token states; they are L2-normalised here so that autograd keeps neither the raw
    nor a second normalised copy (the plan holds the normalised tokens and the norms)."""

    @staticmethod
    def forward(ctx, raw_t, raw_v, text, video, alpha, cache_mb):  # noqa: ANN001, ANN205 - autograd signature
        pt, norm_t = _normalize(raw_t.detach())
        pv, norm_v = _normalize(raw_v.detach())
        plan = _Plan(text, video, pt, pv, alpha, cache_mb)
        ctx.plan, ctx.norms = plan, (norm_t, norm_v)
        return _forward(plan)

    @staticmethod
    def backward(ctx, grad_a, grad_b):  # noqa: ANN001, ANN205
        plan, (norm_t, norm_v) = ctx.plan, ctx.norms
        ctx.plan = ctx.norms = None  # the cached exps go with it
        grad_pt, grad_pv = _backward(plan, grad_a.contiguous(), grad_b.contiguous())
        pt, pv = plan.t_unit, plan.v_unit
        del plan
        return (_normalize_backward(grad_pt, pt, norm_t), _normalize_backward(grad_pv, pv, norm_v),
                None, None, None, None)


def fine_grained_sums(ht: torch.Tensor, mt: torch.Tensor, hv: torch.Tensor, mv: torch.Tensor, alpha: float,
                      cache_mb: float = 640.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, B)`` of the module docstring, each (B_text, B_video), differentiable in ``ht`` and ``hv``.

    :param ht: (Bt, Tt, d) caption token states (L2-normalised here, after packing, which saves memory over
        normalising the padded tensor); ``mt`` (Bt, Tt) bool valid tokens.
    :param hv: (Bv, Tv, d) clip token states; ``mv`` (Bv, Tv) bool.
    :param alpha: the log-sum-exp temperature, >= 0.025.
    :param cache_mb: keep block exps for the backward pass up to this many MiB; the rest is recomputed.
    """
    if alpha < MIN_ALPHA:
        raise ValueError(f"alpha must be >= {MIN_ALPHA}, got {alpha}")
    mt, mv = mt.bool(), mv.bool()
    # a row without any valid token would take log(0); the model never makes one ([SEP] is always valid)
    if not (bool(mt.any(1).all()) and bool(mv.any(1).all())):
        raise ValueError("every caption and clip needs at least one valid token in its mask")
    text, video = _Layout(mt, TEXT_ROWS), _Layout(mv, VIDEO_ROWS)
    return _FineGrained.apply(text.pack(ht), video.pack(hv), text, video, alpha, cache_mb)
