"""Ground-truth diagnostics: does each Norton mechanism do what the paper says it does?

The generated dataset knows which captions are visual and where their steps truly are (``ground_truth.json`` of the
``synthetic`` source). On the held-out videos of that set (the ``val`` store: generated like the training videos,
never trained on), with the model as it is at the end of an epoch, these measure:

``bucket_precision`` / ``bucket_recall``
    the alignable prompt bucket as a detector of non-visual captions: a caption is *flagged* when more than half of
    its transport mass in its own sequence's plan goes to the bucket. Precision is undefined (``None``) when
    nothing is flagged, recall when the videos have no non-visual caption; ``bucket_flag_rate`` (share of all
    captions flagged) and ``bucket_visual_flag_rate`` (share of visual captions flagged) are always defined.
``plan_on_step`` / ``plan_on_step_chance``
    for each visual caption, the share of its clip mass (bucket excluded) on the clips of its sequence that show its
    true step (at least half of the clip's seconds inside the step's true span), against the share a uniform plan
    would put there.
``faulty_on_duplicates`` / ``faulty_on_duplicates_chance``
    of the faulty-negative plan's mass on pairs from different videos, the share on true semantic duplicates (the
    caption's step is the step the clip shows), against the share of such pairs among all cross-video pairs.

Each held-out clip's text is exactly one caption (the training aligner with a one-token budget), so that every
text has one ground-truth label; clips are drawn with a fixed seed, so every epoch sees the same clips. The plans
come from the loss's documented ``plans(outputs)`` method (the ``norton`` loss has one; for another loss, such as
``videoclip-nce``, a default ``norton`` loss computes what Norton's plans would be on that model). Nothing here runs
inside a training step: :class:`DiagnosticsHook` computes them at run start and at each epoch end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from norton_core import hookimpl
from norton_core.errors import DataError

#: a caption is flagged as non-visual when more than this share of its mass goes to the bucket
FLAG_SHARE = 0.5


class GroundTruth:
    """Per video id: caption kinds, true spans and step names, and the step timeline (from ``ground_truth.json``)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise DataError(f"{path}: no ground truth (the diagnostics need the 'synthetic' data source)")
        videos = json.loads(path.read_text())["videos"]
        first: dict[str, Any] = next(iter(videos.values()), {})
        if "caption_spans" not in first:
            raise DataError(f"{path}: ground truth without caption_spans (made by an older generator)")
        self.videos: dict[str, Any] = videos

    def clip_step(self, video_id: str, start: int, end: int) -> tuple[str | None, tuple[int, int] | None]:
        """The step shown by seconds ``[start, end)``: the step covering most of them if that is at least half."""
        best, best_span, best_len = None, None, 0
        for s, e, action, obj in self.videos[video_id]["steps"]:
            overlap = min(e, end) - max(s, start)
            if overlap > best_len:
                best, best_span, best_len = f"{action} {obj}", (s, e), overlap
        if best_len * 2 < max(end - start, 1):
            return None, None
        return best, best_span


@attrs.define
class _Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    captions: int = 0
    visual: int = 0
    visual_flagged: int = 0
    on_step: list[float] = attrs.Factory(list)
    on_step_chance: list[float] = attrs.Factory(list)
    dup_mass: float = 0.0
    cross_mass: float = 0.0
    dup_pairs: int = 0
    cross_pairs: int = 0

    def result(self) -> dict[str, float | None]:
        flagged = self.tp + self.fp
        positives = self.tp + self.fn
        return {
            "bucket_precision": self.tp / flagged if flagged else None,
            "bucket_recall": self.tp / positives if positives else None,
            "bucket_flag_rate": flagged / self.captions if self.captions else None,
            "bucket_visual_flag_rate": self.visual_flagged / self.visual if self.visual else None,
            "plan_on_step": float(np.mean(self.on_step)) if self.on_step else None,
            "plan_on_step_chance": float(np.mean(self.on_step_chance)) if self.on_step_chance else None,
            "faulty_on_duplicates": self.dup_mass / self.cross_mass if self.cross_mass > 0 else None,
            "faulty_on_duplicates_chance": self.dup_pairs / self.cross_pairs if self.cross_pairs else None,
            "nonvisual_captions": positives,
            "visual_captions": self.visual,
        }


def tally_batch(tally: _Tally, batch: dict[str, Any], plans: dict[str, Any], truth: GroundTruth, k: int) -> None:
    """Add one batch's plans (numpy arrays) to ``tally``; ``k`` is the sequence length.

    :param batch: per clip, in batch order: ``video`` (its video id), ``text_start`` (its caption's index),
        ``video_start`` and ``video_end`` (its seconds).
    """
    seq = np.asarray(plans["sequence_plan"], dtype=np.float64)  # (G, K, K + 1)
    clip_plan = np.asarray(plans["clip_plan"], dtype=np.float64)  # (B, B)
    rows = []
    for i in range(len(batch["text_start"])):
        vid = batch["video"][i]
        gt = truth.videos[vid]
        cap = int(batch["text_start"][i])
        if cap >= len(gt["caption_kinds"]):
            raise DataError(f"video {vid!r}: caption {cap} beyond the ground truth's {len(gt['caption_kinds'])}")
        vs, ve = int(batch["video_start"][i]), int(batch["video_end"][i])
        clip_step, _ = truth.clip_step(vid, vs, ve)
        rows.append({"video": vid, "kind": gt["caption_kinds"][cap], "span": gt["caption_spans"][cap],
                     "step": gt["caption_steps"][cap], "clip": (vs, ve), "clip_step": clip_step})
    for g in range(seq.shape[0]):
        for r in range(k):
            row = rows[g * k + r]
            mass = seq[g, r]
            total = mass.sum()
            flagged = total > 0 and mass[k] / total > FLAG_SHARE
            nonvisual = row["kind"] == "nonvisual"
            tally.captions += 1
            tally.tp += int(flagged and nonvisual)
            tally.fp += int(flagged and not nonvisual)
            tally.fn += int(nonvisual and not flagged)
            if nonvisual:
                continue
            tally.visual += 1
            tally.visual_flagged += int(flagged)
            s, e = row["span"]
            shows = np.array([2 * (min(e, ve) - max(s, vs)) >= max(ve - vs, 1)
                              for vs, ve in (rows[g * k + j]["clip"] for j in range(k))])
            clip_mass = mass[:k].sum()
            if shows.any() and clip_mass > 0:
                tally.on_step.append(float(mass[:k][shows].sum() / clip_mass))
                tally.on_step_chance.append(float(shows.mean()))
    videos = np.array([row["video"] for row in rows])
    cross = videos[:, None] != videos[None, :]
    clip_steps = np.array([row["clip_step"] or "" for row in rows])
    cap_steps = np.array([row["step"] or "-" for row in rows])  # "-" never equals a clip's step
    dup = cross & (clip_steps[:, None] == cap_steps[None, :])
    tally.cross_mass += float(clip_plan[cross].sum())
    tally.dup_mass += float(clip_plan[dup].sum())
    tally.cross_pairs += int(cross.sum())
    tally.dup_pairs += int(dup.sum())


class Diagnostics:
    """Everything the diagnostics need, built once per run: the held-out store, a one-caption aligner, the truth."""

    def __init__(self, recipe: Any, model: Any, *, max_videos: int = 64, plugins: Any = None) -> None:
        import norton_core
        from norton_core.engine import loader as dataio
        from norton_core.engine.setup import cache_dir_of

        source = recipe.build("data", cache_dir=cache_dir_of(recipe.run))
        paths = source.prepare(progress=False)
        if paths.val is None:
            raise DataError("the diagnostics need held-out videos: set [data] val_videos (e.g. 16)")
        if not hasattr(source, "ground_truth_path"):
            raise DataError(f"data source {recipe.components['data'].name!r} has no ground truth; the diagnostics "
                            "need the 'synthetic' source")
        self.truth = GroundTruth(source.ground_truth_path())
        self.store = dataio.open_store(paths.val)
        spec = recipe.components["aligner"]
        options = {**attrs.asdict(spec.config), "sampled_min_len": 1, "sampled_max_len": 1}
        self.aligner = norton_core.build("aligner", spec.name, options, plugins=plugins,
                                         special_tokens=model.special_tokens())
        loss = recipe.build("loss")
        if not hasattr(loss, "plans"):
            loss = norton_core.build("loss", "norton", {}, plugins=plugins)
        self.loss = loss
        self.k = int(loss.config.sequence_length)
        per_batch = int(recipe.train.videos_per_batch)
        n = min(len(self.store), max_videos) // per_batch * per_batch
        if n == 0:
            raise DataError(f"the diagnostics need at least train.videos_per_batch = {per_batch} held-out videos, "
                            f"the val store has {len(self.store)}")
        self.batches = np.arange(n).reshape(-1, per_batch)
        self.seed = int(recipe.run.seed)
        self._dataio = dataio

    def __call__(self, model: Any, device: str) -> dict[str, float | None]:
        import torch

        dataset = self._dataio.BatchDataset(self.store, self.aligner, self.batches.tolist(), self.seed, 0,
                                            "diagnostics")
        tally = _Tally()
        was_training = model.training
        model.eval()
        try:
            for i in range(len(dataset)):
                batch = dataset[i]
                with torch.no_grad():
                    outputs = model(*(batch[key].to(device) for key in ("caps", "cmasks", "vfeats", "vmasks")))
                    plans = self.loss.plans(outputs)
                ids = self.store.video_ids
                clips = {"video": [ids[int(batch["store_index"][j])] for j in batch["video_index"]],
                         **{key: batch[key].numpy() for key in ("text_start", "video_start", "video_end")}}
                tally_batch(tally, clips, {k: v.float().cpu().numpy() for k, v in plans.items()}, self.truth, self.k)
        finally:
            model.train(was_training)
        return tally.result()


class DiagnosticsHook:
    """A lifecycle plugin (register it for one run) that writes the diagnostics of the run start and of every epoch
    end to ``<run_dir>/diagnostics.jsonl`` (JSON lines: ``{"epoch": e, "step": s, <metric>: value}``; epoch 0 is
    the model the run starts from)."""

    FILE = "diagnostics.jsonl"

    def __init__(self, recipe: Any, plugins: Any = None) -> None:
        self.recipe, self.plugins = recipe, plugins
        self._diag: Diagnostics | None = None

    def _record(self, run: Any, epoch: int, mode: str) -> None:
        if run.rank != 0:
            return
        if self._diag is None:
            self._diag = Diagnostics(self.recipe, run.model, plugins=self.plugins)
        values = self._diag(run.model, run.device)
        with open(Path(run.run_dir) / self.FILE, mode) as fh:
            fh.write(json.dumps({"epoch": epoch, "step": run.step, **values}) + "\n")

    @hookimpl
    def norton_run_start(self, run: Any) -> None:
        if run.step == 0:  # a fresh start: earlier records (of an overwritten run) go
            self._record(run, 0, "w")

    @hookimpl
    def norton_epoch_end(self, run: Any, epoch: int, metrics: dict[str, float]) -> None:
        self._record(run, epoch, "a")


def read_diagnostics(path: Path) -> dict[int, dict[str, Any]]:
    """``{epoch: record}`` of a diagnostics file (a resumed run's later record of an epoch wins)."""
    out: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                out[int(record["epoch"])] = record
    return out
