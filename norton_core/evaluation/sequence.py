"""Video-paragraph scores: caption average, DTW and OTAM (TempCLR's protocol).

A paragraph (a video's captions in order) is scored against every video (its clips or windows in order) from the
caption-by-clip similarity matrix. DTW and OTAM turn a block of similarities into distances ``offset - sim``,
rescale the block, align it and rank videos by ``-cost``.

Reference quirks, each a named switch (the correct behaviour is the default):

``padding="reference"``
    The reference pads every block to the largest block with ``+inf`` and zeroes an "exit" region so that padded
    paths end for free. Its slicing zeroes more than that: the last real caption row becomes free whenever the
    block is not narrower than the padded width (``-0:`` selects everything), and a padded cell right of the last
    clip is reachable diagonally from the second-to-last caption, so the last caption can be skipped. OTAM's pad
    sizes are taken before its two zero columns are added, so its canvas is two columns wider than the largest
    block and no real column is ever cropped (a full-size block gets its whole last row zeroed instead).
    ``padding="exact"`` aligns each block at its own size.
``otam_recurrence="reference"``
    The reference's first-column OTAM recurrence subtracts the minimum instead of adding it (a sign slip from the
    soft-min it was converted from).

Offset sensitivity. DTW path lengths differ between pairs, so adding a constant to every similarity (which no
contrastive loss pins down) changes DTW/OTAM rankings. :func:`centre_per_caption` removes each caption's mean
similarity over the whole gallery; scores computed from it are invariant to any per-caption (hence any global)
shift of the similarities, and to a positive rescaling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Padding = Literal["exact", "reference"]
Recurrence = Literal["exact", "reference"]
Method = Literal["dtw", "otam"]

_INF = np.inf


# ----------------------------------------------------------------------------------------------------------------
# alignment dynamic programmes on stacks of equally shaped (padded) distance matrices
# ----------------------------------------------------------------------------------------------------------------


def dtw_table(dist: np.ndarray) -> np.ndarray:
    """Cumulative DTW costs of a stack ``(P, R, C)``: moves right, down and diagonal; cost includes both ends.

    Cells outside a pair's real block may be ``+inf``: monotone paths never leave the block through them.
    """
    return _dtw_cum(np.ascontiguousarray(dist.transpose(1, 2, 0), dtype=np.float64)).transpose(2, 0, 1)


def otam_table(dist: np.ndarray, last_col: np.ndarray | None = None, recurrence: Recurrence = "exact") -> np.ndarray:
    """Cumulative OTAM costs of a stack ``(P, R, C)`` whose first and (per pair) last real column are zero pads.

    Inside the block a path moves right or diagonally, so every clip column is matched to exactly one caption in
    order; in the pad columns (0 and ``last_col``) and in column 1 it may also move down, so leading and trailing
    captions can be left unmatched. ``last_col`` defaults to ``C - 1`` (the reference's padded layout).
    """
    d = np.ascontiguousarray(dist.transpose(1, 2, 0), dtype=np.float64)
    return _otam_cum(d, last_col, recurrence).transpose(2, 0, 1)


# The dynamic programmes run on (R, C, P) arrays: each cell's P pairs are contiguous, so every step is one
# vectorised operation over all pairs (a (P, R, C) layout makes each step a strided gather, ~2x slower).


def _dtw_cum(d: np.ndarray) -> np.ndarray:
    cum = np.empty_like(d)
    cum[0] = np.cumsum(d[0], axis=0)
    cum[:, 0] = np.cumsum(d[:, 0], axis=0)
    best = np.empty(d.shape[2])
    for r in range(1, d.shape[0]):
        for c in range(1, d.shape[1]):
            np.minimum(cum[r - 1, c - 1], cum[r, c - 1], out=best)
            np.minimum(best, cum[r - 1, c], out=best)
            np.add(d[r, c], best, out=cum[r, c])
    return cum


def _otam_cum(d: np.ndarray, last_col: np.ndarray | None, recurrence: Recurrence) -> np.ndarray:
    rows, cols, p = d.shape
    last = np.full(p, cols - 1) if last_col is None else np.asarray(last_col)
    cum = np.zeros_like(d)
    cum[0, 1:] = np.cumsum(d[0, 1:], axis=0)
    sign = -1.0 if recurrence == "reference" else 1.0
    at_last = [last == c for c in range(cols)]
    any_last = [bool(m.any()) for m in at_last]
    best = np.empty(p)
    with np.errstate(invalid="ignore"):
        for r in range(1, rows):
            # column 0 stays 0: the leading pad column is free
            first = np.minimum(np.minimum(cum[r - 1, 0], cum[r - 1, 1]), cum[r, 0])
            cum[r, 1] = d[r, 1] + sign * first
            for c in range(2, cols):
                np.minimum(cum[r - 1, c - 1], cum[r, c - 1], out=best)
                if any_last[c]:
                    np.copyto(best, np.minimum(best, cum[r - 1, c]), where=at_last[c])
                np.add(d[r, c], best, out=cum[r, c])
            if cols == 2:  # the reference's last-column rule overwrites column 1 when the block is that narrow
                cum[r, 1] = d[r, 1] + np.minimum(np.minimum(cum[r - 1, 0], cum[r - 1, 1]), cum[r, 0])
    return cum


def reference_pad(block: np.ndarray, rows: int, cols: int, otam: bool = False) -> np.ndarray:
    """The reference's padding of one ``(n, m)`` distance block to ``(rows, cols)``, quirks included.

    The pad sizes ``rows - n`` and ``cols - m`` are taken from the block as given. OTAM then adds a zero column on
    each side, so its canvas is ``(rows, cols + 2)`` and a full-width block keeps every real column. The block is
    padded with ``+inf`` (or cropped where it is larger: ``F.pad`` with a negative width), and the region
    ``[-(rows - n) - 1:, -(cols - m):]`` of the canvas is zeroed with Python's slice semantics (``-0:`` is all).
    """
    d0, d1 = rows - block.shape[0], cols - block.shape[1]
    if otam:
        block = np.pad(block, ((0, 0), (1, 1)), constant_values=0.0)
    out = block[: block.shape[0] + min(d0, 0), : block.shape[1] + min(d1, 0)]
    out = np.pad(out, ((0, max(d0, 0)), (0, max(d1, 0))), constant_values=_INF)
    out[-d0 - 1:, -d1:] = 0.0
    return out


def _stack_exact(blocks: Sequence[np.ndarray], otam: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack blocks of different shapes into ``(P, R, C)`` padded with ``+inf``; OTAM blocks get their zero pad
    columns at 0 and ``m + 1``. Returns the stack and each block's (last row, last column) to read the cost at."""
    extra = 2 if otam else 0
    n = np.array([b.shape[0] for b in blocks])
    m = np.array([b.shape[1] for b in blocks])
    stack = np.full((len(blocks), n.max(), m.max() + extra), _INF)
    for i, b in enumerate(blocks):
        if otam:
            stack[i, : b.shape[0], 0] = 0.0
            stack[i, : b.shape[0], 1: b.shape[1] + 1] = b
            stack[i, : b.shape[0], b.shape[1] + 1] = 0.0
        else:
            stack[i, : b.shape[0], : b.shape[1]] = b
    return stack, n - 1, m - 1 + extra


def alignment_costs(blocks: Sequence[np.ndarray], method: Method, *, padding: Padding = "exact",
                    pad_shape: tuple[int, int] = (0, 0), recurrence: Recurrence = "exact") -> np.ndarray:
    """Cost of aligning each distance block (rows = captions, columns = clips). OTAM sums both directions.

    :param pad_shape: ``(rows, cols)`` every block is padded to under ``padding="reference"``.
    """
    if method == "dtw":
        return _one_direction(blocks, "dtw", padding, pad_shape, recurrence)
    forward = _one_direction(blocks, "otam", padding, pad_shape, recurrence)
    backward = _one_direction([b.T for b in blocks], "otam", padding, pad_shape, recurrence)
    return forward + backward


def _one_direction(blocks: Sequence[np.ndarray], method: Method, padding: Padding, pad_shape: tuple[int, int],
                   recurrence: Recurrence) -> np.ndarray:
    otam = method == "otam"
    if padding == "reference":
        stack = np.stack([reference_pad(b, pad_shape[0], pad_shape[1], otam=otam) for b in blocks])
        table = otam_table(stack, recurrence=recurrence) if otam else dtw_table(stack)
        return table[:, -1, -1]
    stack, last_row, last_col = _stack_exact(blocks, otam)
    table = otam_table(stack, last_col, recurrence) if otam else dtw_table(stack)
    return table[np.arange(len(blocks)), last_row, last_col]


# ----------------------------------------------------------------------------------------------------------------
# paragraph-by-video score matrices
# ----------------------------------------------------------------------------------------------------------------


def centre_per_caption(sims: np.ndarray) -> np.ndarray:
    """Each caption's similarities minus their mean over every clip of the gallery (rows of ``sims``)."""
    sims = np.asarray(sims, dtype=np.float64)
    return sims - sims.mean(axis=1, keepdims=True)


def caption_average(sims: np.ndarray, text_groups: Sequence[np.ndarray], clip_groups: Sequence[np.ndarray]) -> np.ndarray:
    """(V, V) scores: for each caption its best clip of video j, averaged over paragraph i's captions."""
    best = np.stack([sims[:, g].max(axis=1) for g in clip_groups], axis=1)  # (captions, V)
    return np.stack([best[g].mean(axis=0) for g in text_groups], axis=0)


def select_windows(block_sims: np.ndarray, ratio: float) -> np.ndarray:
    """TempCLR's background filter: keep the ``int(ratio * captions)`` columns whose best similarity to any caption
    is highest, in temporal order (all columns when there are fewer)."""
    keep = int(ratio * block_sims.shape[0])
    order = np.argsort(-block_sims.max(axis=0), kind="stable")[:keep]
    return np.sort(order)


def alignment_scores(sims: np.ndarray, text_groups: Sequence[np.ndarray], clip_groups: Sequence[np.ndarray],
                     method: Method, *, offset: float = 0.0, scale: Literal["product", "max"] = "product",
                     select_ratio: float | None = None, padding: Padding = "exact",
                     recurrence: Recurrence = "exact", chunk_bytes: int = 16 << 20) -> np.ndarray:
    """(V, V) scores ``-cost`` of aligning paragraph i (rows) with video j (columns).

    :param sims: (captions, clips) similarities; ``text_groups[i]`` / ``clip_groups[j]`` index each video's
        captions / clips in temporal order.
    :param offset: distances are ``offset - sim`` (the reference: 0, or 3 for DTW with background kept).
    :param scale: block rescaling: ``"product"`` multiplies by ``max_rows * max_cols / (rows * cols)``, ``"max"``
        by ``max(max_rows, max_cols) / max(rows, cols)`` (the reference's DTW and background OTAM).
    :param select_ratio: keep only the best ``int(ratio * rows)`` clips of each block (background kept), else all.
    :param chunk_bytes: paragraphs are scored against all videos at once in chunks of about this many bytes.

    Vectorised over (paragraph, video) pairs; :func:`alignment_costs` on the same blocks gives the same costs.
    """
    sims = np.asarray(sims, dtype=np.float64)
    n_rows = np.array([len(g) for g in text_groups])
    n_cols = np.array([len(g) for g in clip_groups])
    max_rows, max_cols = int(n_rows.max()), int(n_cols.max())
    col_index = np.zeros((len(clip_groups), max_cols), dtype=np.int64)
    for j, g in enumerate(clip_groups):
        col_index[j, : len(g)] = g
    valid = np.arange(max_cols)[None, :] < n_cols[:, None]
    videos = len(clip_groups)
    step = max(1, chunk_bytes // (videos * max_rows * (max_cols + 2) * 8))
    scores = np.empty((len(text_groups), videos))
    for lo in range(0, len(text_groups), step):
        queries = range(lo, min(lo + step, len(text_groups)))
        height = int(n_rows[lo:queries.stop].max())
        width = max_cols if select_ratio is None else min(max_cols, int(select_ratio * height))
        dist = np.full((height, width, len(queries) * videos), _INF)  # (R, C, pairs)
        rows = np.repeat(n_rows[lo:queries.stop], videos)
        cols = np.empty(dist.shape[2], dtype=np.int64)
        for k, i in enumerate(queries):
            n = len(text_groups[i])
            block = sims[text_groups[i]][:, col_index]  # (n, videos, max_cols)
            count = n_cols
            if select_ratio is not None:
                best = np.where(valid, block.max(axis=0), -_INF)
                keep = np.sort(np.argsort(-best, axis=1, kind="stable")[:, : int(select_ratio * n)], axis=1)
                block = np.take_along_axis(block, keep[None], axis=2)
                count = np.minimum(keep.shape[1], n_cols)
            if scale == "product":
                factor = max_rows * max_cols / (n * count)
            else:
                factor = max(max_rows, max_cols) / np.maximum(n, count)
            inside = np.arange(block.shape[2])[None, :] < count[:, None]  # (videos, c)
            d = np.where(inside[None], (offset - block) * factor[None, :, None], _INF)
            dist[:n, : block.shape[2], k * videos:(k + 1) * videos] = d.transpose(0, 2, 1)
            cols[k * videos:(k + 1) * videos] = count
        costs = _pair_costs(dist, rows, cols, method, padding, recurrence, (max_rows, max_cols))
        scores[lo:queries.stop] = -costs.reshape(len(queries), videos)
    return scores


def _pair_costs(dist: np.ndarray, rows: np.ndarray, cols: np.ndarray, method: Method, padding: Padding,
                recurrence: Recurrence, pad_shape: tuple[int, int]) -> np.ndarray:
    """Costs of the blocks of an ``(R, C, P)`` stack, block p being ``dist[:rows[p], :cols[p], p]`` (``+inf``
    elsewhere)."""
    pairs = np.arange(dist.shape[2])
    if method == "dtw":
        if padding == "reference":
            return _dtw_cum(_reference_canvas(dist, rows, cols, *pad_shape))[-1, -1]
        return _dtw_cum(dist)[rows - 1, cols - 1, pairs]
    forward = _widen(dist, rows, cols)
    backward = _widen(dist.transpose(1, 0, 2), cols, rows)
    if padding == "reference":
        f = _otam_cum(_reference_canvas(forward, rows, cols, *pad_shape, extra=2), None, recurrence)[-1, -1]
        b = _otam_cum(_reference_canvas(backward, cols, rows, *pad_shape, extra=2), None, recurrence)[-1, -1]
        return f + b
    f = _otam_cum(forward, cols + 1, recurrence)[rows - 1, cols + 1, pairs]
    b = _otam_cum(backward, rows + 1, recurrence)[cols - 1, rows + 1, pairs]
    return f + b


def _widen(dist: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """OTAM's layout of an ``(R, C, P)`` stack: a zero column before and after each real block."""
    out = np.full((dist.shape[0], dist.shape[1] + 2, dist.shape[2]), _INF)
    out[:, 1:-1] = dist
    real_rows = np.arange(dist.shape[0])[:, None] < rows[None, :]  # (R, P)
    out[:, 0] = np.where(real_rows, 0.0, _INF)
    out[:, cols + 1, np.arange(dist.shape[2])] = np.where(real_rows, 0.0, _INF)
    return out


def _reference_canvas(content: np.ndarray, heights: np.ndarray, widths: np.ndarray, rows: int, cols: int,
                      extra: int = 0) -> np.ndarray:
    """:func:`reference_pad` for an ``(r, c, P)`` stack: block p is ``(heights[p], widths[p])`` (``+inf`` around
    it) plus ``extra`` columns already added to it (OTAM's two zero columns). The pad sizes are taken before those
    columns, so the canvas is ``(rows, cols + extra)``; blocks are padded or cropped to it, then the reference's
    zeroed region is applied with its slice semantics."""
    width = cols + extra
    canvas = np.full((rows, width, content.shape[2]), _INF)
    h, w = min(rows, content.shape[0]), min(width, content.shape[1])
    canvas[:h, :w] = content[:h, :w]
    d0, d1 = rows - heights, cols - widths
    row_start = np.where(d0 >= 0, rows - d0 - 1, -d0 - 1)  # the slice "-d0-1:"
    col_start = np.where(d1 > 0, width - d1, -d1)  # the slice "-d1:" ("-0:" is everything)
    zero = ((np.arange(rows)[:, None, None] >= row_start[None, None, :])
            & (np.arange(width)[None, :, None] >= col_start[None, None, :]))
    canvas[zero] = 0.0
    return canvas
