"""Span samplers of the pretraining clip sampler, shared by the aligners.

Every random draw goes through the caller's ``random.Random`` in a fixed order, so a clip is a pure function of the
record and the generator state. The draw order per clip is: centre caption, text budget, text growth coin flips,
video centre, video length, video growth coin flips (the reference's order).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np

#: the reference stops growing a caption span once it covers this many seconds (TextClipSamplingProcessor)
MAX_TEXT_SPAN_SECONDS = 256.0


def sample_text_span(
    starts: np.ndarray,
    ends: np.ndarray,
    tokens: Sequence[np.ndarray],
    center: int,
    max_text: int,
    rng: random.Random,
) -> tuple[int, int]:
    """Grow ``[center, center]`` into a contiguous caption run until it holds ``max_text`` tokens.

    :returns: ``(first, last + 1)`` caption indices. The token count may overshoot ``max_text`` (reference).
    """
    n = len(starts)
    first = last = center
    text_len = len(tokens[center])
    while (first > 0 or last < n - 1) and text_len < max_text and ends[last] - starts[first] < MAX_TEXT_SPAN_SECONDS:
        # p = 0.5: right if possible; otherwise left if possible; otherwise right
        if rng.random() < 0.5 and last < n - 1:
            last += 1
            text_len += len(tokens[last])
        elif first > 0:
            first -= 1
            text_len += len(tokens[first])
        else:
            last += 1
            text_len += len(tokens[last])
    return first, last + 1


def sample_video_center(span_start: float, span_end: float, num_seconds: int, rng: random.Random) -> int:
    """A random second inside ``[floor(span_start), ceil(span_end)]``, clamped to the video."""
    low, high = int(math.floor(span_start)), int(math.ceil(span_end))
    center = rng.randint(low, high) if low < high else (low + high) // 2
    return min(max(center, 0), num_seconds - 1)


def sample_video_span(center: int, length: int, num_seconds: int, rng: random.Random) -> tuple[int, int]:
    """Grow ``[center, center)`` one second at a time, ``length`` times, on a random side: ``(start, end)``."""
    start = end = center
    for _ in range(length):
        if start == 0 and end == num_seconds:
            break
        if start <= 0:
            end += 1
        elif end >= num_seconds:
            start -= 1
        elif rng.random() < 0.5:
            start -= 1
        else:
            end += 1
    return start, end


def aligned_video_span(span_start: float, span_end: float, num_seconds: int) -> tuple[int, int]:
    """The seconds covering a caption span: ``[floor(start), ceil(end))`` clipped to the video.

    A caption span that lies wholly after the video's last second keeps the last second, so that every clip has
    at least one valid video token (the reference would produce an empty clip there).
    """
    end = min(int(math.ceil(span_end)), num_seconds)
    start = max(min(int(math.floor(span_start)), end), 0)
    if start >= end:
        start = min(start, num_seconds - 1)
        end = start + 1
    return start, end
