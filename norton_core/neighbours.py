"""Exact nearest neighbours by blocked float32 matrix products: the retrieval round's recall reference and the
``exact`` backend. Shared by the engine and retrieval plugins (which must not import engine internals).

Memory stays bounded at a million vectors: the database is scanned in blocks with a running top-k per query, and
no float64 (or any other) copy of the database is made, not even a temporary one for the squared norms.

The products are torch's (MKL): numpy's OpenBLAS ran them 1.2-1.5x faster on an idle AMD machine, but its threads
keep spinning after each call and slow the torch operations between the products, and with one CPU's worth of
other load on 2 cores a round's search took 2x as long as with torch (30 vs 14 s at 1.1M), so it is not used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["exact_knn", "knn_scores", "row_norms", "scores"]

#: query rows x database rows scored at once (64 MB of float32 scores)
_SCORE_ELEMENTS = 1 << 24
#: the shortest database block scanned at once (at least 8 k rows too)
_MIN_BLOCK = 8192
#: rows squared at once by :func:`row_norms` (a 24 MB temporary at d = 768)
_NORM_ROWS = 8192


def row_norms(vectors: np.ndarray) -> np.ndarray:
    """Squared L2 norm of each row of a float32 matrix, (N,) float32, computed in blocks so that the squares of a
    large matrix never exist all at once (``square().sum(1)`` on 1.1M x 768 would hold another 3.4 GB)."""
    import torch

    out = torch.empty(len(vectors), dtype=torch.float32)
    for a in range(0, len(vectors), _NORM_ROWS):
        torch.sum(torch.from_numpy(vectors[a:a + _NORM_ROWS]).square(), 1, out=out[a:a + _NORM_ROWS])
    return out.numpy()


def scores(queries: np.ndarray, database: np.ndarray, metric: str, database_norms: np.ndarray | None = None,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """``(Q, N)`` float32 torch scores, smaller is nearer: ``|x|^2 - 2 q.x`` for ``l2`` (the query's own norm,
    the same for every candidate, is left out) and ``-q.x`` for ``ip``. Inputs are C-contiguous float32 arrays;
    ``out``, an (N, Q) buffer, receives the products (the result is its transpose, a view)."""
    import torch

    # one fused product with the database rows as its long side: MKL runs (N x d) @ (d x Q) at ~2x the speed of
    # (Q x d) @ (d x N) when Q is a few hundred (114 vs 58 GFLOP/s on 2 cores for N = 65,536, Q = 256); the factor
    # -2 (or -1) is exact, so this equals products * -2 + norms
    db, q = torch.from_numpy(database), torch.from_numpy(queries)
    if metric == "ip":
        return torch.mm(db, q.T, out=out).neg_().T
    norms = database_norms if database_norms is not None else row_norms(database)
    return torch.addmm(torch.from_numpy(norms).unsqueeze(1), db, q.T, alpha=-2, out=out).T


def knn_scores(database: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2",
               database_norms: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``database`` for each query row: (Q, k) float32 scores (as :func:`scores`) and
    int64 row indices, nearest first, equal scores by index, padded with (inf, -1) when ``k > len(database)``.

    The database is scanned in blocks. The first block's top k set each query's bar (its k-th best score); a later
    block only contributes the entries below the current bar, found by one comparison, and those are merged with
    the running lists. A full ``topk`` per block (k = 192 of 65,536: ~10 ns per score, half the product's own cost)
    is paid once (of k + 1, which tells whether equal scores straddle the k-th). The score blocks reuse one
    buffer: a fresh 64 MB block page-faults every 4 KB of it."""
    import torch

    if metric not in ("l2", "ip"):
        raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
    database = np.ascontiguousarray(database, dtype=np.float32)  # the caller's matrix itself for float32 input
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n, kk = len(database), min(k, len(database))
    out_s = np.full((len(queries), k), np.inf, dtype=np.float32)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    if kk == 0 or len(queries) == 0:
        return out_s, out_i
    norms = None if metric == "ip" else database_norms if database_norms is not None else row_norms(database)
    # long database blocks keep the merges cheap; query chunks bound the scores' memory
    block = max(8 * kk, _MIN_BLOCK, _SCORE_ELEMENTS // len(queries))
    q_chunk = max(1, _SCORE_ELEMENTS // block)
    buffer = torch.empty(min(block, n) * min(q_chunk, len(queries)), dtype=torch.float32)
    with torch.no_grad():
        for a in range(0, len(queries), q_chunk):
            q = queries[a:a + q_chunk]
            best_s = best_i = None
            for b in range(0, n, block):
                rows = min(block, n - b)
                part = scores(q, database[b:b + rows], metric, None if norms is None else norms[b:b + rows],
                              out=buffer[:rows * len(q)].view(rows, len(q)))
                by_row = part.T  # the buffer's own contiguous (rows, Q) layout: comparisons scan it in order
                if best_s is None:
                    best_s, best_i, tied = _smallest(part, kk)
                    best_i += b
                    if tied:
                        bar = best_s.amax(1)
                        # scores equal to the k-th: topk picked among them arbitrarily; take every entry up to
                        # the k-th and let the merge keep the lowest indices
                        c, r = (by_row <= bar).nonzero(as_tuple=True)
                        empty = torch.empty((len(q), 0))
                        best_s, best_i = _merge(empty, empty.long(), r, by_row[c, r], c + b, kk)
                    continue
                # a later block's entry equal to the bar has a larger index than everything kept: not needed
                c, r = (by_row < best_s.amax(1)).nonzero(as_tuple=True)
                if len(r):
                    best_s, best_i = _merge(best_s, best_i, r, by_row[c, r], c + b, kk)
            s, i = best_s.numpy(), best_i.numpy()
            order = np.lexsort((i, s), axis=1)
            out_s[a:a + len(q), :kk] = np.take_along_axis(s, order, 1)
            out_i[a:a + len(q), :kk] = np.take_along_axis(i, order, 1)
    return out_s, out_i


def _smallest(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Each row's k smallest scores of a (Q, rows) block and their columns, and whether any row's k-th smallest
    equals its (k+1)-th (then ``topk`` chose among equal entries arbitrarily and the caller must take them all).
    One ``topk`` of k + 1 tells, instead of counting the entries up to the k-th over the whole block (a second
    pass over it, measured at half to 3/4 of the ``topk``'s own time)."""
    import torch

    if scores.shape[1] <= k:
        top = torch.topk(scores, k, dim=1, largest=False, sorted=False)
        return top.values, top.indices, False
    top = torch.topk(scores, k + 1, dim=1, largest=False, sorted=False)
    inner = torch.topk(top.values, k, dim=1, largest=False, sorted=False)  # the k smallest of the k + 1
    tied = bool((inner.values.amax(1) == top.values.amax(1)).any())
    return inner.values, top.indices.gather(1, inner.indices), tied


def _merge(best_s: torch.Tensor, best_i: torch.Tensor, rows: torch.Tensor, values: torch.Tensor,
           index: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k smallest (score, index) among its running list and the new candidates ``(rows, values,
    index)``: one sort of the few entries involved. Every row must have at least k of them."""
    import torch

    q = best_s.shape[0]
    all_r = torch.cat([torch.arange(q).repeat_interleave(best_s.shape[1]), rows]).numpy()
    all_s = torch.cat([best_s.reshape(-1), values]).numpy()
    all_i = torch.cat([best_i.reshape(-1), index]).numpy()
    order = np.lexsort((all_i, all_s, all_r))
    starts = np.searchsorted(all_r[order], np.arange(q))
    keep = order[(starts[:, None] + np.arange(k)).reshape(-1)]
    return torch.from_numpy(all_s[keep].reshape(q, k)), torch.from_numpy(all_i[keep].reshape(q, k))


def exact_knn(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2") -> np.ndarray:
    """Exact k nearest rows of ``vectors`` for each query row: (Q, k) int64, nearest first, -1 padded when
    ``k > len(vectors)``. Equal scores are ordered by index."""
    return knn_scores(vectors, queries, k, metric)[1]
