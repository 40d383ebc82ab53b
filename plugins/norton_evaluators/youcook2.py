"""YouCook2 zero-shot evaluation: text-to-clip retrieval and video-paragraph retrieval."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs
import numpy as np

from norton_core.config import option
from norton_core.interfaces import EvalContext, Evaluator, Model

from .readers import FeatureDir, Segment, Skips, read_youcook2, segment_rows

_CLIP_SKIPS = ("missing_features", "bad_features", "empty_caption", "empty_segment", "segment_past_end")


@attrs.frozen
class Pairs:
    """The evaluable (caption, clip) pairs of a YouCook2 split, plus every video's usable sentences."""

    texts: list[str]
    spans: list[tuple[np.ndarray, int, int]]
    owners: list[str]
    #: video id -> (features, non-empty sentences in id order) for every video with usable features
    videos: dict[str, tuple[np.ndarray, list[str]]]


def load_pairs(root: Path, annotations: str, subset: str, skips: Skips) -> Pairs:
    feats = FeatureDir(root, skips)
    texts: list[str] = []
    spans: list[tuple[np.ndarray, int, int]] = []
    owners: list[str] = []
    videos: dict[str, tuple[np.ndarray, list[str]]] = {}
    for vid, segments in read_youcook2(root / annotations, subset).items():
        features = feats.get(vid)
        if features is None:
            continue
        sentences = []
        for seg in segments:
            if not seg.sentence.strip():
                skips.add("empty_caption", f"{vid} annotation {seg.id}")
                continue
            sentences.append(seg.sentence)
            rows = segment_rows(seg, len(features))
            if isinstance(rows, str):
                skips.add(rows, _describe(vid, seg, len(features)))
                continue
            texts.append(seg.sentence)
            spans.append((features, rows[0], rows[1]))
            owners.append(vid)
        if sentences:
            videos[vid] = (features, sentences)
    return Pairs(texts, spans, owners, videos)


def _describe(vid: str, seg: Segment, length: int) -> str:
    return f"{vid} annotation {seg.id}: segment [{seg.start:g}, {seg.end:g}] s, video has {length} s of features"


def _groups(owners: list[str]) -> list[np.ndarray]:
    """Index arrays of each owner's items, owners in first-seen order (pairs are collected video by video)."""
    order: dict[str, list[int]] = {}
    for i, vid in enumerate(owners):
        order.setdefault(vid, []).append(i)
    return [np.asarray(v) for v in order.values()]


class YouCook2Clip(Evaluator):
    """Text-to-clip retrieval over the annotated segments: R@1/5/10 and median rank."""

    name = "youcook2-clip"
    dataset = "youcook2"

    @attrs.frozen
    class Config:
        annotations: str = option("annotations.json", help="YouCook2 annotations JSON, relative to the dataset dir")
        subset: str = option("validation", help="the annotations' subset to evaluate")
        max_video_len: int = option(32, ge=1, help="seconds of a segment encoded (the reference keeps the first 32)")
        max_len: int = option(96, ge=8, help="total token budget; captions get max_len - max_video_len")
        ties: Literal["expected", "optimistic", "pessimistic"] = option(
            "expected", help="tied scores: expected recall under a random tie break, or best / worst case")

    def __init__(self, config: Config) -> None:
        self.config = config

    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, float]:
        from norton_core.evaluation.embed import encode_clips, encode_texts
        from norton_core.evaluation.metrics import rank_metrics

        cfg = self.config
        skips = Skips(self.name)
        pairs = load_pairs(ctx.root, cfg.annotations, cfg.subset, skips)
        skips.report()
        counts = {"pairs": float(len(pairs.texts)), "videos": float(len(set(pairs.owners))),
                  **skips.metrics(_CLIP_SKIPS)}
        if not pairs.texts:
            return {"R@1": float("nan"), "R@5": float("nan"), "R@10": float("nan"), "MR": float("nan"), **counts}
        kw = {"batch_size": ctx.batch_size, "device": ctx.device, "progress": ctx.progress}
        text = encode_texts(model, pairs.texts, cfg.max_len - cfg.max_video_len, desc="youcook2 captions", **kw)
        clips = encode_clips(model, pairs.spans, cfg.max_video_len, desc="youcook2 clips", **kw)
        sims = text.astype(np.float64) @ clips.astype(np.float64).T
        return {**rank_metrics(sims, np.arange(len(sims)), ties=cfg.ties), **counts}


class YouCook2Video(Evaluator):
    """Video-paragraph retrieval: caption average, DTW and OTAM, background removed and kept, plus the
    offset-invariant ``*_centred`` variants of DTW and OTAM."""

    name = "youcook2-video"
    dataset = "youcook2"

    @attrs.frozen
    class Config:
        annotations: str = option("annotations.json", help="YouCook2 annotations JSON, relative to the dataset dir")
        subset: str = option("validation", help="the annotations' subset to evaluate")
        max_video_len: int = option(32, ge=1, help="seconds of a segment or window encoded")
        max_len: int = option(96, ge=8, help="total token budget; captions get max_len - max_video_len")
        background: bool = option(True, help="also evaluate with background kept (the whole video in windows)")
        window: int = option(16, ge=1, help="background kept: window length in seconds")
        stride: int = option(16, ge=1, help="background kept: seconds between window starts")
        select_ratio: float = option(1.3, gt=0.0, help="background kept: windows kept per pair, x captions")
        bg_dtw_offset: float = option(3.0, help="background kept: DTW distance is offset - sim (reference: 3)")
        padding: Literal["exact", "reference"] = option(
            "exact", help="reference = pad blocks to the largest with the reference's zeroed exit region, which "
                          "can make the last caption free")
        otam_recurrence: Literal["exact", "reference"] = option(
            "exact", help="reference = the reference's sign slip in the first-column OTAM recurrence")
        centred: bool = option(True, help="also report DTW/OTAM on similarities centred per caption (shift-invariant)")

    def __init__(self, config: Config) -> None:
        self.config = config

    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, float]:
        from norton_core.evaluation.embed import encode_clips, encode_texts

        cfg = self.config
        skips = Skips(self.name)
        pairs = load_pairs(ctx.root, cfg.annotations, cfg.subset, skips)
        skips.report()
        kw = {"batch_size": ctx.batch_size, "device": ctx.device, "progress": ctx.progress}
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
        from norton_core.evaluation.embed import encode_clips, encode_texts

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
        windows = encode_clips(model, spans, cfg.max_video_len, desc="youcook2 windows", **kw)
        out.update(self._paragraph_metrics(text @ windows.T, _groups(text_owner), _groups(window_owner), "bg_",
                                           offset_dtw=cfg.bg_dtw_offset, dtw_scale="product", otam_scale="max",
                                           select=cfg.select_ratio))
        return out

    def _paragraph_metrics(self, sims: np.ndarray, text_groups: list[np.ndarray], clip_groups: list[np.ndarray],
                           prefix: str, *, offset_dtw: float, dtw_scale: Literal["product", "max"],
                           otam_scale: Literal["product", "max"], select: float | None) -> dict[str, float]:
        from norton_core.evaluation.metrics import rank_metrics
        from norton_core.evaluation.sequence import alignment_scores, caption_average, centre_per_caption

        cfg = self.config
        sims = sims.astype(np.float64)
        common = {"select_ratio": select, "padding": cfg.padding, "recurrence": cfg.otam_recurrence}
        scores = {
            "capavg": caption_average(sims, text_groups, clip_groups),
            "dtw": alignment_scores(sims, text_groups, clip_groups, "dtw", offset=offset_dtw, scale=dtw_scale,
                                    **common),
            "otam": alignment_scores(sims, text_groups, clip_groups, "otam", offset=0.0, scale=otam_scale, **common),
        }
        if cfg.centred:
            centred = centre_per_caption(sims)
            for method, scale in (("dtw", dtw_scale), ("otam", otam_scale)):
                scores[f"{method}_centred"] = alignment_scores(centred, text_groups, clip_groups, method, offset=0.0,
                                                               scale=scale, **common)
        out: dict[str, float] = {}
        targets = np.arange(len(text_groups))
        for name, matrix in scores.items():
            for metric, value in rank_metrics(matrix, targets).items():
                if metric != "MR":
                    out[f"{prefix}{name}_{metric}"] = value
        return out

    def _nan_metrics(self, prefix: str) -> dict[str, float]:
        names = ["capavg", "dtw", "otam"] + (["dtw_centred", "otam_centred"] if self.config.centred else [])
        return {f"{prefix}{n}_R@{k}": float("nan") for n in names for k in (1, 5, 10)}
