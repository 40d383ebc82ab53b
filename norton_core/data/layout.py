"""Token layout of one clip/caption pair, shared by aligners and evaluators (VideoCLIP's layout).

Video: ``Lv`` feature slots; the first ``min(Lv, end - start)`` seconds of the span are copied and marked valid.
Text: ``[CLS, SEP] + tokens + [SEP] + [PAD] * (Lc - len)`` with ``Lc = max_len - max_video_len`` and the tokens cut
to ``Lc - 3``; the mask covers CLS, both SEPs and the tokens. The model feeds ``[CLS] + caps[2:]`` to the text
encoder (see the model plugin), so the leading CLS/SEP pair stands in for the video encoder's CLS/SEP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from norton_core.plugin.interfaces import SpecialTokens


def build_video_seq(features: np.ndarray, start: int, end: int, max_video_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(vfeats (Lv, D) in features' dtype, vmask (Lv,) bool)`` for the span ``[start, end)`` seconds."""
    vfeats = np.zeros((max_video_len, features.shape[1]), dtype=features.dtype)
    vmask = np.zeros(max_video_len, dtype=bool)
    length = max(0, min(max_video_len, end - start, features.shape[0] - start))
    vfeats[:length] = features[start:start + length]
    vmask[:length] = True
    return vfeats, vmask


def build_text_seq(tokens: Sequence[int] | np.ndarray, special: SpecialTokens, text_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(caps (text_len,) int64, cmask (text_len,) bool)``; ``text_len`` is ``max_len - max_video_len``."""
    keep = np.asarray(tokens, dtype=np.int64)[: text_len - 3]
    caps = np.full(text_len, special.pad, dtype=np.int64)
    caps[0], caps[1] = special.cls, special.sep
    caps[2:2 + len(keep)] = keep
    caps[2 + len(keep)] = special.sep
    cmask = np.zeros(text_len, dtype=bool)
    cmask[: 3 + len(keep)] = True
    return caps, cmask
