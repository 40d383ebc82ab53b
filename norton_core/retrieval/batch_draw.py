"""The compiled pass of :func:`norton_core.retrieval.batches.neighbour_batches` (numba; imported on first use, so that
importing the engine does not import numba)."""

from __future__ import annotations

import time

import numpy as np

from norton_core._util.compiled import compile_cached, say_if_compiled


def _draw(cands, uniforms, seen, out, counts):  # noqa: ANN001, ANN202
    """Per list (row of ``cands``): its distinct entries >= 0, in order (``seen[v]`` holds the last row that took
    ``v``); all of them when at most V (``out``'s width), else V of them drawn by the first V steps of a
    Fisher-Yates shuffle driven by the row's ``uniforms`` (V values in [0, 1)): a uniformly random V-subset in
    uniformly random order, with V draws instead of one per entry. ``counts`` receives how many were kept."""
    per_batch = out.shape[1]
    kept = np.empty(cands.shape[1], dtype=np.int64)
    for r in range(cands.shape[0]):
        m = 0
        for c in range(cands.shape[1]):
            v = cands[r, c]
            if v >= 0 and seen[v] != r:
                seen[v] = r
                kept[m] = v
                m += 1
        if m > per_batch:
            for t in range(per_batch):
                j = t + min(int(uniforms[r, t] * (m - t)), m - t - 1)  # the min guards a product rounded up to 1
                kept[t], kept[j] = kept[j], kept[t]
        taken = min(m, per_batch)
        for t in range(taken):
            out[r, t] = kept[t]
        counts[r] = taken


_kernel = None
#: seconds the first launch spent loading or compiling the kernel (``None`` before it), for benchmarks
load_seconds: float | None = None


def launch(*args: object) -> None:
    """Run the pass (``cands, uniforms, seen, out, counts``: see :func:`_draw`), compiled or loaded on first use."""
    global _kernel, load_seconds
    started = time.perf_counter()
    if _kernel is None:
        _kernel = compile_cached(_draw, "batch drawing", nogil=True)
    _kernel(*args)
    if load_seconds is None:
        load_seconds = time.perf_counter() - started
        say_if_compiled("retrieval round's batch drawing", load_seconds)
