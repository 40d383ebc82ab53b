"""Ranking metrics: recall at k and median rank with explicit tie handling, ROC-AUC and grounding recall.

All values are percentages (0-100) except the median rank, which is a 1-based rank.

Ties. The reference ranks with ``np.argsort``, which breaks ties by an unspecified order. A model that scores every
candidate alike (a collapsed or untrained encoder) would then get whatever recall that order happens to give,
anything from 0 to 100. We count, for each query, ``better`` = candidates scoring strictly above the true one and
``tied`` = other candidates scoring exactly the same, and by default report the *expected* metric under a uniformly
random tie break: R@k = P(better + U{0..tied} < k). ``ties="optimistic"`` / ``"pessimistic"`` put the true candidate
first / last among its ties. NaN scores rank below every number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

TieMode = Literal["expected", "optimistic", "pessimistic"]


def _finite_or_lowest(scores: np.ndarray) -> np.ndarray:
    """Scores as float64 with NaN mapped below every number (so a broken score never wins)."""
    out = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(out), -np.inf, out)


def rank_counts(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the number of candidates scoring strictly better than the true one and the number of
    *other* candidates tied with it.

    :param scores: (Q, G) query-by-candidate scores, higher is better.
    :param targets: (Q,) index of each query's true candidate.
    """
    scores = _finite_or_lowest(scores)
    targets = np.asarray(targets, dtype=np.int64)
    true = scores[np.arange(len(targets)), targets][:, None]
    better = (scores > true).sum(axis=1)
    tied = (scores == true).sum(axis=1) - 1
    return better, tied


def rank_metrics(scores: np.ndarray, targets: np.ndarray, ks: Sequence[int] = (1, 5, 10),
                 ties: TieMode = "expected") -> dict[str, float]:
    """``{"R@k": percent for k in ks, "MR": median 1-based rank}`` of the true candidates.

    ``MR`` follows the reference: the median of the 0-based ranks, plus one. Under ``ties="expected"`` a query's
    rank is the mean of its possible ranks (``better + tied / 2``).
    """
    better, tied = rank_counts(scores, targets)
    if len(better) == 0:
        return {**{f"R@{k}": math.nan for k in ks}, "MR": math.nan}
    out: dict[str, float] = {}
    for k in ks:
        if ties == "expected":
            hit = np.clip((k - better) / (tied + 1.0), 0.0, 1.0)
        elif ties == "optimistic":
            hit = (better < k).astype(np.float64)
        else:
            hit = (better + tied < k).astype(np.float64)
        out[f"R@{k}"] = 100.0 * float(hit.mean())
    rank = {"expected": better + tied / 2.0, "optimistic": better, "pessimistic": better + tied}[ties]
    out["MR"] = float(np.median(rank)) + 1.0
    return out


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve in percent (the Mann-Whitney statistic; ties count one half).

    NaN when only one class is present.
    """
    scores = _finite_or_lowest(scores).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(scores)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return 100.0 * float(u / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their positions (-inf ties with -inf)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # boundaries of runs of equal values
    new_run = np.concatenate(([True], sorted_values[1:] != sorted_values[:-1]))
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.concatenate((starts[1:], [len(values)]))
    mean_rank = (starts + ends + 1) / 2.0  # mean of positions start+1 .. end (1-based)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = mean_rank[run_id]
    return ranks


def grounding_hits(sim: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """HTM-Align hits: whether each sentence's best-scoring second lies in ``[floor(start), ceil(end)]``.

    :param sim: (n, T) per-second scores; ``-inf`` marks seconds that were never scored for that sentence. A
        sentence with no scored second is a miss (the reference would predict second 0 for it).
    :param starts: (n,) true span starts in seconds. :param ends: (n,) true span ends.
    """
    sim = _finite_or_lowest(sim)
    if sim.shape[1] == 0:
        return np.zeros(sim.shape[0], dtype=bool)
    best = sim.argmax(axis=1)  # the first of equal maxima, as torch/numpy argmax
    scored = np.isfinite(sim.max(axis=1))
    lo = np.floor(np.asarray(starts, dtype=np.float64))
    hi = np.ceil(np.asarray(ends, dtype=np.float64))
    return scored & (lo <= best) & (best <= hi)
