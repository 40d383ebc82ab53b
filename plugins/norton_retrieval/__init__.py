"""Built-in retrieval backends: ``faiss-ivf`` (the reference's IVFFlat index) and ``exact`` (brute force).

A backend indexes one vector per training video at every retrieval round and answers "which videos are near
these videos" (see :class:`norton_core.plugin.interfaces.RetrievalBackend`). The engine turns the answers into batches.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import attrs
import numpy as np

from norton_core import RetrievalBackend, exact_knn, hookimpl, knn_scores, option, row_norms


@attrs.frozen
class FaissIVFConfig:
    nlist: int = option(512, ge=1, help="inverted lists (k-means centroids); capped at the number of videos")
    nprobe: int = option(1, ge=1, help="lists visited per query; 1 (the reference) = the query's own cell only")
    train_per_centroid: int = option(48, ge=1, help="k-means training vectors per centroid, a seeded sample "
                                     "(the reference: 512 x 48 = 24,576, whatever the number of videos)")
    metric: Literal["l2", "ip"] = option("l2", help="l2 (the reference) or inner product")
    kmeans_iterations: int = option(10, ge=1)


class FaissIVF(RetrievalBackend):
    """faiss ``IndexIVFFlat``'s neighbours without faiss holding a copy of every vector.

    faiss trains the k-means centroids (on ``nlist x train_per_centroid`` sampled vectors: the training cost does
    not grow with the number of videos) and assigns every vector to its nearest centroid, exactly as
    ``IndexIVFFlat.add`` does. The cells are then lists of rows of the caller's matrix, which the backend keeps
    a reference to (not a copy: the index costs ~30 bytes per video, plus a few hundred gathered rows while a cell
    is searched, so a round peaks near 1x the vectors instead of 2x; do not modify the matrix while searching).
    A search visits each query's ``nprobe`` nearest cells, as faiss does, and scores all the queries of a cell
    against its members in blocked matrix products (:func:`norton_core.retrieval.search.knn_scores`, which gathers the
    members block by block) instead of faiss's memory-bound scan per query: the same
    neighbours (exact L2 or inner product, ties by id) up to float32 rounding of near-ties. With the reference's
    ``nprobe = 1`` the "neighbours" are the query's cell mates, i.e. a hard-negative cluster rather than a true
    k-NN list; short lists come back padded with -1 (the engine tops batches up).
    """

    name = "faiss-ivf"
    Config = FaissIVFConfig

    def __init__(self, config: FaissIVFConfig, seed: int = 0) -> None:
        self.config, self.seed = config, seed
        self.quantizer: Any = None  # the trained faiss flat index over the centroids
        self.build_info: dict[str, float] = {}
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self.norms: np.ndarray | None = None
        self.ids = self.members = self.starts = self.cell_of = self.row_of = np.zeros(0, dtype=np.int64)
        self.ids_increase = True

    def build(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # the caller's matrix itself when float32
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        n, dim = vectors.shape
        # faiss refuses to train k-means with fewer points than centroids; small runs get fewer, fuller cells
        nlist = max(1, min(self.config.nlist, n))
        metric = faiss.METRIC_L2 if self.config.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        quantizer = faiss.IndexFlatL2(dim) if self.config.metric == "l2" else faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, metric)  # only trained: it never holds the vectors
        index.cp.seed = self.seed
        index.cp.niter = self.config.kmeans_iterations
        index.cp.min_points_per_centroid = 1  # silence the warning: small demo sets are expected
        train_size = min(n, nlist * self.config.train_per_centroid)
        # faiss would otherwise quietly subsample a training set above 256 per centroid: ours is already the sample
        index.cp.max_points_per_centroid = max(1, -(-train_size // nlist))
        # a seeded sample rather than the reference's "first vectors seen", which depends on the embedding order
        sample = np.sort(np.random.default_rng(self.seed).choice(n, size=train_size, replace=False))
        started = time.perf_counter()
        index.train(vectors[sample])
        trained = time.perf_counter()
        # every vector's cell: the quantizer's nearest centroid, the assignment IndexIVFFlat.add makes
        cell = quantizer.assign(vectors, 1).reshape(n) if n else np.zeros(0, dtype=np.int64)
        self.members = np.argsort(cell, kind="stable")  # rows by cell, in row order within a cell as faiss's lists
        self.starts = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=nlist))])
        self.quantizer, self.vectors, self.ids = quantizer, vectors, ids
        self.ids_increase = bool(np.all(ids[1:] > ids[:-1]))  # then row order is id order (the engine's ids)
        self.norms = row_norms(vectors) if self.config.metric == "l2" else None  # 4 bytes per video
        #: what the last build did, for logs and benchmarks
        self.build_info = {"train_vectors": train_size, "cells": nlist, "kmeans_seconds": trained - started,
                           "assign_seconds": time.perf_counter() - trained}
        # where each indexed video sits: its row and its cell
        size = int(np.max(ids)) + 1 if len(ids) else 0
        self.row_of, self.cell_of = np.full(size, -1, dtype=np.int64), np.full(size, -1, dtype=np.int64)
        self.row_of[ids], self.cell_of[ids] = np.arange(n), cell

    @property
    def nprobe(self) -> int:
        return min(self.config.nprobe, len(self.starts) - 1)

    def search(self, query_ids: np.ndarray, k: int) -> np.ndarray:
        if self.quantizer is None:
            raise RuntimeError("faiss-ivf: search() before build()")
        query_ids = np.asarray(query_ids, dtype=np.int64)
        known = (query_ids >= 0) & (query_ids < len(self.row_of))
        rows = np.full(len(query_ids), -1, dtype=np.int64)
        rows[known] = self.row_of[query_ids[known]]
        if (rows < 0).any():
            raise KeyError(f"faiss-ivf: video id {int(query_ids[np.flatnonzero(rows < 0)[0]])} is not indexed")
        if self.nprobe == 1:
            probes = self.cell_of[query_ids][:, None]  # its own cell is a query's nearest centroid
        else:
            probes = self.quantizer.assign(self.vectors[rows], self.nprobe)  # what IndexIVFFlat.search probes
        return self._search_cells(rows, probes, k)

    def _search_cells(self, rows: np.ndarray, probes: np.ndarray, k: int) -> np.ndarray:
        """Top ``k`` ids among the members of each query's probed cells: every probed cell's queries are searched
        exactly among its members (blocked products, :func:`knn_scores`), then the per-cell lists are merged."""
        q, probe = probes.shape
        best_s = np.full((q * probe, k), np.inf, dtype=np.float32)
        best_i = np.full((q * probe, k), -1, dtype=np.int64)
        flat = probes.ravel()
        order = np.argsort(flat, kind="stable")
        bounds = np.flatnonzero(np.diff(flat[order])) + 1
        for group in np.split(order, bounds):
            if not len(group):
                continue
            c = int(flat[group[0]])
            members = self.members[self.starts[c]:self.starts[c + 1]]
            if not len(members):
                continue
            # the cell's members are gathered block by block inside knn_scores: never a copy of the whole cell
            s, local = knn_scores(self.vectors, self.vectors[rows[group // probe]], k, self.config.metric, self.norms,
                                  members=members)
            best_s[group], best_i[group] = s, np.where(local >= 0, self.ids[members[np.maximum(local, 0)]], -1)
        if probe == 1 and self.ids_increase:
            # one cell's list per query, already nearest first with equal scores by row, i.e. by id, and the
            # empty slots last: the merge below would only sort it again (0.4 s for 17k queries at 1.1M)
            return best_i
        s, i = best_s.reshape(q, probe * k), best_i.reshape(q, probe * k)
        # nearest first, equal scores by id, the empty slots (inf, -1) last
        order = np.lexsort((np.where(i < 0, np.iinfo(np.int64).max, i), s), axis=1)[:, :k]
        return np.take_along_axis(i, order, 1)


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
def norton_register_retrieval_backends(register) -> None:  # noqa: ANN001 - pluggy passes the Register
    register(FaissIVF)
    register(Exact)
