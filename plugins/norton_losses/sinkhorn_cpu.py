"""The compiled CPU loop of the many-problems Sinkhorn (e.g. the bucket OT's 16,384 problems of 9 x 9).

:func:`iterate` runs *the same iterate sequence* as :func:`norton_losses.sinkhorn._iterate` (first
``b = nu / K^T a``, then ``iterations - 1`` times ``a = mu / K b``, ``b = nu / K^T a``) in one compiled function
(numba) instead of ~20 torch ops per iteration on 16,384-long vectors, which were bound by op overhead and cache
traffic. At the loss benchmark's case (``benchmarks/loss_bench.py --sinkhorn-only``, 2 cores) the loop takes
~12 ms alone and the whole ``sinkhorn()`` 33-40 ms, against 63-64 ms with the torch loop in the same run. Right after
a torch op the loop takes ~19 ms: torch's OpenMP workers keep spinning on the cores for a few ms after each parallel
op (libgomp's default wait policy), and fusing more of ``sinkhorn()`` into numba calls between torch ops measured
slower for that reason.

Each block of ``lanes`` problems is copied once into a problems-last local layout ``k[i, j, lane]`` that stays in L1
for all iterations, so every multiply-add runs over the block's problems as one SIMD loop. Arithmetic is float32 and
sums run in the torch loop's order (``(K b)_i`` from ``j = 0`` up, ``(K^T a)_j`` from ``i = 0`` up), without
fast-math: no fused multiply-add, no reassociation (torch's ``addcmul`` may fuse, so the two loops differ by float32
rounding, ~2e-6 relative after 50 iterations). Each problem is computed by one thread in lane-independent
arithmetic, so the result is bit-identical whatever the thread count or block size.

This module imports numba; :mod:`norton_losses.sinkhorn` imports it only when the CPU path first runs, so that
``import norton_losses`` stays light. The threading layer (numba's own ``workqueue``), the lock every parallel
launch holds and the on-disk cache are :mod:`norton_core._util.compiled`'s, shared with the retrieval round's kernels.
"""

from __future__ import annotations

import time

import numba
import numpy as np
import torch

from norton_core import LAUNCH, compile_cached, say_if_compiled
from norton_core import compiled_threads as threads

#: the local block (m x n x lanes float32) is kept within this many bytes so that it stays in L1 (32 KiB here)
BLOCK_BYTES = 32 * 1024
MAX_LANES = 64
MIN_LANES = 8


def _blocks_loop(kernel, a0, mu, nu, iterations, lanes, out_a, out_b):  # noqa: ANN001, ANN202
    """``kernel`` (p, m, n), ``a0`` / ``mu`` (p, m), ``nu`` (p, n) float32 C-contiguous; writes ``out_a`` (p, m)
    and ``out_b`` (p, n). Blocks of ``lanes`` problems in parallel; a block's unused lanes hold ones (never read
    back)."""
    p, m, n = kernel.shape
    for block in numba.prange((p + lanes - 1) // lanes):
        q0 = block * lanes
        count = min(lanes, p - q0)
        k = np.ones((m, n, lanes), np.float32)
        a = np.ones((m, lanes), np.float32)
        b = np.ones((n, lanes), np.float32)
        mu_l = np.ones((m, lanes), np.float32)
        nu_l = np.ones((n, lanes), np.float32)
        kb = np.empty((m, lanes), np.float32)
        ka = np.empty((n, lanes), np.float32)
        for lane in range(count):
            q = q0 + lane
            for i in range(m):
                for j in range(n):
                    k[i, j, lane] = kernel[q, i, j]
                a[i, lane] = a0[q, i]
                mu_l[i, lane] = mu[q, i]
            for j in range(n):
                nu_l[j, lane] = nu[q, j]
        for step in range(iterations):
            if step:  # a = mu / K b
                for i in range(m):
                    for lane in range(lanes):
                        kb[i, lane] = k[i, 0, lane] * b[0, lane]
                    for j in range(1, n):
                        for lane in range(lanes):
                            kb[i, lane] += k[i, j, lane] * b[j, lane]
                    for lane in range(lanes):
                        a[i, lane] = mu_l[i, lane] / kb[i, lane]
            # b = nu / K^T a
            for j in range(n):
                for lane in range(lanes):
                    ka[j, lane] = k[0, j, lane] * a[0, lane]
            for i in range(1, m):
                for j in range(n):
                    for lane in range(lanes):
                        ka[j, lane] += k[i, j, lane] * a[i, lane]
            for j in range(n):
                for lane in range(lanes):
                    b[j, lane] = nu_l[j, lane] / ka[j, lane]
        for lane in range(count):
            q = q0 + lane
            for i in range(m):
                out_a[q, i] = a[i, lane]
            for j in range(n):
                out_b[q, j] = b[j, lane]


_compiled = None
#: seconds the first call spent loading or compiling the loop (``None`` before it), for the benchmark
load_seconds: float | None = None


def _loop():  # noqa: ANN202
    """The compiled loop, built on first use. ``cache=True`` keeps the machine code on disk (beside this file, or in
    numba's user cache directory), so only the first process on a machine compiles it (about 8 s on 2 cores;
    loading the cached copy about 0.4 s). error_model="numpy": a division by zero gives inf or NaN as in torch (the
    caller's finiteness check sends that problem to the log domain) instead of raising; numba already divides so
    inside a prange body, the option says it for the whole function."""
    global _compiled
    if _compiled is None:
        _compiled = compile_cached(_blocks_loop, "Sinkhorn loop", parallel=True, nogil=True, error_model="numpy")
    return _compiled


def lanes_for(problems: int, m: int, n: int) -> int:
    """Problems per block: the largest power of two from 8 to 64 that keeps the block within ``BLOCK_BYTES`` and
    is at most the number of problems (8 at least). Any value gives the same bits; it only sets the speed."""
    cap = min(MAX_LANES, max(BLOCK_BYTES // (4 * m * n), 1), max(problems, 1))
    lanes = MIN_LANES
    while lanes * 2 <= cap:
        lanes *= 2
    return lanes


def iterate(kernel: torch.Tensor, a: torch.Tensor, mu: torch.Tensor, nu: torch.Tensor, iterations: int, *,
            lanes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same contract as :func:`norton_losses.sinkhorn._iterate`: ``kernel`` (b, m, n), ``a`` / ``mu`` (b, m, 1),
    ``nu`` (b, n, 1), float32 CPU tensors; returns ``a`` (b, m, 1) and ``b`` (b, n, 1)."""
    global load_seconds
    if kernel.dtype != torch.float32 or kernel.device.type != "cpu":  # another dtype would compile a second loop
        raise ValueError(f"the compiled Sinkhorn loop takes float32 CPU tensors, got {kernel.dtype} on {kernel.device}")
    p, m, n = kernel.shape
    arrays = [x.detach().reshape(p, -1).contiguous().numpy() for x in (a, mu, nu)]
    out_a, out_b = torch.empty(p, m), torch.empty(p, n)
    lanes = lanes_for(p, m, n) if lanes is None else lanes
    with LAUNCH:
        loop = _loop()
        numba.set_num_threads(threads())
        start = time.perf_counter()
        loop(kernel.detach().contiguous().numpy(), arrays[0], arrays[1], arrays[2], int(iterations), int(lanes),
             out_a.numpy(), out_b.numpy())
        if load_seconds is None:
            load_seconds = time.perf_counter() - start
            say_if_compiled("CPU Sinkhorn loop", load_seconds)
    return out_a.unsqueeze(2), out_b.unsqueeze(2)
