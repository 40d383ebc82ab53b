"""Means with 95 % intervals (Student t over seeds) and paired per-seed differences."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= len(_T975) else 1.960


def mean_ci(values: Sequence[float | None]) -> tuple[float, float, int]:
    """``(mean, half-width of the 95 % interval, n)`` of the finite values; the half-width is NaN below 2 values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan, n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, t975(n - 1) * sd / math.sqrt(n), n


def paired_diff(a: Mapping[Any, float | None], b: Mapping[Any, float | None]) -> tuple[float, float, int]:
    """Mean and 95 % interval of ``a[k] - b[k]`` over the keys (seeds, or (variant, seed) cells) where both are
    defined."""
    diffs: list[float | None] = []
    for key, x in a.items():
        y = b.get(key)
        if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y)):
            diffs.append(float(x) - float(y))
    return mean_ci(diffs)


def fmt(mean: float, half: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(half):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"
