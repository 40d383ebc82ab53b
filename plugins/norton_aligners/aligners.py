"""The ``overlapped`` (pretraining) and ``aligned`` (retrieval embedding, evaluation) clip samplers.

``overlapped`` follows the reference's pretraining sampler: per clip, a random centre caption, a random token budget, a caption
span grown around the centre, a random video centre inside the caption span's seconds and a video span of random
length grown around it (overlapping the text, not aligned to it). ``aligned`` draws the caption span the same way
and takes exactly its seconds as the video span (the reference's VariedLenAligner).

Both return clips sorted by ``(text_start, video_start, text_end, video_end)``: the video-paragraph loss groups
consecutive clips into sequences, so temporal order is part of the data contract.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import numpy as np

from norton_core import Aligner, DataError, SpecialTokens, VideoRecord, build_text_seq, build_video_seq, option

from .sampling import aligned_video_span, sample_text_span, sample_video_center, sample_video_span

_SPAN_KEYS = ("video_start", "video_end", "text_start", "text_end")


def _check_record(record: VideoRecord) -> None:
    if len(record.tokens) == 0 or len(record.starts) == 0:
        raise DataError(f"video {record.video_id!r}: no captions to sample clips from (expected at least one)")
    if record.features.ndim != 2 or record.features.shape[0] == 0:
        raise DataError(
            f"video {record.video_id!r}: no video seconds to sample clips from "
            f"(features of shape {tuple(record.features.shape)}, expected (T >= 1, 512))"
        )
    if not (len(record.starts) == len(record.ends) == len(record.tokens)):
        raise DataError(
            f"video {record.video_id!r}: {len(record.starts)} caption starts, {len(record.ends)} ends and "
            f"{len(record.tokens)} token lists (expected equal counts)"
        )


def _stack_sorted(clips: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    clips.sort(key=lambda c: (c["text_start"], c["video_start"], c["text_end"], c["video_end"]))
    out: dict[str, np.ndarray] = {k: np.stack([c[k] for c in clips]) for k in ("caps", "cmasks", "vfeats", "vmasks")}
    for key in _SPAN_KEYS:
        out[key] = np.asarray([c[key] for c in clips], dtype=np.int64)
    return out


class _ClipSampler(Aligner):
    """Shared text-span sampling and token layout; subclasses choose the video span."""

    def __init__(self, config: Any, special_tokens: SpecialTokens) -> None:
        if config.max_len - config.max_video_len < 4:
            raise ValueError(f"max_len - max_video_len must leave room for text (got {config.max_len} - "
                             f"{config.max_video_len})")
        self.config = config
        self.special_tokens = special_tokens
        self.clips_per_video = config.clip_per_video
        self.text_len = config.max_len - config.max_video_len

    def _video_span(self, record: VideoRecord, first: int, last_excl: int, rng: random.Random) -> tuple[int, int]:
        raise NotImplementedError

    def __call__(self, record: VideoRecord, rng: random.Random) -> dict[str, np.ndarray]:
        _check_record(record)
        cfg = self.config
        n_caps = len(record.tokens)
        clips = []
        for _ in range(cfg.clip_per_video):
            center = rng.randint(0, n_caps - 1)
            max_text = rng.randint(cfg.sampled_min_len, cfg.sampled_max_len)
            first, last_excl = sample_text_span(record.starts, record.ends, record.tokens, center, max_text, rng)
            video_start, video_end = self._video_span(record, first, last_excl, rng)
            vfeats, vmasks = build_video_seq(record.features, video_start, video_end, cfg.max_video_len)
            toks = np.concatenate([np.asarray(t, dtype=np.int64) for t in record.tokens[first:last_excl]])
            caps, cmasks = build_text_seq(toks, self.special_tokens, self.text_len)
            clips.append({"caps": caps, "cmasks": cmasks, "vfeats": vfeats, "vmasks": vmasks,
                          "video_start": video_start, "video_end": video_end,
                          "text_start": first, "text_end": last_excl})
        return _stack_sorted(clips)


@attrs.frozen
class ClipConfig:
    """Options shared by both aligners (defaults: how2_pretrain.yaml)."""

    clip_per_video: int = option(16, ge=1, help="C: clips sampled per video")
    max_video_len: int = option(16, ge=1, help="Lv: video tokens (seconds) per clip")
    max_len: int = option(48, ge=5, help="Lv + Lc: caption length Lc = max_len - max_video_len")
    sampled_min_len: int = option(8, ge=1, help="lower bound of the random caption token budget")
    sampled_max_len: int = option(32, ge=1, help="upper bound of the random caption token budget")

    def __attrs_post_init__(self) -> None:
        if self.sampled_min_len > self.sampled_max_len:
            raise ValueError(f"sampled_min_len ({self.sampled_min_len}) > sampled_max_len ({self.sampled_max_len})")


@attrs.frozen
class OverlappedConfig(ClipConfig):
    """The overlapped sampler also draws the video span's length."""

    sampled_video_min_len: int = option(3, ge=1, help="lower bound of the random video span (seconds)")
    sampled_video_max_len: int = option(16, ge=1, help="upper bound of the random video span (seconds)")

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if self.sampled_video_min_len > self.sampled_video_max_len:
            raise ValueError(f"sampled_video_min_len ({self.sampled_video_min_len}) > sampled_video_max_len "
                             f"({self.sampled_video_max_len})")


class OverlappedAligner(_ClipSampler):
    """Pretraining sampler: a random-length video span around a random second of the caption span."""

    name = "overlapped"

    Config = OverlappedConfig

    def _video_span(self, record: VideoRecord, first: int, last_excl: int, rng: random.Random) -> tuple[int, int]:
        num_seconds = int(record.features.shape[0])
        center = sample_video_center(float(record.starts[first]), float(record.ends[last_excl - 1]), num_seconds, rng)
        length = rng.randint(self.config.sampled_video_min_len, self.config.sampled_video_max_len)
        return sample_video_span(center, length, num_seconds, rng)


class AlignedAligner(_ClipSampler):
    """Retrieval-embedding and evaluation sampler: the video span is the caption span's seconds (first Lv kept)."""

    name = "aligned"

    Config = ClipConfig

    def _video_span(self, record: VideoRecord, first: int, last_excl: int, rng: random.Random) -> tuple[int, int]:
        return aligned_video_span(float(record.starts[first]), float(record.ends[last_excl - 1]),
                                  int(record.features.shape[0]))
