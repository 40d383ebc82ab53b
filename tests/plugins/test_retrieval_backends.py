"""The built-in retrieval backends (exact and faiss-style cells)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from norton_core.retrieval.round import neighbour_recall


def test_builtin_backends_find_cluster_mates():
    from norton_retrieval import Exact, ExactConfig, FaissIVF, FaissIVFConfig

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 16)) * 10
    x = (centres[np.arange(400) % 8] + rng.normal(size=(400, 16))).astype(np.float32)
    ids = np.arange(400)
    exact = Exact(ExactConfig())
    exact.build(x, ids)
    ivf = FaissIVF(FaissIVFConfig(nlist=8, nprobe=1), seed=0)
    ivf.build(x, ids)
    for backend in (exact, ivf):
        found = backend.search(np.arange(0, 400, 37), 20)
        assert found.shape == (11, 20) and found.dtype == np.int64
        same = (found % 8 == (np.arange(0, 400, 37) % 8)[:, None]) | (found < 0)
        assert same.mean() > 0.95
    assert neighbour_recall(exact, x, 10, 20, random.Random(0)) == (1.0, 0.0)
    assert neighbour_recall(ivf, x, 10, 20, random.Random(0))[0] > 0.3
    tiny = FaissIVF(FaissIVFConfig(nlist=512), seed=0)  # more lists than vectors: capped, still answers
    tiny.build(x[:5], np.arange(5))
    assert (tiny.search(np.arange(5), 3)[:, 0] == np.arange(5)).all()


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ivf_searches_cells_as_faiss_does_without_a_copy_of_the_vectors(metric, monkeypatch):
    """Each probed cell's queries scored in one product give faiss IndexIVFFlat's own neighbours for the same
    centroids (nprobe 1 and 3, ids not equal to rows, short lists padded with -1), and the backend holds the
    caller's matrix, no copy of it. Exact search over many blocks agrees too."""
    import faiss
    from norton_retrieval import Exact, ExactConfig, FaissIVF, FaissIVFConfig

    import norton_core.retrieval.search as nb

    rng = np.random.default_rng(2)
    centres = rng.normal(size=(6, 24)) * 3
    x = (centres[np.arange(900) % 6] + rng.normal(size=(900, 24))).astype(np.float32)
    queries = np.asarray(sorted(rng.choice(900, 80, replace=False)))
    # shuffled ids, and increasing ones with gaps (rows in id order, as the engine's: a shorter path at nprobe 1)
    for ids in (rng.permutation(900), np.sort(rng.choice(5000, 900, replace=False))):
        for nprobe in (1, 3):
            ivf = FaissIVF(FaissIVFConfig(nlist=16, nprobe=nprobe, metric=metric), seed=0)
            ivf.build(x, ids)
            assert ivf.vectors is x
            reference = faiss.IndexIVFFlat(ivf.quantizer, 24, 16, faiss.METRIC_L2 if metric == "l2" else
                                           faiss.METRIC_INNER_PRODUCT)
            reference.add_with_ids(x, ids)
            reference.nprobe = nprobe
            for k in (40, 300):  # 300: more than some cells hold
                _, labels = reference.search(x[queries], k)
                assert (ivf.search(ids[queries], k) == labels).all()  # queries are ids; these rows' ids
            assert nprobe == 3 or (labels < 0).any()
    monkeypatch.setattr(nb, "_SCORE_ELEMENTS", 1 << 12)  # many database blocks and query chunks
    monkeypatch.setattr(nb, "_NORM_ROWS", 7)  # squared norms in many blocks, the last one short
    assert np.allclose(nb.row_norms(x), (x.astype(np.float64) ** 2).sum(1), rtol=1e-6, atol=0)
    exact = Exact(ExactConfig(metric=metric))
    exact.build(x, np.arange(900))
    assert exact.vectors is x  # the caller's matrix, not a copy
    s = -(x[queries].astype(np.float64) @ x.T.astype(np.float64))
    if metric == "l2":
        s = s * 2 + (x.astype(np.float64) ** 2).sum(1)
    found = exact.search(queries, 50)
    # the true 50 nearest in order, up to float32 rounding of near-ties (scores within 1e-6 of each other)
    assert np.allclose(np.take_along_axis(s, found, 1), np.sort(s, axis=1)[:, :50], rtol=1e-6, atol=0)
    assert (found == np.argsort(s, axis=1, kind="stable")[:, :50]).all(1).mean() > 0.95


def test_faiss_threads_follow_run_threads_and_are_put_back():
    """A one-thread run (two side by side in a study) keeps faiss's retrieval round at one thread too, a
    deterministic one as well, and the previous setting returns afterwards."""
    import types

    import faiss

    from norton_core.engine.setup import apply_determinism

    faiss.omp_set_num_threads(2)
    before_torch = torch.get_num_threads()
    for cfg in (types.SimpleNamespace(threads=1, deterministic=False),
                types.SimpleNamespace(threads=2, deterministic=True)):
        restore = apply_determinism(cfg)
        try:
            assert faiss.omp_get_max_threads() == 1
        finally:
            restore()
        assert faiss.omp_get_max_threads() == 2 and torch.get_num_threads() == before_torch
