"""Per-second label scores of whole videos from overlapping windows (COIN and CrossTask, the reference's loop).

A video of ``T`` seconds is cut into windows starting at ``0, stride, 2 * stride, ...``; each covers
``min(size, T - start)`` seconds, and the last one is the first whose remainder fits (``T - start <= size``), so the
windows always reach the end and the final one is never empty. Each window is encoded on its own (the video encoder
sees only those seconds); its per-second outputs are scored against every label vector by a dot product, and a
second's score is the mean over the windows that contain it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from norton_core import Model, RecipeError

#: a video to score: its id, its (T, 512) features and the (L, d) label vectors to score it against
Video = tuple[str, np.ndarray, np.ndarray]


def window_bounds(length: int, stride: int, size: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of the windows over ``length`` seconds (none for an empty video)."""
    bounds: list[tuple[int, int]] = []
    for start in range(0, length, stride):
        bounds.append((start, start + min(length - start, size)))
        if length - start <= size:
            break
    return bounds


def check_windows(task: str, stride: int, size: int) -> None:
    """A stride longer than the window would leave seconds that no window scores (the reference divides 0 by 0)."""
    if stride > size:
        raise RecipeError(f"[evaluation.task_options.{task}]: stride = {stride} is longer than window = {size}; "
                          f"seconds between windows would have no score (use stride <= window)")


def average_scores(length: int, bounds: Sequence[tuple[int, int]], window_scores: Sequence[np.ndarray]) -> np.ndarray:
    """``(T, L)`` mean over windows of each second's scores; ``window_scores[i]`` is ``(end - start, L)``."""
    total = np.zeros((length, window_scores[0].shape[1]), dtype=np.float64)
    count = np.zeros((length, 1), dtype=np.float64)
    for (start, end), scores in zip(bounds, window_scores, strict=True):
        total[start:end] += scores
        count[start:end] += 1
    return total / count


def scored_videos(model: Model, videos: Sequence[Video], *, stride: int, size: int, batch_size: int, device: str,
                  progress: bool, desc: str, normalise: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, (T, L) averaged scores)`` for every video, encoding the windows of about one batch of videos at a
    time (the per-second outputs of a whole dataset would not fit in memory).

    :param normalise: cosine instead of dot product (unit-length per-second outputs; label vectors are passed in
        already normalised by the caller).
    """
    from norton_core import encode_clips

    for group in _progress(_groups(videos, stride, size, batch_size), progress, desc):
        spans = [(videos[v][1], start, end) for v, bounds in group for start, end in bounds]
        tokens = encode_clips(model, spans, size, tokens=True, batch_size=batch_size, device=device,
                              progress=False).astype(np.float64)
        if normalise:
            tokens = tokens / np.maximum(np.linalg.norm(tokens, axis=-1, keepdims=True), 1e-12)
        used = 0
        for v, bounds in group:
            labels = videos[v][2]
            per_window = [tokens[used + i, : end - start] @ labels.T for i, (start, end) in enumerate(bounds)]
            used += len(bounds)
            yield v, average_scores(len(videos[v][1]), bounds, per_window)


def _groups(videos: Sequence[Video], stride: int, size: int, batch_size: int) -> list[list[tuple[int, list]]]:
    groups: list[list[tuple[int, list]]] = [[]]
    filled = 0
    for v, (_, features, _) in enumerate(videos):
        bounds = window_bounds(len(features), stride, size)
        if filled and filled + len(bounds) > batch_size:
            groups.append([])
            filled = 0
        groups[-1].append((v, bounds))
        filled += len(bounds)
    return [g for g in groups if g]


def _progress(items: list[Any], enabled: bool, desc: str) -> Iterator[Any]:
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=desc, unit="group", disable=not enabled, leave=False, dynamic_ncols=True)


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

