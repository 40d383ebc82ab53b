"""The compiled running k-smallest selection and its sorted result."""

from __future__ import annotations

import numpy as np
import pytest


def test_running_smallest_equals_a_full_sort_over_many_blocks_with_ties_and_nan(monkeypatch):
    """The compiled selection keeps each query's k smallest (score, row) pairs over blocks given in row order, ties
    by the smaller row, whatever the block sizes; its buffer is cut back many times (a small buffer factor), NaN
    scores are never kept and a query with fewer than k finite scores gets (inf, -1) padding."""
    import norton_core.retrieval.smallest_k as sk

    monkeypatch.setattr(sk, "BUFFER_FACTOR", 2)
    rng = np.random.default_rng(7)
    for trial in range(40):
        n, q, k = int(rng.integers(1, 600)), int(rng.integers(1, 7)), int(rng.integers(1, 50))
        scores = rng.integers(-6, 6, size=(n, q)).astype(np.float32)  # few distinct values: many ties
        if trial % 3 == 0:
            scores[rng.random((n, q)) < 0.2] = np.nan
        best, start = sk.RunningSmallest(q, k), 0
        while start < n:
            rows = int(rng.integers(1, 90))
            best.add(np.ascontiguousarray(scores[start:start + rows]), start)
            start += rows
        values, rows = best.result()
        for j in range(q):
            finite = np.flatnonzero(~np.isnan(scores[:, j]))
            expected = finite[np.lexsort((finite, scores[finite, j]))][:k]
            assert (rows[j, :len(expected)] == expected).all(), (trial, j)
            assert (values[j, :len(expected)] == scores[expected, j]).all()
            assert (rows[j, len(expected):] == -1).all() and np.isinf(values[j, len(expected):]).all()
    with pytest.raises(ValueError, match="C-contiguous float32"):
        sk.RunningSmallest(3, 2).add(np.zeros((4, 3)), 0)


def test_a_compile_is_said_on_stderr_and_a_cache_load_is_not(capsys):
    from norton_core._util.compiled import COMPILE_NOTICE_SECONDS, say_if_compiled

    say_if_compiled("test loop", COMPILE_NOTICE_SECONDS / 4)
    assert capsys.readouterr().err == ""
    say_if_compiled("test loop", COMPILE_NOTICE_SECONDS + 1.5)
    err = capsys.readouterr().err
    assert f"compiled the test loop (numba) in {COMPILE_NOTICE_SECONDS + 1.5:.1f}s" in err and "numba's cache" in err


def test_sorted_pairs_orders_like_lexsort_with_signed_zeros_infinities_and_huge_rows(monkeypatch):
    """The packed sort of a selection's result equals np.lexsort on (value, row): negative, -0.0 = 0.0 (then by
    row), -inf first, the (inf, -1) empty slots last; rows too large to pack go through lexsort itself."""
    import norton_core.retrieval.smallest_k as sk

    rng = np.random.default_rng(3)
    values = rng.choice(np.array([-2.5, -0.0, 0.0, 1e-30, -1e-30, 3.0, 1e30, -np.inf], np.float32), size=(50, 12))
    rows = rng.permutation(50 * 12).reshape(50, 12).astype(np.int64)
    values[:, -2:], rows[:, -2:] = np.inf, -1
    order = np.lexsort((rows, values), axis=1)
    want = np.take_along_axis(values, order, 1), np.take_along_axis(rows, order, 1)
    got = sk.sorted_pairs(values, rows)
    assert (got[1] == want[1]).all() and (got[0] == want[0]).all()
    monkeypatch.setattr(sk, "_PACKED_ROWS", 10)  # as if rows did not fit in 32 bits
    got = sk.sorted_pairs(values, rows)
    assert (got[1] == want[1]).all() and (got[0] == want[0]).all()
