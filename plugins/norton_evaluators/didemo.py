"""DiDeMo zero-shot moment retrieval: which 5-second span of its video a sentence describes (Rank@1, Rank@5, mIoU).

DiDeMo's test set (``test_data.json`` from LocalizingMoments) is a list of queries ``{"video", "description",
"times", ...}``: a sentence, the video it was written for, and the moments its annotators marked, each
``[first_chunk, last_chunk]`` (inclusive) over the video's 5-second chunks 0-5. Every query ranks the 21 candidate
moments of its *own* video (the 6 single chunks, then every pair ``(i, j), i < j`` spanning chunks i..j, in that
order); it is localisation within a video, not retrieval among videos.

Protocol (the reference's ``DiDeMoPredictor`` / ``DiDeMoMetric``, which follow LocalizingMoments' ``eval.py``):

- the video's first ``max_video_len`` seconds (32) are encoded once; a moment's embedding is the mean of the video
  encoder's per-second outputs over seconds ``[5 i, 5 (j + 1))``; its score is the dot product with the pooled
  sentence embedding (caption budget ``max_len - max_video_len``);
- moments that start at or after the video's end (no real second in their range) are dropped from the ranking;
- per query: Rank@k counts a hit when the mean of the 3 best ranks of the annotators' moments (one rank per
  annotation, so a moment marked by two annotators counts twice) is at most k; IoU is that of the top-ranked
  moment with each annotation (chunk spans, inclusive ends), averaged over the 3 best. Metrics are percentages.

Quirks, kept by default and documented:

- the mean over a moment's seconds includes *padded* seconds when the moment runs past the video's end (a 27 s
  video's chunk 5 averages 2 real and 3 padded outputs). ``pool = "valid"`` averages real seconds only.
- a query none of whose annotated moments is in the ranking (all start past the video's end) cannot be hit; it
  stays in the denominator as a miss and is counted under ``unreachable``.
- ties between moment scores (an untrained or collapsed model) are broken by the moment order above, so such a
  model gets that order's numbers; queries with a tie are counted under ``tied``. The chance column holds the
  exact expectation under a uniformly random ranking (``*_chance``).

Beside the model's numbers, ``prior_*`` are the trivial moment-frequency prior (DiDeMo's own baseline): each query
ranks its video's moments by how often the *other* queries' annotators marked them, without looking at video or
sentence.

Skipped, counted and named: ``missing_features`` / ``bad_features`` (the feature file, ``<video>.npy`` with the
video name as it appears in the JSON, extension included), ``empty_description``, ``no_times``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from norton_core import DataError, EvalContext, Evaluator, Model, option

from .readers import FeatureDir, Gallery, Skips, read_annotations

_SKIPS = ("missing_features", "bad_features", "empty_description", "no_times")
CHUNK_SECONDS = 5
CHUNKS = 6
#: the 21 candidate moments as inclusive chunk spans, in the reference's order (single chunks, then pairs)
MOMENTS: tuple[tuple[int, int], ...] = (*((c, c) for c in range(CHUNKS)), *itertools.combinations(range(CHUNKS), 2))
Moment = tuple[int, int]


@attrs.frozen
class Query:
    index: int
    video: str
    description: str
    times: tuple[Moment, ...]


def read_didemo(path: Path, skips: Skips) -> list[Query]:
    """The scorable queries of DiDeMo's ``test_data.json`` in file order; unscorable ones are counted in ``skips``.

    :raises DataError: the file is missing or not the released layout (naming the record and what was expected).
    """
    if not path.is_file():
        raise DataError(f"{path}: evaluation file not found (expected DiDeMo's test_data.json)")
    data = read_annotations(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of queries {{\"video\", \"description\", \"times\"}}, got "
                        f"{type(data).__name__}")
    queries = []
    for i, rec in enumerate(data):
        query = _query(path, i, rec, skips)
        if query is not None:
            queries.append(query)
    return queries


def _query(path: Path, i: int, rec: Any, skips: Skips) -> Query | None:
    where = f"{path}: query {i}"
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected an object with \"video\", \"description\" and \"times\", got "
                        f"{type(rec).__name__}")
    video, description, times = rec.get("video"), rec.get("description"), rec.get("times")
    if not isinstance(video, str) or not video.strip() or "/" in video or "\\" in video:
        raise DataError(f"{where}: \"video\" must be a video file name (no path), got {video!r}")
    if not isinstance(description, str):
        raise DataError(f"{where}: \"description\" must be a string, got {description!r}")
    if not isinstance(times, list):
        raise DataError(f"{where}: \"times\" must be a list of [first_chunk, last_chunk], got {times!r}")
    spans = []
    for t in times:
        ok = (isinstance(t, list) and len(t) == 2 and all(isinstance(c, int) and not isinstance(c, bool) for c in t)
              and 0 <= t[0] <= t[1] < CHUNKS)
        if not ok:
            raise DataError(f"{where}: \"times\" entries must be [first_chunk, last_chunk] with 0 <= first <= last "
                            f"<= {CHUNKS - 1}, got {t!r}")
        spans.append((t[0], t[1]))
    if not description.strip():
        skips.add("empty_description", f"query {i} ({video})")
        return None
    if not spans:
        skips.add("no_times", f"query {i} ({video})")
        return None
    return Query(i, video, description, tuple(spans))


# ----------------------------------------------------------------------------------------------------------------
# metric (LocalizingMoments' eval.py, as the reference's DiDeMoMetric)
# ----------------------------------------------------------------------------------------------------------------


def iou(a: Moment, b: Moment) -> float:
    """Temporal IoU of two inclusive chunk spans."""
    inter = max(0, min(a[1], b[1]) + 1 - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) + 1 - min(a[0], b[0]))


def query_scores(ranking: Sequence[Moment], times: Sequence[Moment]) -> tuple[float, float]:
    """``(mean of the 3 best ranks of the annotations, mean of the 3 best IoUs of the top moment)`` of one query;
    the rank is NaN when no annotated moment is in ``ranking``."""
    ranks = sorted(ranking.index(t) + 1 for t in times if t in ranking)
    ious = sorted(iou(ranking[0], t) for t in times) if ranking else [0.0]
    return (float(np.mean(ranks[:3])) if ranks else math.nan), float(np.mean(ious[-3:]))


def moment_metrics(rankings: Sequence[Sequence[Moment]], times: Sequence[Sequence[Moment]]) -> dict[str, float]:
    """``{"R@1", "R@5", "mIoU"}`` in percent over queries, each ranking its candidate moments best first."""
    if not rankings:
        return {"R@1": math.nan, "R@5": math.nan, "mIoU": math.nan}
    ranks, ious = zip(*(query_scores(r, t) for r, t in zip(rankings, times, strict=True)), strict=True)
    avg = np.asarray(ranks)
    with np.errstate(invalid="ignore"):  # NaN (unreachable) compares False: a miss
        return {"R@1": 100.0 * float(np.mean(avg <= 1)), "R@5": 100.0 * float(np.mean(avg <= 5)),
                "mIoU": 100.0 * float(np.mean(ious))}


def random_ranking_chance(valid: Sequence[Sequence[Moment]], times: Sequence[Sequence[Moment]]) -> dict[str, float]:
    """The exact expected ``R@1``, ``R@5`` and ``mIoU`` when each query ranks its valid moments uniformly at random."""
    hits1, hits5, ious = [], [], []
    for moments, marks in zip(valid, times, strict=True):
        ious.append(float(np.mean([np.mean(sorted(iou(m, t) for t in marks)[-3:]) for m in moments])))
        counts = Counter(t for t in marks if t in moments)
        p1, p5 = _rank_hit_probability(len(moments), tuple(sorted(counts.values())))
        hits1.append(p1)
        hits5.append(p5)
    if not ious:
        return {"R@1_chance": math.nan, "R@5_chance": math.nan, "mIoU_chance": math.nan}
    return {"R@1_chance": 100.0 * float(np.mean(hits1)), "R@5_chance": 100.0 * float(np.mean(hits5)),
            "mIoU_chance": 100.0 * float(np.mean(ious))}


@cache
def _rank_hit_probability(n: int, counts: tuple[int, ...]) -> tuple[float, float]:
    """P(mean of the 3 best annotation ranks <= 1) and (<= 5) when ``len(counts)`` distinct annotated moments, marked
    ``counts`` times each, take uniformly random distinct places among ``n``.

    Only the (up to) 3 best-placed moments matter: every set of their places ``p_1 < .. < p_m`` is enumerated with
    its probability ``C(n - p_m, d - m) / C(n, d)`` (the other ``d - m`` moments placed after ``p_m``), and every
    ordered choice of which moments sit there is equally likely.
    """
    d = len(counts)
    if d == 0:
        return 0.0, 0.0
    m = min(d, 3)
    picks = Counter(itertools.permutations(counts, m))
    n_picks = sum(picks.values())
    total = math.comb(n, d)
    p1 = p5 = 0.0
    for places in itertools.combinations(range(1, n + 1), m):
        weight = math.comb(n - places[-1], d - m) / total
        if weight == 0.0:
            continue
        for marks, ways in picks.items():
            best = [p for p, c in zip(places, marks, strict=True) for _ in range(c)][:3]
            mean = sum(best) / len(best)
            p1 += weight * ways / n_picks * (mean <= 1)
            p5 += weight * ways / n_picks * (mean <= 5)
    return p1, p5


def ranking(scores: np.ndarray, valid: np.ndarray) -> list[Moment]:
    """The valid moments best first; NaN scores last, ties in moment order."""
    idx = np.flatnonzero(valid)
    s = np.where(np.isnan(scores[idx]), -np.inf, scores[idx])
    return [MOMENTS[i] for i in idx[np.argsort(-s, kind="stable")]]


def prior_rankings(valid: Sequence[Sequence[Moment]], times: Sequence[Sequence[Moment]]) -> list[list[Moment]]:
    """The moment-frequency prior: each query's valid moments by how often the other queries' annotators marked
    them (most first, ties in moment order)."""
    total = Counter(t for marks in times for t in marks)
    out = []
    for moments, marks in zip(valid, times, strict=True):
        own = Counter(marks)
        out.append(sorted(moments, key=lambda m: -(total[m] - own[m])))  # sorted is stable: moment order on ties
    return out


# ----------------------------------------------------------------------------------------------------------------
# the evaluator
# ----------------------------------------------------------------------------------------------------------------


def moment_embeddings(tokens: np.ndarray, length: int, pool: Literal["reference", "valid"]) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """``(embeddings (21, d), valid (21,))`` of a video's moments from its per-second outputs ``(max_video_len, d)``
    of which the first ``length`` are real seconds. An invalid moment's embedding is zeros."""
    out = np.zeros((len(MOMENTS), tokens.shape[1]), dtype=np.float64)
    valid = np.zeros(len(MOMENTS), dtype=bool)
    for k, (s, e) in enumerate(MOMENTS):
        lo, hi = s * CHUNK_SECONDS, min((e + 1) * CHUNK_SECONDS, len(tokens))
        if lo >= length:
            continue
        valid[k] = True
        out[k] = tokens[lo:min(hi, length) if pool == "valid" else hi].mean(axis=0)
    return out, valid


class DiDeMo(Evaluator):
    """Moment retrieval within a video: each sentence ranks its video's 21 candidate moments (Rank@1, Rank@5, mIoU)."""

    name = "didemo"
    dataset = "didemo"

    @attrs.frozen
    class Config:
        annotations: str = option("test_data.json", help="DiDeMo's query file, relative to the dataset dir")
        features: str = option("features", help="directory of <video>.npy features (the video name as in the JSON), "
                                                "relative to the dataset dir or absolute")
        max_video_len: int = option(32, ge=1, help="seconds of each video encoded (the reference: 32; moments "
                                                   "cover the first 30)")
        max_len: int = option(96, ge=8, help="total token budget; sentences get max_len - max_video_len")
        pool: Literal["reference", "valid"] = option(
            "reference", help="a moment's embedding: the mean over its 5-second chunks including padded seconds "
                              "past the video's end (the reference), or over real seconds only")

    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, float]:
        from norton_core import encode_clips, encode_texts

        cfg = self.config
        skips = Skips(self.name)
        queries = read_didemo(ctx.root / cfg.annotations, skips)
        feats = FeatureDir(ctx.root, skips, cfg.features, self.name)
        gallery = Gallery()
        owners: list[int] = []
        kept: list[Any] = []
        for q in queries:
            features = feats.get(q.video)
            if features is None:
                continue
            owners.append(gallery.add(q.video, features))
            kept.append(q)
        spans = gallery.spans
        skips.report()
        counts = {"queries": float(len(kept)), "videos": float(len(spans))}
        if not kept:
            nan = {f"{p}{m}{c}": math.nan for m in ("R@1", "R@5", "mIoU") for p, c in (("", ""), ("", "_chance"),
                                                                                         ("prior_", ""))}
            return {**nan, **counts, "unreachable": 0.0, "tied": 0.0, **skips.metrics(_SKIPS)}
        kw: dict[str, Any] = {"batch_size": ctx.batch_size, "device": ctx.device, "progress": ctx.progress}
        text = encode_texts(model, [q.description for q in kept], cfg.max_len - cfg.max_video_len,
                            desc="didemo sentences", **kw).astype(np.float64)
        tokens = encode_clips(model, spans, cfg.max_video_len, tokens=True, desc="didemo videos", **kw)
        moments = [moment_embeddings(tokens[v].astype(np.float64), min(len(f), cfg.max_video_len), cfg.pool)
                   for v, (f, _, _) in enumerate(spans)]
        rankings, valid, tied = [], [], 0
        for v, t in zip(owners, text, strict=True):
            emb, ok = moments[v]
            scores = emb @ t
            rankings.append(ranking(scores, ok))
            valid.append([m for m, good in zip(MOMENTS, ok, strict=True) if good])
            tied += int(len(np.unique(scores[ok])) < int(ok.sum()))
        times = [q.times for q in kept]
        prior = moment_metrics(prior_rankings(valid, times), times)
        unreachable = sum(1 for vm, marks in zip(valid, times, strict=True) if not set(marks) & set(vm))
        return {**moment_metrics(rankings, times), **random_ranking_chance(valid, times),
                **{f"prior_{k}": v for k, v in prior.items()}, **counts, "unreachable": float(unreachable),
                "tied": float(tied), **skips.metrics(_SKIPS)}
