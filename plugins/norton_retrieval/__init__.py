"""Built-in retrieval backends: ``faiss-ivf`` (the reference's IVFFlat index) and ``exact`` (brute force).

A backend indexes one vector per training video at every retrieval round and answers "which videos are near
these videos" (see :class:`norton_core.interfaces.RetrievalBackend`). The engine turns the answers into batches.
"""

from __future__ import annotations

from typing import Literal

import attrs
import numpy as np

from norton_core import RetrievalBackend, hookimpl, option
from norton_core.engine.retrieval import exact_knn


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
    rather than a true k-NN list; short lists come back padded with -1 (the engine tops batches up).
    """

    name = "faiss-ivf"
    Config = FaissIVFConfig

    def __init__(self, config: FaissIVFConfig, seed: int = 0) -> None:
        self.config, self.seed = config, seed
        self.vectors: np.ndarray | None = None
        self.index = None

    def build(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
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
        self.index, self.ids = index, np.asarray(ids, dtype=np.int64)
        # queries are indexed videos: keep their vectors by id instead of rebuilding a direct map per query
        self.vectors = np.empty_like(vectors)
        self.vectors[self.ids] = vectors

    def search(self, query_ids: np.ndarray, k: int) -> np.ndarray:
        if self.index is None or self.vectors is None:
            raise RuntimeError("faiss-ivf: search() before build()")
        _, labels = self.index.search(self.vectors[np.asarray(query_ids, dtype=np.int64)], k)
        return labels.astype(np.int64)


@attrs.frozen
class ExactConfig:
    metric: Literal["l2", "ip"] = option("l2")


class Exact(RetrievalBackend):
    """Brute-force k-NN (chunked matrix products): the recall reference, and fine up to ~100k videos."""

    name = "exact"
    Config = ExactConfig

    def __init__(self, config: ExactConfig, seed: int = 0) -> None:
        self.config = config
        self.vectors: np.ndarray | None = None

    def build(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.vectors = np.empty_like(np.asarray(vectors, dtype=np.float32))
        self.vectors[np.asarray(ids, dtype=np.int64)] = vectors

    def search(self, query_ids: np.ndarray, k: int) -> np.ndarray:
        if self.vectors is None:
            raise RuntimeError("exact: search() before build()")
        queries = self.vectors[np.asarray(query_ids, dtype=np.int64)]
        return exact_knn(self.vectors, queries, k, metric=self.config.metric)


@hookimpl
def norton_register_retrieval_backends(register) -> None:  # type: ignore[no-untyped-def]
    register(FaissIVF)
    register(Exact)
