"""COIN zero-shot action segmentation: frame accuracy as the reference computes it, and what a reader needs to judge it.

Protocol (the reference's zero-shot COIN test):

- Labels: the step labels of the ``testing`` subset of ``COIN.json``; step id ``k`` is the ``k``-th label string,
  encoded as a caption (pooled text vector). Ids the testing subset never uses are encoded as the string ``none``,
  as the reference does (counted under ``label_gaps``).
- Frames: one per feature row (second). A video's targets are 0 (background) except inside its annotated segments,
  ``[floor(start), ceil(end))`` cut to the video, where they are the segment's step id; a later segment overwrites
  an earlier one where they overlap.
- Scores: windows of ``window`` seconds every ``stride`` seconds (:mod:`.sliding`); a second's score for a label is
  the dot product of its video token with the label vector, averaged over the windows containing the second.
- Prediction: the best label, or background when its score is not above the threshold ``γ``, the largest
  similarity between two different labels (the off-diagonal maximum of the label-by-label dot products).
- ``frame_acc``: the share of all test frames (every video's seconds together) predicted correctly.

Beside it, because background dominates COIN's test frames (predicting background everywhere scores the published
58.9) and the threshold rule decides how much of it a model predicts:

- ``frame_acc_chance`` (the chance column of ``frame_acc``): the background share, i.e. the frame accuracy of
  predicting background everywhere;
- ``fg_frame_acc``: accuracy on the frames inside a step (chance: a uniformly random step label, ``100 / labels``);
- ``class_acc``: the mean over the classes present in the targets (background included) of each class's frame
  accuracy (chance: predicting background everywhere, ``100 / classes``);
- ``predicted_bg``: the share of frames predicted as background.

Options that change numbers: ``threshold = "distinct"`` ignores pairs of labels with the same text (two ids sharing a
text, or two gaps, put a label's self-similarity into the reference's ``γ``);
``threshold = "none"`` never predicts background, so ``fg_frame_acc`` measures the label ranking alone;
``normalise = true`` scores with cosines (unit label vectors and video tokens) instead of dot products.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from norton_core import DataError, EvalContext, Evaluator, Model, option

from .readers import FeatureDir, Skips, _number, read_annotations
from .sliding import check_windows, scored_videos, unit_rows

log = logging.getLogger("norton.evaluation")

_SKIPS = ("missing_features", "bad_features", "empty_segment", "segment_past_end")

#: the subset whose labels make the label set, whatever subset is evaluated (as the reference)
LABEL_SUBSET = "testing"
GAP_LABEL = "none"


@attrs.frozen
class CoinSegment:
    label: int
    start: float
    end: float


@attrs.frozen
class CoinSet:
    #: label strings: step id ``k`` is ``labels[k - 1]``
    labels: list[str]
    #: ``{video_id: segments in file order}`` of the evaluated subset
    videos: dict[str, list[CoinSegment]]
    #: step ids below the largest one that no testing segment uses (encoded as ``none``)
    gaps: list[int]
    #: step ids given different label strings (the last one is kept, as the reference)
    conflicts: list[str]


def read_coin(path: Path, subset: str) -> CoinSet:
    """The label set and the videos of ``subset`` from ``COIN.json`` as released."""
    data = read_annotations(path)
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise DataError(f"{path}: expected an object with a \"database\" object (the COIN.json layout)")
    names: dict[int, str] = {}
    conflicts: list[str] = []
    videos: dict[str, list[CoinSegment]] = {}
    for vid, rec in database.items():
        where = f"{path}: database[{vid!r}]"
        if not isinstance(rec, dict) or not isinstance(rec.get("subset"), str) \
                or not isinstance(rec.get("annotation"), list):
            raise DataError(f"{where}: expected an object with a \"subset\" string and an \"annotation\" list")
        segments = [_segment(ann, f"{where}.annotation[{k}]") for k, ann in enumerate(rec["annotation"])]
        if rec["subset"] == LABEL_SUBSET:
            for seg, ann in zip(segments, rec["annotation"], strict=True):
                if names.get(seg.label, ann["label"]) != ann["label"]:
                    conflicts.append(f"id {seg.label}: {names[seg.label]!r} and {ann['label']!r}")
                names[seg.label] = ann["label"]
        if rec["subset"] == subset:
            videos[str(vid)] = segments
    top = max(names, default=0)
    labels = [names.get(k, GAP_LABEL) for k in range(1, top + 1)]
    gaps = [k for k in range(1, top + 1) if k not in names]
    return CoinSet(labels, videos, gaps, conflicts)


def _segment(ann: Any, where: str) -> CoinSegment:
    if not isinstance(ann, dict):
        raise DataError(f"{where}: expected an object with \"id\", \"segment\" and \"label\", got {type(ann).__name__}")
    raw, seg, label = ann.get("id"), ann.get("segment"), ann.get("label")
    step = int(raw) if isinstance(raw, int) and not isinstance(raw, bool) else \
        int(raw) if isinstance(raw, str) and raw.strip().isdigit() else None
    if step is None or step < 1:
        raise DataError(f"{where}: \"id\" must be a step id >= 1 (an integer or a string of digits), got {raw!r}")
    if not (isinstance(seg, list) and len(seg) == 2 and all(_number(s) for s in seg)):
        raise DataError(f"{where}: \"segment\" must be [start_s, end_s] numbers, got {seg!r}")
    if not isinstance(label, str):
        raise DataError(f"{where}: \"label\" must be a string, got {label!r}")
    return CoinSegment(step, float(seg[0]), float(seg[1]))


def frame_targets(segments: list[CoinSegment], length: int, skips: Skips, vid: str) -> tuple[np.ndarray, int]:
    """Per-second step ids (0 = background) and the number of segments cut at the video's end.

    An empty segment (end <= start) or one starting at or after the end is skipped and counted (the reference
    would mark one second for an end a fraction before its start; such a segment is a data error either way)."""
    targets = np.zeros(length, dtype=np.int64)
    cut = 0
    for k, seg in enumerate(segments):
        if seg.end <= seg.start:
            skips.add("empty_segment", f"{vid} segment {k} [{seg.start}, {seg.end}]")
            continue
        start, end = max(0, math.floor(seg.start)), math.ceil(seg.end)
        if start >= length:
            skips.add("segment_past_end", f"{vid} segment {k} starts at {seg.start} s, video has {length} s")
            continue
        cut += end > length
        targets[start:min(end, length)] = seg.label
    return targets, cut


def background_threshold(vectors: np.ndarray, labels: list[str], rule: str = "reference") -> float:
    """``γ``: the largest dot product between two different labels (``"reference"``: any two ids; ``"distinct"``:
    two ids with different texts), or ``-inf`` for ``"none"`` (never background: every second gets its best
    label)."""
    if rule == "none":
        return -math.inf
    if len(vectors) < 2:
        raise DataError(f"COIN zero-shot needs at least 2 step labels for its background threshold, got {len(vectors)}")
    sim = vectors @ vectors.T
    other = ~np.eye(len(vectors), dtype=bool)
    if rule == "distinct":
        names = np.array(labels, dtype=object)
        other &= names[:, None] != names[None, :]
        if not other.any():
            raise DataError("COIN zero-shot: every label has the same text; no threshold between distinct labels")
    return float(sim[other].max())


def predict_frames(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Step id (``argmax + 1``) where the best score is above ``threshold``, else 0 (background)."""
    best = scores.argmax(axis=1)
    return np.where(scores[np.arange(len(scores)), best] > threshold, best + 1, 0)


def frame_metrics(predicted: np.ndarray, targets: np.ndarray, n_labels: int) -> dict[str, float]:
    """Frame accuracy (the reference's ``1 - errors / frames``, in percent) and the numbers that frame it."""
    predicted, targets = np.asarray(predicted), np.asarray(targets)
    if len(targets) == 0:
        return {m: math.nan for m in ("frame_acc", "frame_acc_chance", "fg_frame_acc", "fg_frame_acc_chance",
                                      "class_acc", "class_acc_chance", "predicted_bg")} | {"frames": 0.0}
    correct = predicted == targets
    foreground = targets != 0
    classes = np.unique(targets)
    return {
        "frame_acc": 100.0 * (1.0 - float((~correct).sum()) / len(targets)),
        "frame_acc_chance": 100.0 * float((~foreground).mean()),
        "fg_frame_acc": 100.0 * float(correct[foreground].mean()) if foreground.any() else math.nan,
        "fg_frame_acc_chance": 100.0 / n_labels if n_labels else math.nan,
        "class_acc": 100.0 * float(np.mean([correct[targets == c].mean() for c in classes])),
        "class_acc_chance": 100.0 * float(0 in classes) / len(classes),
        "predicted_bg": 100.0 * float((predicted == 0).mean()),
        "frames": float(len(targets)),
    }


class COIN(Evaluator):
    """Zero-shot action segmentation on COIN: ``frame_acc`` with its background share, ``fg_frame_acc`` and
    ``class_acc`` (percent)."""

    name = "coin"
    dataset = "coin"

    @attrs.frozen
    class Config:
        annotations: str = option("COIN.json", help="COIN annotations as released, relative to the dataset dir")
        features: str = option("features", help="directory of <video_id>.npy features, relative to the dataset dir "
                                                "or absolute (e.g. coin_feature_fps30_512)")
        subset: str = option("testing", help="the COIN subset evaluated (the labels always come from 'testing')")
        window: int = option(32, ge=1, help="window length in seconds (= the video tokens encoded)")
        stride: int = option(16, ge=1, help="seconds between window starts")
        max_len: int = option(96, ge=8, help="total token budget; label texts get max_len - window")
        threshold: Literal["reference", "distinct", "none"] = option(
            "reference", help="background threshold: the largest similarity of any two label ids ('reference'), "
                              "of two labels with different texts ('distinct'), or none (never background)")
        normalise: bool = option(False, help="score with cosines instead of the reference's dot products")

    def __init__(self, config: Config) -> None:
        check_windows(self.name, config.stride, config.window)
        self.config = config

    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, float]:
        from norton_core import encode_texts

        cfg = self.config
        skips = Skips(self.name)
        data = read_coin(ctx.root / cfg.annotations, cfg.subset)
        feats = FeatureDir(ctx.root, skips, cfg.features, self.name)
        if not data.labels:
            raise DataError(f"{ctx.root / cfg.annotations}: no segment in the {LABEL_SUBSET!r} subset, so no labels")
        _warn_labels(data)
        vectors = encode_texts(model, data.labels, cfg.max_len - cfg.window, batch_size=ctx.batch_size,
                               device=ctx.device, progress=ctx.progress, desc="coin labels").astype(np.float64)
        if cfg.normalise:
            vectors = unit_rows(vectors)
        threshold = background_threshold(vectors, data.labels, cfg.threshold)
        videos, targets, cut = [], [], 0
        for vid, segments in data.videos.items():
            features = feats.get(vid)
            if features is None:
                continue
            target, n_cut = frame_targets(segments, len(features), skips, vid)
            videos.append((vid, features, vectors))
            targets.append(target)
            cut += n_cut
        skips.report()
        predicted: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(videos)
        for v, scores in scored_videos(model, videos, stride=cfg.stride, size=cfg.window, batch_size=ctx.batch_size,
                                       device=ctx.device, progress=ctx.progress, desc="coin video groups",
                                       normalise=cfg.normalise):
            predicted[v] = predict_frames(scores, threshold)
        all_pred = np.concatenate(predicted) if predicted else np.zeros(0, dtype=np.int64)
        all_true = np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)
        if cut:
            log.info("coin: %d segment(s) end after their video's last feature row; cut at the end", cut)
        return {**frame_metrics(all_pred, all_true, len(data.labels)), "videos": float(len(videos)),
                "labels": float(len(data.labels)), "threshold": threshold, "label_gaps": float(len(data.gaps)),
                "duplicate_labels": float(_duplicates(data.labels)), "segments_cut": float(cut),
                **skips.metrics(_SKIPS)}


def _duplicates(labels: list[str]) -> int:
    """Ids whose label text another id also has (``none`` gap fillers excluded)."""
    counts: dict[str, int] = {}
    for text in labels:
        counts[text] = counts.get(text, 0) + 1
    return sum(n for text, n in counts.items() if n > 1 and text != GAP_LABEL)


def _warn_labels(data: CoinSet) -> None:
    if data.gaps:
        log.warning("coin: %d step id(s) have no label in the %r subset and are encoded as %r (e.g. %s)",
                    len(data.gaps), LABEL_SUBSET, GAP_LABEL, ", ".join(map(str, data.gaps[:3])))
    if data.conflicts:
        log.warning("coin: %d step id(s) carry different label texts; the last one is used (e.g. %s)",
                    len(data.conflicts), "; ".join(data.conflicts[:3]))
    if _duplicates(data.labels):
        log.warning("coin: %d step ids share their label text with another id; under threshold = 'reference' the "
                    "background threshold is then a label's similarity with itself", _duplicates(data.labels))
