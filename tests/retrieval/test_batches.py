"""Neighbour lists into batches (the compiled draw) and the recall check reusing the round's own search."""

from __future__ import annotations

import random

import numpy as np
import pytest

from norton_core.retrieval.batches import neighbour_batches
from norton_core.retrieval.round import exact_knn, neighbour_recall


def test_a_long_list_gives_a_uniform_random_subset_in_random_order():
    """10 candidates (the query 0 and neighbours 1..9), V = 4, drawn for 6,000 queries: each candidate is in a batch
    with probability 0.4 and first in it with probability 0.1 (as random.sample(cands, 4)), within 5 standard
    errors; every batch holds 4 distinct candidates."""
    rows = 6000
    batches = neighbour_batches(np.tile(np.arange(1, 10), (rows, 1)), np.zeros(rows, dtype=np.int64), 4, 50,
                                random.Random(3))
    assert batches.shape == (rows, 4)
    assert all(len(set(b)) == 4 and set(b) <= set(range(10)) for b in batches.tolist())
    inside = np.stack([(batches == c).any(1).mean() for c in range(10)])
    first = np.bincount(batches[:, 0], minlength=10) / rows
    assert np.abs(inside - 0.4).max() < 5 * np.sqrt(0.4 * 0.6 / rows)
    assert np.abs(first - 0.1).max() < 5 * np.sqrt(0.1 * 0.9 / rows)
    # and every position, not only the first, is uniform: the draw is in random order
    last = np.bincount(batches[:, 3], minlength=10) / rows
    assert np.abs(last - 0.1).max() < 5 * np.sqrt(0.1 * 0.9 / rows)


def test_repeats_and_minus_one_are_dropped_and_a_short_list_keeps_its_order():
    neighbours = np.array([[5, 3, 3, -1, 7], [1, 2, 3, 4, 6]])
    queries = np.array([5, 0])
    kept = neighbour_batches(neighbours, queries, 4, 10, random.Random(0), keep_short=True)
    assert kept[0].tolist() == [5, 3, 7, -1]  # the query first, then its neighbours in order, padded
    assert len(set(kept[1].tolist())) == 4 and set(kept[1].tolist()) <= {0, 1, 2, 3, 4, 6}
    topped = neighbour_batches(neighbours, queries, 4, 10, random.Random(0))
    assert topped[0, :3].tolist() == [5, 3, 7] and topped[0, 3] not in (5, 3, 7) and 0 <= topped[0, 3] < 10


def test_batches_follow_from_the_seed():
    neighbours = np.random.default_rng(0).permutation(1000)[:600].reshape(30, 20)
    queries = np.arange(1000, 1030)
    one = neighbour_batches(neighbours, queries, 8, 1030, random.Random(7))
    assert (one == neighbour_batches(neighbours, queries, 8, 1030, random.Random(7))).all()
    assert (one != neighbour_batches(neighbours, queries, 8, 1030, random.Random(8))).any()


def test_positions_outside_the_videos_are_refused():
    with pytest.raises(ValueError, match="outside -1..9"):
        neighbour_batches(np.array([[1, 10]]), np.array([0]), 2, 10, random.Random(0))


def test_the_recall_checks_the_rounds_own_lists_without_searching_again():
    """With as many searched queries as the sample, the recall is measured on (a sample of) the lists the round
    searched; with fewer, only the missing queries are searched."""
    x = np.random.default_rng(1).normal(size=(200, 4)).astype(np.float32)
    queries = np.arange(0, 200, 5)
    truth = exact_knn(x, x[queries], 6)

    class Counting:
        name = "counting"
        asked: list[int] = []

        def search(self, q, k):
            self.asked.extend(q.tolist())
            return exact_knn(x, x[q], k)

    backend = Counting()
    assert neighbour_recall(backend, x, 6, 10, random.Random(0), "l2", (queries, truth)) == (1.0, 0.0)
    assert backend.asked == []
    wrong = truth.copy()
    wrong[:, 1:] = truth[::-1, 1:]  # every list but its own nearest (the query) replaced
    value, _ = neighbour_recall(backend, x, 6, 40, random.Random(0), "l2", (queries, wrong))
    assert value < 0.5 and backend.asked == []
    value, se = neighbour_recall(backend, x, 6, 50, random.Random(0), "l2", (queries, truth))
    assert (value, se) == (1.0, 0.0)
    assert len(backend.asked) == 10 and not set(backend.asked) & set(queries.tolist())


def test_a_batch_cannot_be_topped_up_beyond_the_videos_there_are():
    with pytest.raises(ValueError, match="cannot top a batch up to 4 distinct videos out of 3"):
        neighbour_batches(np.array([[1, -1]]), np.array([0]), 4, 3, random.Random(0))
    assert neighbour_batches(np.array([[1, -1]]), np.array([0]), 4, 3, random.Random(0), keep_short=True)[0].tolist() \
        == [0, 1, -1, -1]


def test_neighbour_batches_handle_short_lists_and_minus_one():
    rng = random.Random(0)
    found = np.array([[0, 5, -1, -1, -1, -1], [1, 2, 3, 4, 6, 7], [2, 2, 2, -1, -1, -1]])
    batches = neighbour_batches(found, np.array([0, 1, 2]), 4, 10, rng)
    assert batches.shape == (3, 4)
    for row, q in zip(batches, (0, 1, 2), strict=True):
        assert q in row or len(set(row.tolist())) == 4
        assert len(set(row.tolist())) == 4 and all(0 <= v < 10 for v in row)
    assert {0, 5} <= set(batches[0].tolist())
    assert set(batches[1].tolist()) <= {1, 2, 3, 4, 6, 7}
