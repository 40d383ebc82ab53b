"""HTM-Align zero-shot temporal grounding: recall and ROC-AUC (TAN's protocol).

Per video, windows of ``window`` seconds start every ``stride`` seconds (``0, stride, ... < T - window / 2``). A
window scores a contiguous range of sentences: those between the first and last *non-alignable* sentence whose
mid-time lies in ``[start - window, start + 2 * window]`` (non-alignable sentences keep their original ASR times, so
no ground-truth time leaks into the choice), widened to the first / last sentence for the first / last
``edge_windows`` windows. A sentence's score at a second is the cosine of its pooled caption embedding with that
second's video token, averaged over the windows that scored it. Recall: the share of alignable sentences whose best
second lies in ``[floor(start), ceil(end)]``; ``recall_chance`` is the recall of a random second among those
scored (what an untrained model should get). AUC: ROC-AUC of every sentence's best score against its label.

Decided differences from the reference (none changes a sentence that some window scored):
- seconds no window scored are excluded from the argmax (the reference fills exact zeros with -6e4 after
  averaging, which also catches a genuine zero cosine); a sentence that no window scored is a miss and counts
  under ``unscored`` (the reference would predict second 0 for it);
- a video of ``window / 2`` seconds or less gets one window at 0 (the reference's ``arange`` gives none).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from norton_core import EvalContext, Evaluator, Model, option

from .readers import FeatureDir, Skips, read_htm_align

_SKIPS = ("missing_features", "bad_features", "empty_text")


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Start seconds of the windows over a video of ``length`` seconds (at least one)."""
    starts = np.arange(0, length - window // 2, stride)
    return starts if len(starts) else np.zeros(1, dtype=np.int64)


def active_sentences(index: int, start: int, n_windows: int, mids: np.ndarray, alignable: np.ndarray, window: int,
                     edge_windows: int) -> np.ndarray:
    """Indices of the sentences window ``index`` (starting at ``start``) scores; empty when none."""
    candidates = np.flatnonzero(~alignable & (start - window <= mids) & (mids <= start + 2 * window))
    if len(candidates) == 0:
        return candidates
    left, right = int(candidates.min()), int(candidates.max())
    if index < edge_windows:
        left = 0
    if index >= n_windows - edge_windows:
        right = len(mids) - 1
    return np.arange(left, right + 1)


class HTMAlign(Evaluator):
    """Temporal grounding of ASR sentences on HTM-Align: ``recall`` and ``auc`` (percent)."""

    name = "htm-align"
    dataset = "htm_align"

    @attrs.frozen
    class Config:
        annotations: str = option("htm_align.json", help="HTM-Align annotations, relative to the dataset dir")
        features: str = option("features", help="directory of <video_id>.npy features, relative to the dataset dir "
                                                "or absolute (e.g. '.' when the .npy files lie beside the JSON)")
        window: int = option(32, ge=2, help="window length in seconds (= the video tokens encoded)")
        stride: int = option(8, ge=1, help="seconds between window starts")
        edge_windows: int = option(4, ge=0, help="first/last windows that score every earlier/later sentence")
        max_len: int = option(96, ge=8, help="total token budget; captions get max_len - window")

    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, float]:
        from norton_core import encode_clips, encode_texts, grounding_hits, roc_auc

        cfg = self.config
        skips = Skips(self.name)
        annotated = read_htm_align(ctx.root / cfg.annotations)
        feats = FeatureDir(ctx.root, skips, cfg.features, self.name)
        videos = []
        for vid, sentences in annotated.items():
            features = feats.get(vid)
            if features is None:
                continue
            kept = []
            for k, s in enumerate(sentences):
                if s.text.strip():
                    kept.append(s)
                else:
                    skips.add("empty_text", f"{vid} sentence {k}")
            if kept:
                videos.append((vid, features, kept))
        skips.report()

        texts = [s.text for _, _, sentences in videos for s in sentences]
        kw: dict[str, Any] = {"batch_size": ctx.batch_size, "device": ctx.device}
        text = _unit(encode_texts(model, texts, cfg.max_len - cfg.window, progress=ctx.progress,
                                  desc="htm-align sentences", **kw)) if texts else np.zeros((0, 0))
        offsets = np.cumsum([0] + [len(sentences) for _, _, sentences in videos])
        hits, chance, best_scores, labels, unscored = [], [], [], [], 0
        for group in _progress(self._groups(videos, ctx.batch_size), ctx.progress):
            spans = [span for _, plan in group for span in plan[1]]
            tokens = _unit(encode_clips(model, spans, cfg.window, tokens=True, progress=False, **kw))
            used = 0
            for v, (windows, _spans, actives) in group:
                _, features, sentences = videos[v]
                sim = _window_average(len(features), text[offsets[v]:offsets[v + 1]], windows, actives,
                                      tokens[used:used + len(windows)])
                used += len(windows)
                alignable = np.array([s.alignable for s in sentences])
                starts = np.array([s.start for s in sentences])
                ends = np.array([s.end for s in sentences])
                hits.append(grounding_hits(sim[alignable], starts[alignable], ends[alignable]))
                chance.append(_chance_hits(sim[alignable], starts[alignable], ends[alignable]))
                best = sim.max(axis=1)
                unscored += int((~np.isfinite(best) & alignable).sum())
                best_scores.append(best)
                labels.append(alignable)
        all_hits = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
        all_labels = np.concatenate(labels) if labels else np.zeros(0, dtype=bool)
        return {
            "recall": 100.0 * float(all_hits.mean()) if len(all_hits) else float("nan"),
            "recall_chance": 100.0 * float(np.concatenate(chance).mean()) if len(all_hits) else float("nan"),
            "auc": roc_auc(np.concatenate(best_scores), all_labels) if best_scores else float("nan"),
            "videos": float(len(videos)),
            "sentences": float(len(all_labels)),
            "alignable": float(all_labels.sum()),
            "unscored": float(unscored),
            **skips.metrics(_SKIPS),
        }

    def _plan(self, features: np.ndarray, sentences: list) -> tuple[list[int], list, list[np.ndarray]]:
        """The windows of a video that score at least one sentence: starts, spans and the sentences each scores."""
        cfg = self.config
        length = len(features)
        starts = window_starts(length, cfg.window, cfg.stride)
        mids = np.array([(s.start + s.end) / 2 for s in sentences])
        alignable = np.array([s.alignable for s in sentences])
        windows, spans, actives = [], [], []
        for index, start in enumerate(starts):
            active = active_sentences(index, int(start), len(starts), mids, alignable, cfg.window, cfg.edge_windows)
            if len(active):  # a window scoring nothing is not encoded at all
                windows.append(int(start))
                spans.append((features, int(start), min(int(start) + cfg.window, length)))
                actives.append(active)
        return windows, spans, actives

    def _groups(self, videos: list, batch_size: int) -> list[list]:
        """Videos with their window plans, grouped so that each group's windows fill about one batch."""
        groups: list[list] = [[]]
        filled = 0
        for v, (_, features, sentences) in enumerate(videos):
            plan = self._plan(features, sentences)
            if filled and filled + len(plan[0]) > batch_size:
                groups.append([])
                filled = 0
            groups[-1].append((v, plan))
            filled += len(plan[0])
        return [g for g in groups if g]


def _window_average(length: int, text: np.ndarray, windows: list[int], actives: list[np.ndarray],
                    tokens: np.ndarray) -> np.ndarray:
    """(sentences, T) cosine scores averaged over the windows that scored each second; ``-inf`` where none did."""
    total = np.zeros((len(text), length))
    count = np.zeros((len(text), length))
    for start, active, window_tokens in zip(windows, actives, tokens, strict=True):
        end = min(start + window_tokens.shape[0], length)
        total[active, start:end] += text[active] @ window_tokens[: end - start].T
        count[active, start:end] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), -np.inf)


def _chance_hits(sim: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The hit probability of a second picked uniformly among each sentence's scored seconds (0 if none)."""
    out = np.zeros(len(sim))
    for i, (row, start, end) in enumerate(zip(sim, starts, ends, strict=True)):
        scored = np.isfinite(row)
        if scored.any():
            out[i] = scored[max(int(np.floor(start)), 0): int(np.ceil(end)) + 1].sum() / scored.sum()
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _progress(items: list[Any], enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(items, desc="htm-align video groups", unit="group", disable=not enabled, leave=False, dynamic_ncols=True)
