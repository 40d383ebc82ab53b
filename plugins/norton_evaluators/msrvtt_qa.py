"""MSR-VTT-QA multiple choice (JSFusion's ``MSR_MC_test.csv``): pick the one of 5 sentences that describes a video.

Protocol (the reference's ``QAPredictor`` / ``QAMetric``): each question's video is encoded from its first
``max_video_len`` seconds (16 in the reference's zero-shot config) and each of its 5 candidate sentences with the
caption budget ``max_len - max_video_len``; a candidate's score is the dot product of the pooled video and pooled
sentence embeddings; the prediction is the best-scoring candidate, and the metric is the share of questions
answered correctly (in percent). Chance is 20 %, reported as ``accuracy_chance``.

Ties (a collapsed or untrained model scores all 5 alike): the reference takes the first of equal maxima, so such a
model scores the share of questions whose answer is ``a1``. By default (``ties = "expected"``) a question whose
answer ties with k other candidates for the best score counts ``1 / (k + 1)``, the expected accuracy under a random
tie break; ``ties = "first"`` is the reference's rule. The two agree whenever no candidate ties the best one.

The file is tab-separated with a header naming at least ``vid_key``, ``a1`` .. ``a5`` and ``answer`` (the 0-based
index of the correct candidate; other columns, such as ``key``, are ignored). ``vid_key`` is ``msr<number>``; its
feature file is ``video<number>.npy`` (the reference replaces ``msr`` with ``video``). Questions that cannot be
scored are skipped, counted and named: ``missing_features`` / ``bad_features`` (the feature file),
``bad_candidates`` (not exactly 5 non-empty candidates on the line), ``bad_answer`` (not an integer 0-4).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from norton_core import DataError, EvalContext, Evaluator, Model, option

from .readers import FeatureDir, Gallery, Skips

_SKIPS = ("missing_features", "bad_features", "bad_candidates", "bad_answer")
CHOICES = 5
QA_COLUMNS = ("vid_key", *(f"a{k}" for k in range(1, CHOICES + 1)), "answer")
CHANCE = 100.0 / CHOICES


@attrs.frozen
class Question:
    """One line of ``MSR_MC_test.csv``, validated: the video's feature name, 5 sentences, the answer's index."""

    line: int
    video: str
    candidates: tuple[str, ...]
    answer: int


def read_msrvtt_qa(path: Path, skips: Skips) -> list[Question]:
    """The scorable questions of ``MSR_MC_test.csv`` in file order; unscorable lines are counted in ``skips``.

    :raises DataError: the file is missing, not UTF-8, or its header lacks a required column.
    """
    if not path.is_file():
        raise DataError(f"{path}: evaluation file not found (expected JSFusion's tab-separated MSR_MC_test.csv)")
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc})") from None
    header = [h.strip() for h in rows[0]] if rows else []
    missing = [c for c in QA_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: line 1: expected a tab-separated header with the columns {', '.join(QA_COLUMNS)}; "
                        f"missing {', '.join(missing)} (got {header!r})")
    col = {name: header.index(name) for name in QA_COLUMNS}
    questions = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        question = _question(path, line, row, col, len(header), skips)
        if question is not None:
            questions.append(question)
    return questions


def _question(path: Path, line: int, row: list[str], col: dict[str, int], width: int, skips: Skips) -> Question | None:
    vid_key = row[col["vid_key"]].strip() if col["vid_key"] < len(row) else ""
    where = f"line {line} ({vid_key or 'no vid_key'})"
    if "/" in vid_key or "\\" in vid_key:
        raise DataError(f"{path}: {where}: vid_key {vid_key!r} is not a video key (msr<number>)")
    candidates = [row[col[f"a{k}"]].strip() if col[f"a{k}"] < len(row) else ""
                  for k in range(1, CHOICES + 1)]
    if len(row) != width or not all(candidates):
        skips.add("bad_candidates", f"{where}: expected {CHOICES} non-empty candidates in {width} fields, got "
                                    f"{sum(1 for c in candidates if c)} in {len(row)}")
        return None
    answer = row[col["answer"]].strip()
    if not (answer.isdigit() and int(answer) < CHOICES):
        skips.add("bad_answer", f"{where}: answer {answer!r} is not a candidate index 0-{CHOICES - 1}")
        return None
    return Question(line, vid_key.replace("msr", "video"), tuple(candidates), int(answer))


def choice_accuracy(scores: np.ndarray, answers: np.ndarray,
                    ties: Literal["expected", "first"] = "expected") -> float:
    """Percent of rows whose best-scoring column is the answer.

    :param scores: (Q, C) question-by-candidate scores; NaN ranks below every number.
    :param answers: (Q,) index of each question's correct candidate.
    :param ties: ``"expected"``: an answer tied with k others for the best score counts 1 / (k + 1); ``"first"``:
        the first of equal maxima is the prediction (the reference's argmax).
    """
    from norton_core import rank_counts

    answers = np.asarray(answers, dtype=np.int64)
    if len(answers) == 0:
        return float("nan")
    if ties == "first":
        finite = np.where(np.isnan(scores), -np.inf, np.asarray(scores, dtype=np.float64))
        hit = (finite.argmax(axis=1) == answers).astype(np.float64)
    else:
        better, tied = rank_counts(scores, answers)
        hit = (better == 0) / (tied + 1.0)
    return 100.0 * float(hit.mean())


class MSRVTTQA(Evaluator):
    """Multiple-choice video QA: for each video, which of 5 sentences matches it (accuracy, chance 20 %)."""

    name = "msrvtt-qa"
    dataset = "msrvtt"

    @attrs.frozen
    class Config:
        annotations: str = option("MSR_MC_test.csv", help="the tab-separated multiple-choice file, relative to the "
                                                          "dataset dir")
        features: str = option("features", help="directory of video<number>.npy features, relative to the dataset "
                                                "dir or absolute (e.g. msrvtt_feature_fps30_512)")
        max_video_len: int = option(16, ge=1, help="seconds of each video encoded (the reference's QA config: 16)")
        max_len: int = option(96, ge=8, help="total token budget; sentences get max_len - max_video_len")
        ties: Literal["expected", "first"] = option(
            "expected", help="tied best scores: expected accuracy under a random tie break, or the first candidate "
                             "(the reference's argmax)")

    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, float]:
        from norton_core import encode_clips, encode_texts

        cfg = self.config
        skips = Skips(self.name)
        questions = read_msrvtt_qa(ctx.root / cfg.annotations, skips)
        feats = FeatureDir(ctx.root, skips, cfg.features, self.name)
        gallery = Gallery()
        owners: list[int] = []
        texts: list[str] = []
        answers: list[int] = []
        for q in questions:
            features = feats.get(q.video)
            if features is None:
                continue
            owners.append(gallery.add(q.video, features))
            texts.extend(q.candidates)
            answers.append(q.answer)
        skips.report()
        spans = gallery.spans
        counts = {"questions": float(len(answers)), "videos": float(len(spans)), **skips.metrics(_SKIPS)}
        if not answers:
            return {"accuracy": float("nan"), "accuracy_chance": CHANCE, **counts}
        kw: dict[str, Any] = {"batch_size": ctx.batch_size, "device": ctx.device, "progress": ctx.progress}
        text = encode_texts(model, texts, cfg.max_len - cfg.max_video_len, desc="msrvtt-qa sentences", **kw)
        videos = encode_clips(model, spans, cfg.max_video_len, desc="msrvtt-qa videos", **kw)
        text = text.astype(np.float64).reshape(len(answers), CHOICES, -1)
        scores = np.einsum("qcd,qd->qc", text, videos.astype(np.float64)[np.asarray(owners)])
        accuracy = choice_accuracy(scores, np.asarray(answers), cfg.ties)
        return {"accuracy": accuracy, "accuracy_chance": CHANCE, **counts}
