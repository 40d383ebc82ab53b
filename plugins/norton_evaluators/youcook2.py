"""YouCook2 zero-shot evaluation: text-to-clip retrieval and video-paragraph retrieval."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from norton_core import DataError, EvalContext, Evaluator, Model, option

from .readers import FeatureDir, Segment, Skips, read_clip_selection, read_youcook2, segment_rows

_CLIP_SKIPS = ("missing_features", "bad_features", "empty_caption", "empty_segment", "segment_past_end")


@attrs.frozen
class Pairs:
    """The evaluable (caption, clip) pairs of a YouCook2 split, plus every video's usable sentences."""

    texts: list[str]
    spans: list[tuple[np.ndarray, int, int]]
    owners: list[str]
    #: video id -> (features, non-empty sentences in id order) for every video with usable features
    videos: dict[str, tuple[np.ndarray, list[str]]]


def load_pairs(root: Path, annotations: str, subset: str, skips: Skips, *, features: str = "features",
               clips: str = "", task: str = "youcook2") -> Pairs:
    """The evaluable pairs: every annotated segment of ``subset`` whose video has features, or with ``clips`` the
    segments that clip list names (the reference's ``youcook_val.pkl``)."""
    selection = _selection(root, annotations, subset, clips, task)
    source = selection if selection is not None else read_youcook2(root / annotations, subset)
    feats = FeatureDir(root, skips, features, task)
    texts: list[str] = []
    spans: list[tuple[np.ndarray, int, int]] = []
    owners: list[str] = []
    videos: dict[str, tuple[np.ndarray, list[str]]] = {}
    for vid, segments in source.items():
        features_ = feats.get(vid)
        if features_ is None:
            continue
        sentences = []
        for seg in segments:
            if not seg.sentence.strip():
                skips.add("empty_caption", f"{vid} annotation {seg.id}")
                continue
            sentences.append(seg.sentence)
            rows = segment_rows(seg, len(features_))
            if isinstance(rows, str):
                skips.add(rows, _describe(vid, seg, len(features_)))
                continue
            texts.append(seg.sentence)
            spans.append((features_, rows[0], rows[1]))
            owners.append(vid)
        if sentences:
            videos[vid] = (features_, sentences)
    if selection is not None:
        records = sum(len(v) for v in selection.values())
        print(f"norton: {task}: {root / clips} selects {len(texts)} pairs over {len(set(owners))} videos "
              f"(of {records} listed clips over {len(selection)} videos; the rest lack features or are skipped "
              f"as counted)", file=sys.stderr)
    return Pairs(texts, spans, owners, videos)


def _selection(root: Path, annotations: str, subset: str, clips: str, task: str) -> dict[str, list[Segment]] | None:
    """``{video: its listed segments in list order}`` from the clip list, or None without one. A listed clip that
    the annotations do not have is an error (the list and the annotations disagree)."""
    if not clips:
        return None
    listed = read_clip_selection(root / clips)
    every = read_youcook2(root / annotations, None)
    out: dict[str, list[Segment]] = {}
    problems = []
    for video, k in listed:
        segments = every.get(video)
        by_position = {seg.position: seg for seg in segments or []}
        if segments is None:
            problems.append(f"{root / clips}: clip {video}_{k}: video {video!r} is not in {root / annotations}")
        elif k not in by_position:
            problems.append(f"{root / clips}: clip {video}_{k}: {video!r} has {len(segments)} annotation(s) in "
                            f"{root / annotations} (positions 0..{len(segments) - 1})")
        else:
            out.setdefault(video, []).append(by_position[k])
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more listed clips the annotations lack"]
                                 if len(problems) > 20 else [])
        raise DataError(problems=[f"{task}: {line}" for line in shown])
    return out


def _describe(vid: str, seg: Segment, length: int) -> str:
    return f"{vid} annotation {seg.id}: segment [{seg.start:g}, {seg.end:g}] s, video has {length} s of features"


def _groups(owners: list[str]) -> list[np.ndarray]:
    """Index arrays of each owner's items, owners in first-seen order (pairs are collected video by video)."""
    order: dict[str, list[int]] = {}
    for i, vid in enumerate(owners):
        order.setdefault(vid, []).append(i)
    return [np.asarray(v) for v in order.values()]


_ANNOTATIONS_HELP = "YouCook2 annotations JSON, relative to the dataset dir"
_FEATURES_HELP = ("directory of <video_id>.npy features, relative to the dataset dir or absolute (e.g. "
                  "youcook_validation_feature_fps30_512)")
_CLIPS_HELP = ("clips to score: the reference's youcook_val.pkl (read without running any code) or a text file of "
               "<video>_<k> lines, relative to the dataset dir; empty = every segment of the subset")


class YouCook2Clip(Evaluator):
    """Text-to-clip retrieval over the annotated segments: R@1/5/10 and median rank."""

    name = "youcook2-clip"
    dataset = "youcook2"

    @attrs.frozen
    class Config:
        annotations: str = option("annotations.json", help=_ANNOTATIONS_HELP)
        subset: str = option("validation", help="the annotations' subset to evaluate (without a clip list)")
        features: str = option("features", help=_FEATURES_HELP)
        clips: str = option("", help=_CLIPS_HELP)
        max_video_len: int = option(32, ge=1, help="seconds of a segment encoded (the reference keeps the first 32)")
        max_len: int = option(96, ge=8, help="total token budget; captions get max_len - max_video_len")
        ties: Literal["expected", "optimistic", "pessimistic"] = option(
            "expected", help="tied scores: expected recall under a random tie break, or best / worst case")

    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, float]:
        from norton_core import encode_clips, encode_texts, rank_metrics

        cfg = self.config
        skips = Skips(self.name)
        pairs = load_pairs(ctx.root, cfg.annotations, cfg.subset, skips, features=cfg.features, clips=cfg.clips,
                           task=self.name)
        skips.report()
        counts = {"pairs": float(len(pairs.texts)), "videos": float(len(set(pairs.owners))),
                  **skips.metrics(_CLIP_SKIPS)}
        if not pairs.texts:
            return {"R@1": float("nan"), "R@5": float("nan"), "R@10": float("nan"), "MR": float("nan"), **counts}
        kw: dict[str, Any] = {"batch_size": ctx.batch_size, "device": ctx.device, "progress": ctx.progress}
        text = encode_texts(model, pairs.texts, cfg.max_len - cfg.max_video_len, desc="youcook2 captions", **kw)
        clips = encode_clips(model, pairs.spans, cfg.max_video_len, desc="youcook2 clips", **kw)
        sims = text.astype(np.float64) @ clips.astype(np.float64).T
        return {**rank_metrics(sims, np.arange(len(sims)), ties=cfg.ties), **counts}


class YouCook2Video(Evaluator):
    """Video-paragraph retrieval: caption average, DTW and OTAM, background removed and kept.

    ``dtw_*`` and ``otam_*`` follow the reference exactly (its padding and its OTAM recurrence), so they can stand
    next to published tables; ``*_exact_*`` align each block at its own size with the correct recurrence, and
    ``*_centred_*`` do so on similarities centred per caption (invariant to a similarity offset)."""

    name = "youcook2-video"
    dataset = "youcook2"

    @attrs.frozen
    class Config:
        annotations: str = option("annotations.json", help=_ANNOTATIONS_HELP)
        subset: str = option("validation", help="the annotations' subset to evaluate (without a clip list)")
        features: str = option("features", help=_FEATURES_HELP)
        clips: str = option("", help=_CLIPS_HELP)
        max_video_len: int = option(32, ge=1, help="seconds of a segment or window encoded")
        max_len: int = option(96, ge=8, help="total token budget; captions get max_len - max_video_len")
        background: bool = option(True, help="also evaluate with background kept (the whole video in windows)")
        window: int = option(16, ge=1, help="background kept: window length in seconds")
        stride: int = option(16, ge=1, help="background kept: seconds between window starts")
        select_ratio: float = option(1.3, gt=0.0, help="background kept: windows kept per pair, x captions")
        bg_dtw_offset: float = option(3.0, help="background kept: DTW distance is offset - sim (reference: 3)")
        bg_attend_cls: bool = option(
            False, help="background kept: let windows attend to the video [CLS] token (the reference masks it out)")
        exact: bool = option(True, help="also report *_exact: DTW/OTAM without the reference's padding and "
                                        "recurrence quirks")
        centred: bool = option(True, help="also report *_centred: exact DTW/OTAM on similarities centred per "
                                          "caption (shift-invariant)")

    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, float]:
        from norton_core import encode_clips, encode_texts

        cfg = self.config
        skips = Skips(self.name)
        pairs = load_pairs(ctx.root, cfg.annotations, cfg.subset, skips, features=cfg.features, clips=cfg.clips,
                           task=self.name)
        skips.report()
        kw: dict[str, Any] = {"batch_size": ctx.batch_size, "device": ctx.device, "progress": ctx.progress}
        text_len = cfg.max_len - cfg.max_video_len
        out: dict[str, float] = {"videos": float(len(set(pairs.owners)))}
        if pairs.texts:
            text = encode_texts(model, pairs.texts, text_len, desc="youcook2 captions", **kw)
            clips = encode_clips(model, pairs.spans, cfg.max_video_len, desc="youcook2 clips", **kw)
            groups = _groups(pairs.owners)
            out.update(self._paragraph_metrics(text @ clips.T, groups, groups, "", offset_dtw=0.0,
                                               dtw_scale="product", otam_scale="product", select=None))
        else:
            out.update(self._nan_metrics(""))
        if cfg.background:
            out.update(self._background(model, pairs, text_len, kw))
        return {**out, **skips.metrics(_CLIP_SKIPS)}

    def _background(self, model: Model, pairs: Pairs, text_len: int, kw: dict) -> dict[str, float]:
        from norton_core import encode_clips, encode_texts

        cfg = self.config
        texts: list[str] = []
        spans: list[tuple[np.ndarray, int, int]] = []
        text_owner: list[str] = []
        window_owner: list[str] = []
        for vid, (features, sentences) in pairs.videos.items():
            texts.extend(sentences)
            text_owner.extend([vid] * len(sentences))
            for start in range(0, len(features), cfg.stride):
                spans.append((features, start, min(start + cfg.window, len(features))))
                window_owner.append(vid)
        out = {"bg_videos": float(len(pairs.videos))}
        if not texts:
            return {**out, **self._nan_metrics("bg_")}
        text = encode_texts(model, texts, text_len, desc="youcook2 paragraphs", **kw)
        windows = encode_clips(model, spans, cfg.max_video_len, desc="youcook2 windows",
                               attend_cls=cfg.bg_attend_cls, **kw)
        out.update(self._paragraph_metrics(text @ windows.T, _groups(text_owner), _groups(window_owner), "bg_",
                                           offset_dtw=cfg.bg_dtw_offset, dtw_scale="product", otam_scale="max",
                                           select=cfg.select_ratio))
        return out

    def _variants(self) -> list[str]:
        """Suffixes of the DTW/OTAM variants reported: "" (the reference), "_exact", "_centred"."""
        return [""] + ["_exact"] * self.config.exact + ["_centred"] * self.config.centred

    def _paragraph_metrics(self, sims: np.ndarray, text_groups: list[np.ndarray], clip_groups: list[np.ndarray],
                           prefix: str, *, offset_dtw: float, dtw_scale: Literal["product", "max"],
                           otam_scale: Literal["product", "max"], select: float | None) -> dict[str, float]:
        from norton_core import alignment_scores, caption_average, centre_per_caption, rank_metrics

        sims = sims.astype(np.float64)
        scores = {"capavg": caption_average(sims, text_groups, clip_groups)}
        for variant in self._variants():
            quirks: Literal["reference", "exact"] = "reference" if variant == "" else "exact"
            given = centre_per_caption(sims) if variant == "_centred" else sims
            methods: tuple[tuple[Literal["dtw", "otam"], float, Literal["product", "max"]], ...] = (
                ("dtw", offset_dtw, dtw_scale), ("otam", 0.0, otam_scale))
            for method, offset, scale in methods:
                scores[f"{method}{variant}"] = alignment_scores(
                    given, text_groups, clip_groups, method, offset=0.0 if variant == "_centred" else offset,
                    scale=scale, select_ratio=select, padding=quirks, recurrence=quirks)
        out: dict[str, float] = {}
        targets = np.arange(len(text_groups))
        for name, matrix in scores.items():
            for metric, value in rank_metrics(matrix, targets).items():
                if metric != "MR":
                    out[f"{prefix}{name}_{metric}"] = value
        return out

    def _nan_metrics(self, prefix: str) -> dict[str, float]:
        names = ["capavg"] + [f"{m}{v}" for v in self._variants() for m in ("dtw", "otam")]
        return {f"{prefix}{n}_R@{k}": float("nan") for n in names for k in (1, 5, 10)}
