"""Exact k-nearest-neighbour search in blocks, against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from norton_core.retrieval.round import exact_knn


def test_exact_knn_matches_brute_force_and_pads():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    got = exact_knn(x, x[:7], 5)
    dist = ((x[:7, None, :] - x[None]) ** 2).sum(-1)
    assert (got == np.argsort(dist, axis=1, kind="stable")[:, :5]).all()
    assert (got[:, 0] == np.arange(7)).all()
    padded = exact_knn(x[:3], x[:1], 5)
    assert padded.shape == (1, 5) and (padded[0, 3:] == -1).all() and sorted(padded[0, :3]) == [0, 1, 2]


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_exact_knn_blocks_merge_to_brute_force_with_ties(metric, monkeypatch):
    """Many database blocks and query chunks give the brute-force order exactly: small integer vectors make the
    scores exact in float32, with many ties, ordered by index."""
    import norton_core.retrieval.search as nb

    monkeypatch.setattr(nb, "_MIN_BLOCK", 16)
    monkeypatch.setattr(nb, "_SCORE_ELEMENTS", 1 << 9)
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, size=(300, 5)).astype(np.float32)
    q = x[rng.choice(300, 21, replace=False)] + rng.integers(-1, 2, size=(21, 5)).astype(np.float32)
    exact = (q.astype(np.int64) @ x.T.astype(np.int64)) * -1
    if metric == "l2":
        exact = exact * 2 + (x.astype(np.int64) ** 2).sum(1)
    s, i = nb.knn_scores(x, q, 40, metric)
    assert (i == np.argsort(exact, axis=1, kind="stable")[:, :40]).all()
    assert (s == np.take_along_axis(exact, i, 1)).all()
    s, i = nb.knn_scores(x[:30], q, 40, metric)  # more than the database holds: padded with (inf, -1)
    assert (i[:, 30:] == -1).all() and np.isinf(s[:, 30:]).all() and (np.sort(i[:, :30], 1) == np.arange(30)).all()
    # a subset of the rows, gathered block by block, is searched as if it had been passed itself; indices are
    # positions in the subset, with or without the full matrix's norms
    members = np.sort(rng.choice(300, 170, replace=False))
    alone = nb.knn_scores(x[members], q, 40, metric)
    monkeypatch.setattr(nb, "_GATHER_ROWS", 7)  # gathered blocks shorter than the product's own
    for norms in (None, nb.row_norms(x)):
        s, i = nb.knn_scores(x, q, 40, metric, norms, members=members)
        assert (i == alone[1]).all() and (s == alone[0]).all()
