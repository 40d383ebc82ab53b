"""CrossTask zero-shot step localization: one time per step, recall averaged over tasks (the reference's protocol).

Layout read (``crosstask_release/`` as released): ``tasks_primary.txt`` and ``tasks_related.txt`` (blocks of task
id, title, URL, number of steps, the comma-separated step texts, a blank line), ``videos.csv`` and
``videos_val.csv`` (``task,video_id,url`` lines) and ``annotations/<task>_<video_id>.csv`` (``step,start_s,end_s``
lines, step numbered from 1).

Test videos (``split = "reference"``): the reference's split. From ``videos.csv`` keep the videos with a feature file
and an annotation file, drop those listed in ``videos_val.csv``, keep the tasks of the two task files; then, per
primary task with more than ``n_train`` videos (in file order), ``n_train`` random videos (numpy's legacy generator
seeded with ``seed``, one draw per such task in file order) are training videos and the rest are tested. Which
videos are tested thus depends on which feature files exist, as in the reference. ``split = "val"`` tests the
videos of ``videos_val.csv`` instead.

Per video of ``T`` seconds and a task of ``K`` steps: each step text is encoded as a caption; windows of ``window``
seconds every ``stride`` seconds give per-second dot products with the step vectors, averaged over overlapping
windows (:mod:`.sliding`); their log-softmax over the steps is the cost of each (second, step). The prediction puts
each step at exactly one second, the steps in their listed order at increasing seconds, minimising the summed
negative log-probability (:func:`one_time_per_step`, the dynamic programme of CrossTask's reference code). A step
is recalled when its second lies in one of its annotated segments ``[floor(start), ceil(end))``.

``recall``: per task, recalled steps over annotated (video, step) pairs, then the mean over tasks.
``recall_chance``: the same for a second drawn uniformly and independently per step (the annotated share of the
video, per step). ``recall_<task>``: each task's recall.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import attrs
import numpy as np

from norton_core import DataError, EvalContext, Evaluator, Model, option

from .readers import FeatureDir, Skips
from .sliding import check_windows, scored_videos, unit_rows

log = logging.getLogger("norton.evaluation")

_SKIPS = ("missing_features", "missing_annotation", "bad_features", "unknown_task", "too_short", "bad_step",
          "bad_segment", "segment_past_end")


# ----------------------------------------------------------------------------------------------------------------
# reading crosstask_release/
# ----------------------------------------------------------------------------------------------------------------


def read_tasks(path: Path) -> dict[str, list[str]]:
    """``{task_id: step texts}`` from ``tasks_primary.txt`` / ``tasks_related.txt``."""
    if not path.is_file():
        raise DataError(f"{path}: task file not found (expected the crosstask_release layout)")
    lines = path.read_text(encoding="utf-8").splitlines()
    tasks: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        block = lines[i:i + 5]
        where = f"{path}: line {i + 1} (task {lines[i].strip()!r})"
        if len(block) < 5 or not block[3].strip().isdigit():
            raise DataError(f"{where}: expected 5 lines (id, title, URL, number of steps, comma-separated steps)")
        steps = block[4].strip().split(",")
        if int(block[3]) != len(steps):
            raise DataError(f"{where}: says {int(block[3])} steps but lists {len(steps)}")
        tasks[block[0].strip()] = steps
        i += 5
    return tasks


def read_video_list(path: Path) -> list[tuple[str, str]]:
    """``[(task, video_id), ...]`` in file order from ``videos.csv`` / ``videos_val.csv``."""
    if not path.is_file():
        raise DataError(f"{path}: video list not found (expected the crosstask_release layout)")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise DataError(f"{path}: line {n}: expected task,video_id,url, got {line.strip()!r}")
        out.append((fields[0], fields[1]))
    return out


def read_assignment(path: Path, length: int, n_steps: int, skips: Skips, name: str) -> np.ndarray:
    """``(T, K)`` 0/1: second ``t`` lies in an annotated segment of step ``k``, i.e. in ``[floor(start), ceil(end))``.

    Lines with a step outside ``1..K`` (``bad_step``), an end before the start or a negative start
    (``bad_segment``), or a start at or after the video's end (``segment_past_end``) are skipped and counted.
    """
    y = np.zeros((length, n_steps), dtype=np.uint8)
    with path.open(encoding="utf-8", newline="") as fh:
        for n, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            try:
                step, start, end = int(row[0]), float(row[1]), float(row[2])
                if len(row) != 3 or not (math.isfinite(start) and math.isfinite(end)):
                    raise ValueError
            except (ValueError, IndexError):
                raise DataError(f"{path}: line {n}: expected step,start_s,end_s (an integer and two numbers), "
                                f"got {','.join(row)!r}") from None
            if not 1 <= step <= n_steps:
                skips.add("bad_step", f"{name} line {n}: step {step}, task has {n_steps}")
            elif end < start or start < 0:
                skips.add("bad_segment", f"{name} line {n}: [{start}, {end}]")
            elif math.floor(start) >= length:
                skips.add("segment_past_end", f"{name} line {n}: starts at {start} s, video has {length} s")
            else:
                y[math.floor(start):math.ceil(end), step - 1] = 1
    return y


def reference_split(videos: list[tuple[str, str]], val: list[tuple[str, str]], primary: set[str],
                    n_train: int, seed: int) -> dict[str, list[str]]:
    """``{task: tested video ids}``: the reference's random split (inputs already filtered to usable videos)."""
    held = {(t, v) for t, v in val}
    task_vids: dict[str, list[str]] = {}
    for task, vid in videos:
        if (task, vid) not in held:
            task_vids.setdefault(task, []).append(vid)
    rng = np.random.RandomState(seed)  # the reference seeds numpy's global legacy generator and draws in this order
    tested: dict[str, list[str]] = {}
    for task, vids in task_vids.items():
        if task in primary and len(vids) > n_train:
            train = set(rng.choice(vids, n_train, replace=False).tolist())
            tested[task] = [v for v in vids if v not in train]
    return tested


# ----------------------------------------------------------------------------------------------------------------
# prediction and metric
# ----------------------------------------------------------------------------------------------------------------


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def one_time_per_step(cost: np.ndarray) -> np.ndarray:
    """``(T, K)`` 0/1 with exactly one 1 per step: steps in order at strictly increasing seconds, minimising the
    summed ``cost`` of the chosen (second, step) cells (CrossTask's dynamic programme; background costs 0).

    States: ``2K + 1`` per second, even = background before step ``k/2 + 1``, odd ``2s - 1`` = step ``s``. A
    background state may last; a step state lasts one second and is entered from the state before it, or from the
    previous step directly. On equal costs the reference's order decides: stay, then one state back, then two; at
    the end, the final step is kept unless ending in background is strictly cheaper.
    """
    length, k_steps = cost.shape
    if length < k_steps:
        raise ValueError(f"{length} seconds cannot hold {k_steps} steps at one second each")
    n_states = 2 * k_steps + 1
    states = np.arange(n_states)
    is_step = states % 2 == 1
    step_col = np.maximum((states + 1) // 2 - 1, 0)
    inf = np.inf
    best = np.full(n_states, inf)
    best[0] = 0.0
    back = np.full((length + 1, n_states), -1, dtype=np.int64)
    for t in range(1, length + 1):
        stay = np.where(is_step, inf, best)
        one = np.concatenate(([inf], best[:-1]))
        two = np.where(is_step, np.concatenate(([inf, inf], best[:-2])), inf)
        cand = np.stack([stay, one, two])
        choice = cand.argmin(axis=0)  # the first of equal minima: stay, then k - 1, then k - 2
        prev = cand[choice, states]
        valid = np.isfinite(prev)
        best = np.where(valid, prev + np.where(is_step, cost[t - 1, step_col], 0.0), inf)
        back[t] = np.where(valid, states - choice, -1)
    state = n_states - 1 if best[n_states - 1] < best[n_states - 2] else n_states - 2
    out = np.zeros((length, k_steps), dtype=np.uint8)
    for t in range(length, 0, -1):
        if state % 2 == 1:
            out[t - 1, (state + 1) // 2 - 1] = 1
        state = int(back[t, state])
    return out


def task_recalls(truth: dict[str, dict[str, np.ndarray]], predicted: dict[str, dict[str, np.ndarray]]
                 ) -> dict[str, float]:
    """``{task: recall}`` (fractions): recalled (video, step) pairs over pairs with an annotated segment."""
    out = {}
    for task, videos in truth.items():
        total = sum(int((y.sum(axis=0) > 0).sum()) for y in videos.values())
        match = sum(int((y * predicted[task][vid]).sum()) for vid, y in videos.items())
        out[task] = match / total if total else math.nan
    return out


def chance_hits(y_true: np.ndarray) -> float:
    """Expected recalled steps of a second drawn uniformly per step: each annotated step's covered share."""
    return float(y_true.sum(axis=0).sum() / len(y_true)) if len(y_true) else 0.0


# ----------------------------------------------------------------------------------------------------------------
# the evaluator
# ----------------------------------------------------------------------------------------------------------------


@attrs.frozen
class _Video:
    task: str
    vid: str
    features: np.ndarray
    truth: np.ndarray


class CrossTask(Evaluator):
    """Zero-shot step localization on CrossTask: ``recall`` averaged over tasks (percent)."""

    name = "crosstask"
    dataset = "crosstask"

    @attrs.frozen
    class Config:
        release: str = option("crosstask_release", help="the crosstask_release directory, relative to the dataset "
                                                        "dir or absolute")
        features: str = option("features", help="directory of <video_id>.npy features, relative to the dataset dir "
                                                "or absolute")
        split: Literal["reference", "val"] = option(
            "reference", help="'reference': the reference's random split of videos.csv (n_train per primary task "
                              "for training, the rest tested); 'val': the videos of videos_val.csv")
        n_train: int = option(30, ge=0, help="reference split: training videos drawn per primary task")
        seed: int = option(0, ge=0, help="reference split: numpy seed of the draw")
        window: int = option(32, ge=1, help="window length in seconds (= the video tokens encoded)")
        stride: int = option(16, ge=1, help="seconds between window starts")
        max_len: int = option(96, ge=8, help="total token budget; step texts get max_len - window")
        normalise: bool = option(False, help="score with cosines instead of the reference's dot products")

    def __init__(self, config: Config) -> None:
        check_windows(self.name, config.stride, config.window)
        self.config = config

    def evaluate(self, model: Model, ctx: EvalContext) -> dict[str, float]:
        from norton_core import encode_texts

        cfg = self.config
        skips = Skips(self.name)
        release = ctx.root / cfg.release
        primary = read_tasks(release / "tasks_primary.txt")
        steps = {**primary, **read_tasks(release / "tasks_related.txt")}
        feats = FeatureDir(ctx.root, skips, cfg.features, self.name)
        videos = list(self._videos(release, primary, steps, feats, skips))
        skips.report()
        tasks = list(dict.fromkeys(v.task for v in videos))
        texts = [text for task in tasks for text in steps[task]]
        vectors = encode_texts(model, texts, cfg.max_len - cfg.window, batch_size=ctx.batch_size, device=ctx.device,
                               progress=ctx.progress, desc="crosstask steps").astype(np.float64)
        if cfg.normalise:
            vectors = unit_rows(vectors)
        offsets = dict(zip(tasks, np.cumsum([0] + [len(steps[t]) for t in tasks]).tolist(), strict=False))
        per_task = {t: vectors[offsets[t]:offsets[t] + len(steps[t])] for t in tasks}
        truth: dict[str, dict[str, np.ndarray]] = {}
        predicted: dict[str, dict[str, np.ndarray]] = {}
        chance: dict[str, float] = {}
        queue = [(v.vid, v.features, per_task[v.task]) for v in videos]
        for i, scores in scored_videos(model, queue, stride=cfg.stride, size=cfg.window, batch_size=ctx.batch_size,
                                       device=ctx.device, progress=ctx.progress, desc="crosstask video groups",
                                       normalise=cfg.normalise):
            video = videos[i]
            truth.setdefault(video.task, {})[video.vid] = video.truth
            predicted.setdefault(video.task, {})[video.vid] = one_time_per_step(-log_softmax(scores))
            chance[video.task] = chance.get(video.task, 0.0) + chance_hits(video.truth)
        return self._metrics(truth, predicted, chance, skips)

    def _videos(self, release: Path, primary: dict[str, list[str]], steps: dict[str, list[str]], feats: FeatureDir,
                skips: Skips) -> Iterator[_Video]:
        cfg = self.config
        annotations = release / "annotations"

        def usable(rows: list[tuple[str, str]], listed: str) -> list[tuple[str, str]]:
            kept = []
            for task, vid in rows:
                if task not in steps:
                    skips.add("unknown_task", f"{listed}: task {task} (video {vid}) is in neither task file")
                elif not (feats.dir / f"{vid}.npy").is_file():
                    skips.add("missing_features", f"{vid}: no {feats.dir / f'{vid}.npy'}")
                elif not (annotations / f"{task}_{vid}.csv").is_file():
                    skips.add("missing_annotation", f"{vid}: no {annotations / f'{task}_{vid}.csv'}")
                else:
                    kept.append((task, vid))
            return kept

        val = read_video_list(release / "videos_val.csv")
        if cfg.split == "val":
            tested = usable(val, "videos_val.csv")
        else:
            # only the rows the split can test are checked (and counted) for usability: those of primary tasks
            # (and of unknown tasks, to name them); the validation videos are only held out
            rows = [(t, v) for t, v in read_video_list(release / "videos.csv") if t in primary or t not in steps]
            split = reference_split(usable(rows, "videos.csv"), val, set(primary), cfg.n_train, cfg.seed)
            tested = [(t, v) for t, vids in split.items() for v in vids]
        for task, vid in tested:
            features = feats.get(vid)
            if features is None:
                continue
            if len(features) < len(steps[task]):
                skips.add("too_short", f"{vid}: {len(features)} s for {len(steps[task])} steps of task {task}")
                continue
            truth = read_assignment(annotations / f"{task}_{vid}.csv", len(features), len(steps[task]), skips,
                                    f"{task}_{vid}.csv")
            yield _Video(task, vid, features, truth)

    @staticmethod
    def _metrics(truth: dict[str, dict[str, np.ndarray]], predicted: dict[str, dict[str, np.ndarray]],
                 chance: dict[str, float], skips: Skips) -> dict[str, float]:
        recalls = task_recalls(truth, predicted)
        totals = {t: sum(int((y.sum(axis=0) > 0).sum()) for y in vids.values()) for t, vids in truth.items()}
        scored = [t for t in recalls if totals[t]]
        empty = [t for t in recalls if not totals[t]]
        if empty:  # the reference would average a 0 / 0 into NaN
            log.warning("crosstask: %d task(s) have no annotated step in their tested videos and are left out of the "
                        "mean (e.g. %s)", len(empty), ", ".join(empty[:3]))
        mean = 100.0 * float(np.mean([recalls[t] for t in scored])) if scored else math.nan
        mean_chance = 100.0 * float(np.mean([chance[t] / totals[t] for t in scored])) if scored else math.nan
        return {
            "recall": mean,
            "recall_chance": mean_chance,
            "tasks": float(len(scored)),
            "videos": float(sum(len(v) for v in truth.values())),
            "steps": float(sum(totals.values())),
            **{f"recall_{t}": 100.0 * recalls[t] for t in scored},
            **skips.metrics(_SKIPS),
        }
