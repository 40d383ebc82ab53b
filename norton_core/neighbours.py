"""Exact nearest neighbours by blocked float32 matrix products: the retrieval round's recall reference and the
``exact`` backend. Shared by the engine and retrieval plugins (which must not import engine internals).

Memory stays bounded at a million vectors: the database is scanned in blocks with a running top-k per query, and
no float64 (or any other) copy of the database is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["exact_knn", "scores"]

#: query rows x database rows scored at once (64 MB of float32 scores)
_SCORE_ELEMENTS = 1 << 24


def scores(queries: torch.Tensor, database: torch.Tensor, metric: str,
           database_norms: torch.Tensor | None = None) -> torch.Tensor:
    """``(Q, N)`` float32 torch scores, smaller is nearer: ``|x|^2 - 2 q.x`` for ``l2`` (the query's own norm,
    the same for every candidate, is left out) and ``-q.x`` for ``ip``. Inputs are float32 torch tensors."""
    products = queries @ database.T
    if metric == "ip":
        return products.neg_()
    norms = database_norms if database_norms is not None else database.square().sum(1)
    return products.mul_(-2).add_(norms)


def exact_knn(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2") -> np.ndarray:
    """Exact k nearest rows of ``vectors`` for each query row: (Q, k) int64, nearest first, -1 padded when
    ``k > len(vectors)``. Equal scores are ordered by index."""
    import torch

    if metric not in ("l2", "ip"):
        raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
    database = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))  # a view for float32 input
    query = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    n, kk = len(database), min(k, len(database))
    out = np.full((len(query), k), -1, dtype=np.int64)
    if kk == 0 or len(query) == 0:
        return out
    norms = database.square().sum(1) if metric == "l2" else None
    # long database blocks keep the running top-k's merge cheap; query chunks bound the scores' memory
    block = max(8 * kk, 8192, _SCORE_ELEMENTS // len(query))
    q_chunk = max(1, _SCORE_ELEMENTS // block)
    with torch.no_grad():
        for a in range(0, len(query), q_chunk):
            q = query[a:a + q_chunk]
            best_s = torch.empty((len(q), 0), dtype=torch.float32)
            best_i = torch.empty((len(q), 0), dtype=torch.int64)
            for b in range(0, n, block):
                part = scores(q, database[b:b + block], metric, None if norms is None else norms[b:b + block])
                cand_s = torch.cat([best_s, part], 1)
                cand_i = torch.cat([best_i, torch.arange(b, b + part.shape[1]).expand(len(q), -1)], 1)
                top = torch.topk(cand_s, min(kk, cand_s.shape[1]), dim=1, largest=False, sorted=False)
                best_s, best_i = top.values, cand_i.gather(1, top.indices)
            s, i = best_s.numpy(), best_i.numpy()
            order = np.lexsort((i, s), axis=1)
            out[a:a + len(q), :kk] = np.take_along_axis(i, order, 1)
    return out
