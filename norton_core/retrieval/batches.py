"""A retrieval round's neighbour lists into batches: VideoCLIP's "sample k of 2k" (here V of the query and its
~3V nearest videos).

The lists are drawn by one compiled pass (numba, :mod:`.batch_draw`) over all of them: at 1.1M videos a round has
17k lists of 193, which a Python loop with ``random.sample`` per list took 0.9-1.4 s to turn into batches and this
pass takes 0.1-0.2 s. The random draws are numpy's, seeded from ``rng``, so a round's batches follow from its seed.
"""

from __future__ import annotations

import random

import numpy as np

__all__ = ["neighbour_batches"]


def neighbour_batches(neighbours: np.ndarray, queries: np.ndarray, per_batch: int, n: int,
                      rng: random.Random, keep_short: bool = False) -> np.ndarray:
    """One batch per query: the query and its neighbours (-1 and repeats dropped); V of them are sampled when
    there are more (a uniformly random V-subset in random order, as ``random.sample`` draws it; the query itself
    may be left out), and a short list is topped up with random other videos so every batch has V distinct videos.
    Values are positions 0..n-1 (``neighbours`` and ``queries`` hold positions or -1). With ``keep_short`` (the
    reference) a short list stays a short batch: its row is padded with -1, which the data loader skips."""
    queries = np.ascontiguousarray(queries, dtype=np.int64)
    cands = np.ascontiguousarray(np.concatenate([queries[:, None], np.asarray(neighbours, dtype=np.int64)
                                                 .reshape(len(queries), -1)], axis=1))
    if cands.size and (int(cands.max()) >= n or int(cands.min()) < -1):
        raise ValueError(f"neighbour lists hold positions outside -1..{n - 1}")
    if queries.size and queries.min() < 0:
        raise ValueError("a query position is -1")
    # V uniform draws per list, for the lists longer than V
    uniforms = np.random.default_rng(rng.getrandbits(64)).random((len(cands), per_batch))
    out = np.full((len(cands), per_batch), -1, dtype=np.int64)
    counts = np.zeros(len(cands), dtype=np.int64)
    if len(cands):
        from norton_core.retrieval.batch_draw import launch

        launch(cands, uniforms, np.full(n, -1, dtype=np.int64), out, counts)
    short = np.flatnonzero(counts < per_batch)
    if not keep_short and len(short) and n < per_batch:
        raise ValueError(f"cannot top a batch up to {per_batch} distinct videos out of {n}")
    if not keep_short:
        for row in short.tolist():
            taken = set(out[row, : counts[row]].tolist())
            filled = int(counts[row])
            while filled < per_batch:
                extra = rng.randrange(n)
                if extra not in taken:
                    taken.add(extra)
                    out[row, filled] = extra
                    filled += 1
    return out
