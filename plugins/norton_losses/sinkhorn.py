"""Batched entropic optimal transport, always in float32 and without gradient.

The reference runs ``N`` log-domain iterations from ``u = v = 0``, rows first::

    u_i = log mu_i - LSE_j(Z_ij + v_j);   v_j = log nu_j - LSE_i(Z_ij + u_i);   log P = Z + u + v

:func:`sinkhorn` produces *the same iterate sequence* in the scaling domain, where an iteration is two batched
matrix-vector products and two divisions instead of two passes of ``exp`` over the scores:

- stabilising shifts: ``Z1 = Z - max_j Z`` (rows), ``Z2 = Z1 - max_i Z1`` (columns), ``K = exp(Z2)``. Every row and
  column of ``K`` holds a 1 and all entries lie in (0, 1], so no product overflows, for logits of any range;
- the scalings ``a = exp(u + r)``, ``b = exp(v + c)`` absorb the shifts ``r``, ``c``; the first half-step (from
  ``v = 0``) uses the row-shifted kernel so that ``exp(c)`` (possibly 1e-200) is never formed;
- ``exp`` arguments are clamped at -80, which avoids torch's slow path for results that underflow
  (measured up to 36x slower on these CPUs). A clamped entry is at most e-80 too large; when the scalings are
  large enough for that to matter (``max a * max b * e^-80`` above 1e-7 of the smallest marginal), or any scaling
  is not finite, the problem is solved again by the log-domain loop (:func:`sinkhorn_log`), so wide score ranges stay exact.

Both return the log plan ``log P`` of shape ``(b, m, n)``.
"""

from __future__ import annotations

import math

import torch

#: exp arguments below this are clamped (exp(-80) = 1.8e-35 is still a normal float32)
EXP_FLOOR = -80.0
#: a clamped kernel entry may carry at most this fraction of the smallest marginal before the log domain is used
CLAMP_TOLERANCE = 1e-7


@torch.no_grad()
def sinkhorn_log(scores: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor, iterations: int) -> torch.Tensor:
    """The reference algorithm: log-domain iterations with ``logsumexp``. ``scores`` (b, m, n); ``log_mu`` (b, m)
    or (m,); ``log_nu`` (b, n) or (n,). Returns ``log P`` (b, m, n)."""
    z = scores.float()
    b, m, n = z.shape
    log_mu = log_mu.float().expand(b, m)
    log_nu = log_nu.float().expand(b, n)
    u = z.new_zeros(b, m)
    v = z.new_zeros(b, n)
    for _ in range(iterations):
        u = log_mu - torch.logsumexp(z + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(z + u.unsqueeze(2), dim=1)
    return z + u.unsqueeze(2) + v.unsqueeze(1)


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor, iterations: int) -> torch.Tensor:
    """Same result as :func:`sinkhorn_log` (to float32 rounding), computed in the stabilised scaling domain."""
    z = scores.float()
    b, m, n = z.shape
    if iterations < 1:
        raise ValueError(f"sinkhorn needs at least one iteration, got {iterations}")
    log_mu = log_mu.float().expand(b, m)
    log_nu = log_nu.float().expand(b, n)
    mu = log_mu.exp().unsqueeze(2)  # (b, m, 1)
    nu = log_nu.exp().unsqueeze(2)  # (b, n, 1)

    z1 = z - z.amax(dim=2, keepdim=True)
    kernel = z1.clamp(min=EXP_FLOOR).exp_()
    a = mu / kernel.sum(dim=2, keepdim=True)  # first u-step from v = 0, with the row-shifted kernel
    z1.sub_(z1.amax(dim=1, keepdim=True))  # now Z2 (column shift too)
    clamped = bool((z1 < EXP_FLOOR).any())
    torch.clamp(z1, min=EXP_FLOOR, out=kernel).exp_()
    a, bvec = _iterate(kernel, a, mu, nu, iterations)
    log_a, log_b = a.log(), bvec.log()
    bad = ~(torch.isfinite(log_a).all(dim=(1, 2)) & torch.isfinite(log_b).all(dim=(1, 2)))
    if clamped:
        slack = log_a.amax(dim=(1, 2)) + log_b.amax(dim=(1, 2)) + EXP_FLOOR
        bad |= slack > math.log(CLAMP_TOLERANCE) + log_mu.amin(dim=1).clamp_max(0).minimum(log_nu.amin(dim=1))
    log_plan = z1.add_(log_a).add_(log_b.transpose(1, 2))
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(1)
        log_plan[idx] = sinkhorn_log(z[idx], log_mu[idx], log_nu[idx], iterations)
    return log_plan


def _iterate(kernel: torch.Tensor, a: torch.Tensor, mu: torch.Tensor, nu: torch.Tensor,
             iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The scaling iterations from the first row step: ``b = nu / K^T a``, then ``iterations - 1`` times
    ``a = mu / K b``, ``b = nu / K^T a``. One problem uses matrix-vector products (``mv`` is ~2.5x faster than a
    batch-1 ``bmm``); many on the CPU the compiled loop of :mod:`norton_losses.sinkhorn_cpu` (numba, imported
    here on first use), elsewhere (CUDA) the problems-last multiply-adds of :func:`_iterate_problems_last`."""
    if kernel.shape[0] == 1:
        k2 = kernel[0]
        k2t = k2.t()
        a1, mu1, nu1 = a.view(-1), mu.view(-1), nu.view(-1)
        kb, ka, b1 = torch.empty_like(a1), torch.empty_like(nu1), torch.empty_like(nu1)
        torch.mv(k2t, a1, out=ka)
        torch.div(nu1, ka, out=b1)
        for _ in range(iterations - 1):
            torch.mv(k2, b1, out=kb)
            torch.div(mu1, kb, out=a1)
            torch.mv(k2t, a1, out=ka)
            torch.div(nu1, ka, out=b1)
        return a1.view_as(a), b1.view_as(nu)
    if kernel.device.type == "cpu":
        from . import sinkhorn_cpu

        return sinkhorn_cpu.iterate(kernel, a, mu, nu, iterations)
    return _iterate_problems_last(kernel, a, mu, nu, iterations)


def _iterate_problems_last(kernel: torch.Tensor, a: torch.Tensor, mu: torch.Tensor, nu: torch.Tensor,
                           iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Many small problems off the CPU (CUDA): the problems laid out last, ``K[i, j, :]``, so that ``K b`` is
    ``n`` fused multiply-adds ``(K b)[i, :] += K[i, j, :] * b[j, :]`` over every problem at once, and ``K^T a``
    ``m`` of them; each is one long vectorised pass. A batched ``bmm`` instead runs one tiny product per problem
    (2.4x slower on these CPUs, measured in benchmarks/loss_bench.py)."""
    m, n = kernel.shape[1], kernel.shape[2]
    k = kernel.permute(1, 2, 0).contiguous()  # (m, n, problems): k[i] is row i of every problem
    k_cols = kernel.permute(2, 1, 0).contiguous()  # (n, m, problems): column j, contiguous as well (1.3x faster)
    a_, mu_, nu_ = (x.squeeze(2).t().contiguous() for x in (a, mu, nu))  # (m or n, problems)
    kb, ka, b_ = torch.empty_like(a_), torch.empty_like(nu_), torch.empty_like(nu_)

    def column_step() -> None:  # b = nu / K^T a
        torch.mul(k[0], a_[0], out=ka)
        for i in range(1, m):
            ka.addcmul_(k[i], a_[i])
        torch.div(nu_, ka, out=b_)

    column_step()
    for _ in range(iterations - 1):
        torch.mul(k_cols[0], b_[0], out=kb)  # a = mu / K b
        for j in range(1, n):
            kb.addcmul_(k_cols[j], b_[j])
        torch.div(mu_, kb, out=a_)
        column_step()
    return a_.t().unsqueeze(2), b_.t().unsqueeze(2)


def uniform_log_marginals(m: int, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's clip-level marginals: ``-log(m + n)`` everywhere (plan mass m/(m+n))."""
    value = -math.log(m + n)
    return torch.full((m,), value, device=device), torch.full((n,), value, device=device)


def bucket_log_marginals(m: int, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """SuperGlue-style dustbin marginals: ``1/(m+n)`` per real row/column, ``n/(m+n)`` (``m/(m+n)``) for the bucket."""
    norm = -math.log(m + n)
    log_mu = torch.full((m + 1,), norm, device=device)
    log_nu = torch.full((n + 1,), norm, device=device)
    log_mu[-1] = math.log(n) + norm
    log_nu[-1] = math.log(m) + norm
    return log_mu, log_nu
