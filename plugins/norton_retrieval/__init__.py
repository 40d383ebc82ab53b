"""Built-in retrieval backends: ``faiss-ivf`` (the reference's IVFFlat index) and ``exact`` (brute force).

A backend indexes one vector per training video at every retrieval round and answers "which videos are near
these videos" (see :class:`norton_core.interfaces.RetrievalBackend`). The engine turns the answers into batches.
"""

from __future__ import annotations

from typing import Literal

import attrs
import numpy as np

from norton_core import RetrievalBackend, hookimpl, option
from norton_core.neighbours import exact_knn, scores


@attrs.frozen
class FaissIVFConfig:
    nlist: int = option(512, ge=1, help="inverted lists (k-means centroids); capped at the number of videos")
    nprobe: int = option(1, ge=1, help="lists visited per query; 1 (the reference) = the query's own cell only")
    train_per_centroid: int = option(48, ge=1, help="training vectors per centroid (the reference: 512 x 48)")
    metric: Literal["l2", "ip"] = option("l2", help="l2 (the reference) or inner product")
    kmeans_iterations: int = option(10, ge=1)


class FaissIVF(RetrievalBackend):
    """faiss ``IndexIVFFlat``: k-means cells, search within the ``nprobe`` nearest cells.

    With the reference's ``nprobe = 1`` the "neighbours" are the query's cell mates, i.e. a hard-negative cluster
    rather than a true k-NN list; short lists come back padded with -1 (the engine tops batches up). The queries
    are indexed videos, so each is looked up in the index's own storage (no second copy of the vectors), and with
    ``nprobe = 1`` each cell's queries are scored against its members in one matrix product, instead of faiss's
    memory-bound scan per query (the same neighbours: exact L2 or inner product within the cell, ties by id).
    """

    name = "faiss-ivf"
    Config = FaissIVFConfig

    def __init__(self, config: FaissIVFConfig, seed: int = 0) -> None:
        self.config, self.seed = config, seed
        self.index = None
        self.cells: list[tuple[np.ndarray, np.ndarray]] = []
        self.cell_of = self.row_of = np.zeros(0, dtype=np.int64)

    def build(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # the caller's matrix itself when float32
        n, dim = vectors.shape
        # faiss refuses to train k-means with fewer points than centroids; small runs get fewer, fuller cells
        nlist = max(1, min(self.config.nlist, n))
        metric = faiss.METRIC_L2 if self.config.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        quantizer = faiss.IndexFlatL2(dim) if self.config.metric == "l2" else faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
        index.cp.seed = self.seed
        index.cp.niter = self.config.kmeans_iterations
        index.cp.min_points_per_centroid = 1  # silence the warning: small demo sets are expected
        train_size = min(n, nlist * self.config.train_per_centroid)
        # a seeded sample rather than the reference's "first vectors seen", which depends on the embedding order
        sample = np.sort(np.random.default_rng(self.seed).choice(n, size=train_size, replace=False))
        index.train(vectors[sample])
        index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        index.nprobe = min(self.config.nprobe, nlist)
        self.index, self.cells = index, _cells(index, dim)
        # where each indexed video sits: its cell and its row there
        size = int(np.max(ids)) + 1 if len(ids) else 0
        self.cell_of, self.row_of = np.full(size, -1, dtype=np.int64), np.full(size, -1, dtype=np.int64)
        for c, (members, _) in enumerate(self.cells):
            self.cell_of[members], self.row_of[members] = c, np.arange(len(members))

    def search(self, query_ids: np.ndarray, k: int) -> np.ndarray:
        if self.index is None:
            raise RuntimeError("faiss-ivf: search() before build()")
        query_ids = np.asarray(query_ids, dtype=np.int64)
        if self.index.nprobe == 1:
            return self._search_own_cells(query_ids, k)
        queries = np.empty((len(query_ids), self.index.d), dtype=np.float32)
        for c, rows in self._by_cell(query_ids):
            queries[rows] = self.cells[c][1][self.row_of[query_ids[rows]]]
        _, labels = self.index.search(queries, k)
        return labels.astype(np.int64)

    def _by_cell(self, query_ids: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(cell, positions in ``query_ids``) for each cell holding queries."""
        cells = self.cell_of[query_ids]
        if (cells < 0).any():
            raise KeyError(f"faiss-ivf: video id {int(query_ids[np.flatnonzero(cells < 0)[0]])} is not indexed")
        order = np.argsort(cells, kind="stable")
        starts = np.flatnonzero(np.diff(cells[order])) + 1
        return [(int(cells[group[0]]), group) for group in np.split(order, starts) if len(group)]

    def _search_own_cells(self, query_ids: np.ndarray, k: int) -> np.ndarray:
        import torch

        out = np.full((len(query_ids), k), -1, dtype=np.int64)
        with torch.no_grad():
            for c, rows in self._by_cell(query_ids):
                member_ids, vectors = self.cells[c]
                members = torch.from_numpy(vectors)
                part = scores(members[torch.from_numpy(self.row_of[query_ids[rows]])], members, self.config.metric)
                kk = min(k, len(member_ids))
                top = torch.topk(part, kk, dim=1, largest=False, sorted=False)
                found, value = member_ids[top.indices.numpy()], top.values.numpy()
                out[rows, :kk] = np.take_along_axis(found, np.lexsort((found, value), axis=1), 1)
        return out


def _cells(index: object, dim: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each inverted list's (ids, (m, d) float32 vectors) as numpy views of the index's own storage."""
    import faiss

    invlists = index.invlists  # type: ignore[attr-defined]
    out = []
    for c in range(invlists.nlist):
        m = invlists.list_size(c)
        if m == 0:
            out.append((np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)))
            continue
        ids = faiss.rev_swig_ptr(invlists.get_ids(c), m).view(np.int64)
        codes = faiss.rev_swig_ptr(invlists.get_codes(c), m * dim * 4)
        out.append((ids, codes.view(np.float32).reshape(m, dim)))
    return out


@attrs.frozen
class ExactConfig:
    metric: Literal["l2", "ip"] = option("l2")


class Exact(RetrievalBackend):
    """Brute-force k-NN (blocked matrix products): the recall reference, and fine up to ~100k videos.

    Built on ids ``0..N-1`` in order (what the engine passes), it searches the caller's matrix itself."""

    name = "exact"
    Config = ExactConfig

    def __init__(self, config: ExactConfig, seed: int = 0) -> None:
        self.config = config
        self.vectors: np.ndarray | None = None

    def build(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        if np.array_equal(ids, np.arange(len(ids))):
            self.vectors = vectors
        else:
            self.vectors = np.empty_like(vectors)
            self.vectors[ids] = vectors

    def search(self, query_ids: np.ndarray, k: int) -> np.ndarray:
        if self.vectors is None:
            raise RuntimeError("exact: search() before build()")
        queries = self.vectors[np.asarray(query_ids, dtype=np.int64)]
        return exact_knn(self.vectors, queries, k, metric=self.config.metric)


@hookimpl
def norton_register_retrieval_backends(register) -> None:  # type: ignore[no-untyped-def]
    register(FaissIVF)
    register(Exact)
