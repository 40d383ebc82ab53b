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

#: query rows x database rows scored at once: 1 MB of float32 scores, which stay in the cache for the selection pass
#: and for MKL, which runs (271 x 768) @ (768 x 965) products at 97-108 GFLOP/s against 79 for 17k-row blocks
#: (2 cores); short blocks cost nothing in the selection, which keeps its state across blocks
_SCORE_ELEMENTS = 1 << 18
#: the shortest database block scanned at once
_MIN_BLOCK = 256
#: the longest block of gathered ``members`` rows (3 MB at d = 768)
_GATHER_ROWS = 1024
#: rows squared at once by :func:`row_norms`: the 3 MB temporary stays in the cache (1.1M x 768: 0.24 s, against
#: 0.6 s with 8k-row blocks whose 24 MB squares went out to memory and back)
_NORM_ROWS = 1024


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
    """``(N, Q)`` float32 torch scores of each database row (rows) for each query (columns), smaller is nearer:
    ``|x|^2 - 2 q.x`` for ``l2`` (the query's own norm, the same for every candidate, is left out) and ``-q.x`` for
    ``ip``. Inputs are C-contiguous float32 arrays; ``out``, an (N, Q) buffer, receives them."""
    import torch

    # one fused product with the database rows as its long side: MKL runs (N x d) @ (d x Q) at ~2x the speed of
    # (Q x d) @ (d x N) when Q is a few hundred (114 vs 58 GFLOP/s on 2 cores for N = 65,536, Q = 256); the factor
    # -2 (or -1) is exact, so this equals products * -2 + norms
    db, q = torch.from_numpy(database), torch.from_numpy(queries)
    if metric == "ip":
        return torch.mm(db, q.T, out=out).neg_()
    norms = database_norms if database_norms is not None else row_norms(database)
    return torch.addmm(torch.from_numpy(norms).unsqueeze(1), db, q.T, alpha=-2, out=out)


def knn_scores(database: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2",
               database_norms: np.ndarray | None = None,
               members: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``database`` for each query row: (Q, k) float32 scores (as :func:`scores`) and
    int64 row indices, nearest first, equal scores by index, padded with (inf, -1) when ``k`` exceeds the rows
    searched. Rows whose score is NaN are never neighbours (the engine refuses non-finite vectors before a round).

    ``members`` (int64 rows of ``database``) searches only those rows, as if ``database[members]`` had been passed:
    the indices returned are positions in ``members``. Each block of them is gathered into a small buffer right
    before its product, so the gathered rows are read back from the cache instead of being copied out to memory
    first (an IVF cell of 60k vectors is 186 MB). ``database_norms`` are always per row of ``database``.

    The rows are scanned in blocks; each block's scores are folded into every query's running k best by one
    compiled pass (:class:`norton_core.retrieval.smallest_k.RunningSmallest`) that compares each score with the query's
    current k-th best. The score blocks reuse one buffer: a fresh block page-faults every 4 KB of it."""
    import torch

    from norton_core.retrieval.smallest_k import RunningSmallest

    if metric not in ("l2", "ip"):
        raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
    database = np.ascontiguousarray(database, dtype=np.float32)  # the caller's matrix itself for float32 input
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n = len(database) if members is None else len(members)
    kk = min(k, n)
    out_s = np.full((len(queries), k), np.inf, dtype=np.float32)
    out_i = np.full((len(queries), k), -1, dtype=np.int64)
    if kk == 0 or len(queries) == 0:
        return out_s, out_i
    norms = None
    if metric == "l2":
        norms = database_norms if database_norms is not None else row_norms(database) if members is None else None
    # blocks of the rows by chunks of the queries, each (block x chunk) product within _SCORE_ELEMENTS
    block = max(_MIN_BLOCK, _SCORE_ELEMENTS // len(queries))
    if members is not None:  # few queries: gathered blocks still small enough to be read back from the cache
        block = min(block, _GATHER_ROWS)
    q_chunk = max(1, _SCORE_ELEMENTS // block)
    buffer = torch.empty(min(block, n) * min(q_chunk, len(queries)), dtype=torch.float32)
    if members is not None:
        member_rows = torch.from_numpy(np.ascontiguousarray(members, dtype=np.int64))
        source = torch.from_numpy(database)
        gathered = torch.empty((min(block, n), database.shape[1]), dtype=torch.float32)
    with torch.no_grad():
        for a in range(0, len(queries), q_chunk):
            q = queries[a:a + q_chunk]
            best = RunningSmallest(len(q), kk)
            for b in range(0, n, block):
                rows = min(block, n - b)
                if members is None:
                    part, part_norms = database[b:b + rows], None if norms is None else norms[b:b + rows]
                else:
                    which = member_rows[b:b + rows]
                    part = torch.index_select(source, 0, which, out=gathered[:rows]).numpy()
                    part_norms = None if metric == "ip" else row_norms(part) if norms is None else norms[which.numpy()]
                found = scores(q, part, metric, part_norms, out=buffer[:rows * len(q)].view(rows, len(q)))
                best.add(found.numpy(), b)
            out_s[a:a + len(q), :kk], out_i[a:a + len(q), :kk] = best.result()
    return out_s, out_i


def exact_knn(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2") -> np.ndarray:
    """Exact k nearest rows of ``vectors`` for each query row: (Q, k) int64, nearest first, -1 padded when
    ``k > len(vectors)``. Equal scores are ordered by index."""
    return knn_scores(vectors, queries, k, metric)[1]
