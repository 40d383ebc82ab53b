"""MSR-VTT zero-shot text-to-video retrieval on the JSFusion 1k-A test split."""

from __future__ import annotations

from typing import Any, Literal

import attrs
import numpy as np

from norton_core import EvalContext, Evaluator, Model, option

from .readers import FeatureDir, Gallery, Skips, read_msrvtt

_SKIPS = ("missing_features", "bad_features", "empty_caption")


class MSRVTT(Evaluator):
    """Text-to-video retrieval: each caption ranks every test video (first ``max_video_len`` seconds)."""

    name = "msrvtt"
    dataset = "msrvtt"

    @attrs.frozen
    class Config:
        annotations: str = option("MSRVTT_JSFUSION_test.csv", help="the 1k-A test CSV, relative to the dataset dir")
        features: str = option("features", help="directory of <video_id>.npy features, relative to the dataset dir "
                                                "or absolute (e.g. msrvtt_feature_fps30_512)")
        max_video_len: int = option(32, ge=1, help="seconds of each video encoded (the reference keeps the first 32)")
        max_len: int = option(96, ge=8, help="total token budget; captions get max_len - max_video_len")
        ties: Literal["expected", "optimistic", "pessimistic"] = option(
            "expected", help="tied scores: expected recall under a random tie break, or best / worst case")

    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, float]:
        from norton_core import encode_clips, encode_texts, rank_metrics

        cfg = self.config
        skips = Skips(self.name)
        rows = read_msrvtt(ctx.root / cfg.annotations)
        feats = FeatureDir(ctx.root, skips, cfg.features, self.name)
        gallery = Gallery()
        texts: list[str] = []
        targets: list[int] = []
        for line, (vid, sentence) in enumerate(rows, start=2):
            features = feats.get(vid)
            if features is None:
                continue
            if not sentence.strip():
                skips.add("empty_caption", f"line {line} ({vid})")
                continue
            texts.append(sentence)
            targets.append(gallery.add(vid, features))
        skips.report()
        spans = gallery.spans
        counts = {"captions": float(len(texts)), "videos": float(len(spans)), **skips.metrics(_SKIPS)}
        if not texts:
            return {"R@1": float("nan"), "R@5": float("nan"), "R@10": float("nan"), "MR": float("nan"), **counts}
        kw: dict[str, Any] = {"batch_size": ctx.batch_size, "device": ctx.device, "progress": ctx.progress}
        text = encode_texts(model, texts, cfg.max_len - cfg.max_video_len, desc="msrvtt captions", **kw)
        videos = encode_clips(model, spans, cfg.max_video_len, desc="msrvtt videos", **kw)
        sims = text.astype(np.float64) @ videos.astype(np.float64).T
        return {**rank_metrics(sims, np.asarray(targets), ties=cfg.ties), **counts}
