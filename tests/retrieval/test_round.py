"""A retrieval round's checks: finite embeddings, the backend's results, the recall estimate."""

from __future__ import annotations

import random

import numpy as np
import pytest

from norton_core.errors import PluginError
from norton_core.retrieval.round import check_results, exact_knn, neighbour_recall


def test_a_round_refuses_non_finite_embeddings_naming_the_videos():
    """A NaN or infinite video vector would land in an arbitrary cell: the round stops with the store indices.
    Huge finite values whose block sum overflows are not flagged."""
    from norton_core.engine.distributed import Dist
    from norton_core.errors import TrainingError
    from norton_core.retrieval.round import _FINITE_ROWS, check_finite, non_finite_rows

    x = np.ones((3 * _FINITE_ROWS + 5, 4), dtype=np.float32)
    x[:_FINITE_ROWS] = 3e38  # each row finite, the block's sum not
    assert len(non_finite_rows(x)) == 0
    ids = np.arange(len(x)) + 100
    check_finite(x, ids, Dist())
    x[[7, _FINITE_ROWS + 3, len(x) - 1], [0, 2, 3]] = [np.nan, np.inf, -np.inf]
    assert non_finite_rows(x).tolist() == [7, _FINITE_ROWS + 3, len(x) - 1]
    with pytest.raises(TrainingError, match=rf"3 video embedding\(s\) are not finite .*store indices 107, "
                                            rf"{_FINITE_ROWS + 103}, {len(x) + 99}\)"):
        check_finite(x, ids, Dist())


def test_backend_results_are_validated_at_the_plugin_boundary():
    class Bad:
        name = "bad"

    with pytest.raises(PluginError, match="bad.*shape"):
        check_results(np.zeros((2, 3), np.int64), 2, 4, 10, Bad())
    with pytest.raises(PluginError, match="outside"):
        check_results(np.full((2, 4), 10, np.int64), 2, 4, 10, Bad())
    with pytest.raises(PluginError, match="dtype"):
        check_results(np.zeros((2, 4), np.float32), 2, 4, 10, Bad())


def test_recall_comes_with_its_standard_error_over_the_sampled_queries():
    """Two sampled queries, one answered exactly and one with half its neighbours wrong: recall 0.75, standard
    error std([1, 0.5], ddof=1) / sqrt(2) = 0.25; the log line says how many queries it rests on."""
    from norton_core.retrieval.round import describe_recall

    x = np.arange(10, dtype=np.float32).reshape(10, 1)

    class HalfWrong:
        name = "half-wrong"

        def search(self, queries, k):
            found = exact_knn(x, x[queries], k)
            found[-1, 1] = (found[-1, 0] + 5) % 10  # not among the last query's 2 nearest
            return found

    value, se = neighbour_recall(HalfWrong(), x, 2, 2, random.Random(0))
    assert (value, se) == (0.75, pytest.approx(0.25))
    assert describe_recall({"recall": value, "recall_se": se, "videos": 10}, 2) == "0.750 +- 0.250 over 2 queries"
    assert describe_recall({"recall": 1.0, "recall_se": float("nan"), "videos": 10}, 1) == "1.000 over 1 queries"
    assert all(np.isnan(neighbour_recall(HalfWrong(), x, 2, 0, random.Random(0))))  # sample 0: not measured
    assert describe_recall({"recall": float("nan")}, 0) == "off"
