"""Each query's k smallest scores over a stream of score blocks, in one compiled pass per block (numba).

The exact k-NN of the retrieval round scores database blocks against queries by matrix products; this module keeps
every query's k best (score, database row) pairs as the blocks arrive. Each query holds a bar, its k-th smallest
score so far, and a buffer of candidates: one pass over a block compares each score with its query's bar and appends
the few below it; a full buffer is cut back to the k best (a selection around the k-th value) and the bar lowered.
Once the bar has settled almost every score costs one comparison. The blocks can then be short, so that the products
and this pass work in the cache (see :data:`norton_core.retrieval.search._SCORE_ELEMENTS`); the torch version it replaced
ran ``topk`` on long blocks (~8 ns a score on 2 cores, copying every score into (value, index) pairs) and merged
later blocks with sorts.

Exact, with a total order: smaller score first, equal scores by smaller row. Rows arrive in increasing order (the
caller scans blocks in order), so a later score equal to the bar never displaces a kept one. NaN scores compare
false and are never kept (nor are +inf ones): a query with fewer than k finite scores gets (inf, -1) padding.

The pass runs in the calling thread: right after torch's product the other core is still held by torch's spinning
OpenMP worker, and a 2-thread version (numba ``prange``) measured no faster in a whole 1.1M-video search (6.1 vs
5.8 s) while paying ~90 us per launch. Without parallel code the kernels need no launch lock and compile in ~3 s.
"""

from __future__ import annotations

import time

import numpy as np
from numba.extending import register_jitable

from norton_core._util.compiled import compile_cached, say_if_compiled

#: buffer slots per query, in multiples of k: a cut back to k costs O(buffer) and happens rarely once the bar is low
BUFFER_FACTOR = 4


@register_jitable  # compiled into the kernels that call it (a plain function from Python)
def _kth_smallest(scratch, k):  # noqa: ANN001, ANN202
    """The k-th smallest (0-based) of ``scratch``, which it reorders: Wirth's selection, O(n) on average (numba's
    ``np.partition`` would do the same but takes ~11 s to compile)."""
    lo, hi = 0, len(scratch) - 1
    while lo < hi:
        pivot = scratch[k]
        i, j = lo, hi
        while True:
            while scratch[i] < pivot:
                i += 1
            while pivot < scratch[j]:
                j -= 1
            if i <= j:
                scratch[i], scratch[j] = scratch[j], scratch[i]
                i += 1
                j -= 1
            if i > j:
                break
        if j < k:
            lo = i
        if k < i:
            hi = j
    return scratch[k]


@register_jitable
def _cut(values, rows, filled, k):  # noqa: ANN001, ANN202
    """Keep the k smallest of ``values[:filled]`` (ties: the smaller rows) in the first k slots, unordered; returns
    the k-th smallest value, the new bar."""
    bar = _kth_smallest(values[:filled].copy(), k - 1)
    tied = np.sort(rows[:filled][values[:filled] == bar])
    kept = 0
    for e in range(filled):  # kept <= e: moving entries forward never overwrites an unread one
        if values[e] < bar:
            values[kept] = values[e]
            rows[kept] = rows[e]
            kept += 1
    for t in range(k - kept):
        values[kept + t] = bar
        rows[kept + t] = tied[t]
    return bar


def _scan(block, first_row, k, values, rows, filled, bars):  # noqa: ANN001, ANN202
    """Fold a (block rows, Q) score block, whose row r is database row ``first_row + r``, into the running state:
    ``values`` / ``rows`` (Q, buffer) candidates, ``filled`` (Q,) slots used, ``bars`` (Q,) the current bars. Row
    by row: the block's memory order."""
    capacity = values.shape[1]
    for r in range(block.shape[0]):
        for j in range(block.shape[1]):
            v = block[r, j]
            if v < bars[j]:
                slot = filled[j]
                values[j, slot] = v
                rows[j, slot] = first_row + r
                slot += 1
                if slot == capacity:
                    bars[j] = _cut(values[j], rows[j], slot, k)
                    slot = k
                filled[j] = slot


def _finish(k, values, rows, filled):  # noqa: ANN001, ANN202
    """Cut every over-full buffer back to its k best (unordered)."""
    for j in range(values.shape[0]):
        if filled[j] > k:
            _cut(values[j], rows[j], filled[j], k)
            filled[j] = k


#: the largest row :func:`sorted_pairs` packs into 32 bits (all ones stands for -1)
_PACKED_ROWS = (1 << 32) - 2


def sorted_pairs(values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of (float32 ``values``, int64 ``rows``) pairs sorted: smaller value first, equal values by row;
    the empty slots (inf, -1) last, as every kept score is below inf. Each pair is packed into one uint64 (the
    float's bits mapped to an order-preserving unsigned integer, then the row) and sorted once: half the time of
    ``np.lexsort`` (0.17 vs 0.34 s for 17k x 192 pairs)."""
    if rows.size and int(rows.max()) > _PACKED_ROWS:
        order = np.lexsort((rows, values), axis=1)
        return np.take_along_axis(values, order, 1), np.take_along_axis(rows, order, 1)
    bits = (values + np.float32(0.0)).view(np.uint32).astype(np.uint64)  # + 0: -0.0 and 0.0 are one score
    keys = np.where(bits >> 31, ~bits & 0xFFFFFFFF, bits | 0x80000000)  # negatives reversed, below positives
    packed = np.sort((keys << 32) | (rows.astype(np.uint64) & 0xFFFFFFFF), axis=1)
    high = (packed >> 32).astype(np.uint32)
    out_values = np.where(high >> 31, high & 0x7FFFFFFF, ~high).astype(np.uint32).view(np.float32)
    out_rows = (packed & 0xFFFFFFFF).astype(np.int64)
    out_rows[out_rows == 0xFFFFFFFF] = -1
    return out_values, out_rows


_kernels: dict[str, object] = {}
#: seconds the first launch spent loading or compiling the kernels (``None`` before it), for benchmarks
load_seconds: float | None = None


def _kernel(name: str):  # noqa: ANN202
    if name not in _kernels:
        _kernels["scan"] = compile_cached(_scan, "k-smallest selection", nogil=True)
        _kernels["finish"] = compile_cached(_finish, "k-smallest selection", nogil=True)
    return _kernels[name]


class RunningSmallest:
    """The k smallest (score, row) pairs of each of ``queries`` queries over score blocks given in row order.

    ``add(block, first_row)`` takes a C-contiguous float32 (rows, queries) array; ``result()`` gives (queries, k)
    float32 scores and int64 rows, nearest first, ties by row, padded with (inf, -1)."""

    def __init__(self, queries: int, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        capacity = BUFFER_FACTOR * k
        self.values = np.empty((queries, capacity), dtype=np.float32)
        self.rows = np.empty((queries, capacity), dtype=np.int64)
        self.filled = np.zeros(queries, dtype=np.int64)
        self.bars = np.full(queries, np.inf, dtype=np.float32)

    def add(self, block: np.ndarray, first_row: int) -> None:
        if block.dtype != np.float32 or not block.flags.c_contiguous or block.shape[1:] != self.bars.shape:
            raise ValueError(f"score block must be C-contiguous float32 (rows, {len(self.bars)}), got {block.dtype} "
                             f"{block.shape}")
        self._launch("scan", block, int(first_row), self.k, self.values, self.rows, self.filled, self.bars)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._launch("finish", self.k, self.values, self.rows, self.filled)
        values, rows = self.values[:, :self.k].copy(), self.rows[:, :self.k].copy()
        empty = np.arange(self.k) >= self.filled[:, None]
        values[empty], rows[empty] = np.inf, -1
        return sorted_pairs(values, rows)

    @staticmethod
    def _launch(name: str, *args: object) -> None:
        global load_seconds
        if load_seconds is None:
            # both kernels at once, on a one-query problem, so that the notice's time covers every compile
            started = time.perf_counter()
            values, rows = np.empty((1, BUFFER_FACTOR), dtype=np.float32), np.empty((1, BUFFER_FACTOR), dtype=np.int64)
            filled, bars = np.zeros(1, dtype=np.int64), np.full(1, np.inf, dtype=np.float32)
            _kernel("scan")(np.zeros((1, 1), dtype=np.float32), 0, 1, values, rows, filled, bars)
            _kernel("finish")(1, values, rows, filled)
            load_seconds = time.perf_counter() - started
            say_if_compiled("k-smallest selection of the retrieval round", load_seconds)
        _kernel(name)(*args)
