"""A generated How2-like dataset: learnable, and noisy in exactly the ways Norton addresses.

The world (fixed, independent of the seed so that sets generated with different seeds agree): a dozen cooking
tasks, each an ordered list of steps ``(action, object)`` drawn from shared vocabularies (so tasks overlap). A step's
per-second feature is ``normalise(W_a[action] + W_o[object] + noise)`` with fixed random Gaussian maps; the noise is
temporally correlated (AR(1)) plus a per-video offset; background seconds (intro, talking head, outro) come from a
separate set of directions. Features are float16 with L2-normalised rows, like S3D.

A video (drawn with the seed): a task, an intro, its steps in order (some skipped, some repeated), background gaps,
an outro. Captions are templated English ASR-like sentences ("now we chop the onion") placed near their step, with
controllable noise: ``shift_prob`` of them moved by ``shift_seconds`` (misalignment), ``nonvisual_prob`` of all
captions are chatter with no visual counterpart ("welcome back to my channel"), and ``uncaptioned_prob`` of the steps
get no caption.

The same code generates a *family* of such datasets: every knob of the world and of the noise is an option (number
of tasks and of steps per task, vocabulary sizes, step lengths, feature noise and slow drift, the caption template
set, a pool of chatter lines that repeats across videos, chatter that names an ingredient without showing it,
chatter said over the talking-head intro and outro,
shift, skip and drop rates, and the world's own seed). With every option at its default the output is byte for
byte what it was before the family existed.

``ground_truth.json`` records, per video, its split, task, true step spans and, per caption (in the order of
``captions.json``, which preparation keeps), its kind (``aligned`` / ``shifted`` / ``nonvisual``), the span of the
step it describes and that step's name (``null`` for non-visual captions). Training never reads it; diagnostics do.

Output (the raw How2 layout plus evaluation sets in their public layouts, docs/data_formats.md)::

    out/features/<id>.npy   out/captions.json   out/train.lst   out/val.lst   out/ground_truth.json
    out/eval/youcook2/{annotations.json, features/}   out/eval/htm_align/{htm_align.json, features/}
    out/eval/msrvtt/{MSRVTT_JSFUSION_test.csv, features/}
    out/eval/msrvtt/MSR_MC_test.csv   out/eval/didemo/{test_data.json, features/}
    out/eval/coin/{COIN.json, features/}   out/eval/crosstask/{crosstask_release/, features/}
    out/eval/GENERATED (marks the sets as generated, so that no table puts them beside published numbers)

Evaluation videos are held out (never in the lists) and annotated without noise: YouCook2 segments are the exact
step spans; HTM-Align lists a noisy ASR transcript (half of it non-visual chatter, as in the real set, whose
protocol anchors its windows on those sentences) where each visual sentence carries its step's true span; MSR-VTT
clips show one step each with a one-sentence description. MSR-VTT-QA questions (videos numbered after the
retrieval clips) offer the clip's sentence among four naming other steps; DiDeMo videos (25-30 s) show two steps in
marked moments of one or two 5-second chunks, each described by one sentence. COIN labels are the world's step
names (``chop onion``), every step segment annotated with its label, a fifth of the videos in the ``training``
subset; CrossTask's primary tasks are the first three of the world (``crosstask_videos`` videos each in
``videos.csv``, the last two of them also in ``videos_val.csv``), the next two its related tasks (three videos
each), and each video's annotation lists its steps' true spans.
"""

from __future__ import annotations

import csv
import json
import string
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np

from norton_core.data.synthetic_words import (
    ACTIONS,
    ALT_ASR_TEMPLATES,
    ASR_TEMPLATES,
    CHATTER,
    CHATTER_OPENERS,
    CHATTER_TOPICS,
    DISHES,
    EVAL_TEMPLATES,
    INTRO,
    MAX_SECONDS,
    MAX_VIDEOS,
    MENTION_TEMPLATES,
    MORE_ACTIONS,
    MORE_OBJECTS,
    MSRVTT_TEMPLATES,
    OBJECTS,
    TASKS,
)
from norton_core.data.writer import locked_output
from norton_core.errors import DataError
from norton_core.recipe.options import check_config, option

DIM = 512
WORLD_SEED = 20240116

HTM_ALIGN_NONVISUAL = 0.5
N_BACKGROUND = 4
ID_CHARS = string.ascii_letters + string.digits + "-_"
QA_CHOICES = 5


N_ACTIONS = len(ACTIONS) + len(MORE_ACTIONS)
N_OBJECTS = len(OBJECTS) + len(MORE_OBJECTS)
N_CHATTER = len(CHATTER) + len(CHATTER_OPENERS) * len(CHATTER_TOPICS)


@attrs.frozen
class SyntheticOptions:
    """The generator's options, declared once with their bounds and help: the ``synthetic`` data source's recipe
    options are these (plus how the set is prepared), and :meth:`check` applies the same bounds to a direct call of
    :func:`generate`. Relations between options are checked when an instance is made."""

    videos: int = option(400, ge=1, le=MAX_VIDEOS, help="training videos")
    val_videos: int = option(40, ge=0, le=MAX_VIDEOS, help="validation videos")
    seed: int = option(0, ge=0, help="generator seed")
    min_seconds: int = option(40, ge=1, le=MAX_SECONDS, help="shortest video (about)")
    max_seconds: int = option(120, ge=16, le=MAX_SECONDS, help="longest video (about; at least min_seconds and 16)")
    shift_prob: float = option(0.3, ge=0, le=0.9, help="share of captions moved off their step")
    shift_seconds: float = option(6.0, ge=0, le=100, help="largest caption time shift in seconds")
    nonvisual_prob: float = option(0.15, ge=0, le=0.9, help="share of captions with no visual counterpart")
    uncaptioned_prob: float = option(0.1, ge=0, le=0.9, help="share of steps without a caption")
    feature_noise: float = option(0.6, ge=0, le=100, help="feature noise relative to a step's signal")
    youcook2_videos: int = option(50, ge=0, le=MAX_VIDEOS, help="held-out YouCook2-format evaluation videos")
    htm_align_videos: int = option(20, ge=0, le=MAX_VIDEOS, help="held-out HTM-Align-format evaluation videos")
    msrvtt_clips: int = option(200, ge=0, le=MAX_VIDEOS, help="MSR-VTT-format evaluation clips")
    dirty: float = option(0.0, ge=0, le=0.9, help="share of raw records written malformed on purpose (to exercise "
                                                   "`norton prepare`'s checks)")
    # the family: world
    world_seed: int = option(WORLD_SEED, help="seed of the world: step vocabularies, task recipes, feature maps")
    tasks: int = option(12, ge=1, le=200, help="tasks (recipes); names past 12 are generated")
    actions: int = option(12, ge=2, le=N_ACTIONS, help="action words (verbs) in the step vocabulary")
    objects: int = option(20, ge=2, le=N_OBJECTS, help="object words (ingredients) in the step vocabulary")
    task_objects: int = option(4, ge=1, help="ingredients per task (80% of its steps use them; at most objects)")
    task_steps_min: int = option(6, ge=2, le=40, help="fewest steps in a task's recipe")
    task_steps_max: int = option(9, ge=2, le=40, help="most steps in a task's recipe")
    step_seconds_min: int = option(4, ge=1, le=60, help="shortest step (seconds)")
    step_seconds_max: int = option(12, ge=1, le=120, help="longest step (seconds)")
    feature_drift: float = option(0.0, ge=0, le=100, help="slow random-walk drift of the features over a video, "
                                                           "relative to a step's signal")
    # the family: videos and captions
    skip_step_prob: float = option(0.1, ge=0, le=0.9, help="share of a task's steps a video skips")
    caption_templates: Literal["default", "alternate", "both"] = option("default", help="ASR caption wording")
    chatter_pool: int = option(12, ge=1, le=N_CHATTER, help="distinct non-visual lines (a small pool repeats "
                                                             "across videos)")
    chatter_mentions_prob: float = option(0.0, ge=0, le=0.9, help="share of non-visual lines that name an "
                                                                   "ingredient without showing it")
    chatter_at_edges_prob: float = option(0.0, ge=0, le=0.9, help="share of non-visual lines said over the "
                                                                   "talking-head intro or outro")
    # the later evaluation sets, each from its own random stream (0 writes none)
    msrvtt_qa_questions: int = option(100, ge=0, le=MAX_VIDEOS, help="MSR-VTT-QA-format multiple-choice questions "
                                                                      "(msrvtt/MSR_MC_test.csv)")
    didemo_videos: int = option(30, ge=0, le=MAX_VIDEOS, help="DiDeMo-format evaluation videos (two queries each)")
    coin_videos: int = option(30, ge=0, le=MAX_VIDEOS, help="COIN-format action segmentation videos (a fifth in "
                                                             "'training')")
    crosstask_videos: int = option(35, ge=0, le=MAX_VIDEOS, help="CrossTask-format videos per primary task (3 "
                                                                  "tasks; the reference split trains on 30 and tests "
                                                                  "the rest)")

    def __attrs_post_init__(self) -> None:
        problems = []
        for low, high in (("task_steps_min", "task_steps_max"), ("step_seconds_min", "step_seconds_max"),
                          ("task_objects", "objects"), ("min_seconds", "max_seconds")):
            if getattr(self, low) > getattr(self, high):
                problems.append(f"{low} ({getattr(self, low)}) must not exceed {high} ({getattr(self, high)})")
        if self.task_steps_max > self.actions * self.objects:
            problems.append(f"task_steps_max = {self.task_steps_max} exceeds the distinct (action, object) steps "
                            f"({self.actions} x {self.objects})")
        if self.msrvtt_qa_questions and self.actions * self.objects < QA_CHOICES:
            problems.append(f"msrvtt_qa_questions needs {QA_CHOICES} distinct steps for its candidate sentences; "
                            f"the world has {self.actions} x {self.objects}")
        if problems:
            raise ValueError("; ".join(problems))

    def check(self) -> None:
        """Every option's declared bounds, all problems at once (a recipe's table gets the same check when it is
        parsed); :class:`DataError` when any fails."""
        _, problems = check_config(type(self), attrs.asdict(self))
        if problems:
            raise DataError(problems=[f"{path}: {message}" for path, message in problems])


@attrs.frozen
class SyntheticPaths:
    root: Path
    features: Path
    captions: Path
    lists: dict[str, Path]
    eval_root: Path


class World:
    """The fixed semantics: tasks, step vocabularies and the random maps from content to features."""

    def __init__(self, opts: SyntheticOptions | None = None) -> None:
        opts = opts or SyntheticOptions()
        rng = np.random.default_rng(opts.world_seed)
        scale = 1.0 / np.sqrt(DIM)
        self.actions = (ACTIONS + MORE_ACTIONS)[: opts.actions]
        self.objects = (OBJECTS + MORE_OBJECTS)[: opts.objects]
        self.task_names = _task_names(opts.tasks, self.objects)
        self.w_action = rng.normal(0, scale, (len(self.actions), DIM))
        self.w_object = rng.normal(0, scale, (len(self.objects), DIM))
        self.w_background = rng.normal(0, 1.4 * scale, (N_BACKGROUND, DIM))
        self.tasks: list[list[tuple[int, int]]] = []
        for _ in self.task_names:
            objects = rng.choice(len(self.objects), size=opts.task_objects, replace=False)
            n_steps = int(rng.integers(opts.task_steps_min, opts.task_steps_max + 1))
            steps: list[tuple[int, int]] = []
            while len(steps) < n_steps:
                # mostly the task's own ingredients, sometimes any: tasks share steps through the vocabulary
                o = int(rng.choice(objects)) if rng.random() < 0.8 else int(rng.integers(len(self.objects)))
                step = (int(rng.integers(len(self.actions))), o)
                if step not in steps:
                    steps.append(step)
            self.tasks.append(steps)
        self.asr_templates = TEMPLATE_SETS[opts.caption_templates]
        self.chatter = _chatter_pool(opts.chatter_pool)

    def step_name(self, a: int, o: int) -> str:
        return f"{self.actions[a][0]} {self.objects[o]}"

    def features(self, rng: np.random.Generator, segments: list[tuple[int, int, int, int]], noise: float,
                 drift: float = 0.0) -> np.ndarray:
        """Per-second features of a timeline of ``(start, end, action, object)``; action -1 marks background with
        kind ``object``."""
        length = segments[-1][1]
        signal = np.empty((length, DIM))
        for s, e, a, o in segments:
            signal[s:e] = self.w_background[o] if a < 0 else self.w_action[a] + self.w_object[o]
        scale = noise / np.sqrt(DIM)
        rho = 0.7  # temporally correlated noise: neighbouring seconds look alike, like real video
        innov = rng.normal(0, scale, (length, DIM))
        # AR(1) noise (ar[t] = rho ar[t-1] + sqrt(1 - rho^2) innov[t]) as its impulse response truncated at 24 lags
        # (rho^24 < 2e-4): vector ops instead of a Python loop over seconds
        ar = innov.copy()
        for k in range(1, min(24, length)):
            ar[k:] += rho**k * innov[:-k]
        ar *= np.sqrt(1 - rho * rho)
        feats = signal + ar + rng.normal(0, 0.3 * scale, DIM)  # last term: a per-video offset (camera, lighting)
        if drift > 0:  # a slow random walk (lighting, camera moving), normalised to reach ~drift at the video's end
            walk = np.cumsum(rng.normal(0, drift / np.sqrt(DIM * length), (length, DIM)), axis=0)
            feats += walk
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        return feats.astype(np.float16)


TEMPLATE_SETS = {"default": ASR_TEMPLATES, "alternate": ALT_ASR_TEMPLATES, "both": ASR_TEMPLATES + ALT_ASR_TEMPLATES}


def _task_names(n: int, objects: list[str]) -> list[str]:
    """The 12 named tasks, then ``<object> <dish>`` names (unique) for more."""
    names = TASKS[:n]
    k = 0
    while len(names) < n:
        name = f"{objects[k % len(objects)]} {DISHES[(k // len(objects)) % len(DISHES)]}"
        if k >= len(objects) * len(DISHES):
            name = f"{name} {k // (len(objects) * len(DISHES)) + 1}"
        if name not in names:
            names.append(name)
        k += 1
    return names


def _chatter_pool(n: int) -> list[str]:
    """``n`` non-visual lines: the 12 above, then opener + topic combinations (a small pool repeats a lot)."""
    extra = [f"{o} {t}" for t in CHATTER_TOPICS for o in CHATTER_OPENERS]
    return (CHATTER + extra)[:n]


def _video_id(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        vid = "".join(ID_CHARS[i] for i in rng.integers(0, len(ID_CHARS), 11))
        if vid not in used:
            used.add(vid)
            return vid


def _timeline(world: World, rng: np.random.Generator, task: int, n_steps: int,
              opts: SyntheticOptions) -> list[tuple[int, int, int, int]]:
    """``(start, end, action, object)`` segments in whole seconds; action -1 = background of kind ``object``."""
    steps = world.tasks[task]
    order: list[int] = [i for i in range(len(steps)) if rng.random() > opts.skip_step_prob] or [0]
    while len(order) < n_steps:  # repeated steps: go back to an earlier one ("stir the sauce again")
        order.append(int(rng.integers(len(steps))))
    if rng.random() < 0.3 and len(order) > 2:
        j = int(rng.integers(1, len(order)))
        order.insert(j, order[j - 1])
    order = order[:n_steps]
    t = 0
    segs: list[tuple[int, int, int, int]] = []

    def add(length: int, a: int, o: int) -> None:
        nonlocal t
        segs.append((t, t + length, a, o))
        t += length

    add(int(rng.integers(2, 7)), -1, 0)  # intro: talking head
    for i in order:
        a, o = steps[i]
        add(int(rng.integers(opts.step_seconds_min, opts.step_seconds_max + 1)), a, o)
        if rng.random() < 0.3:
            add(int(rng.integers(1, 5)), -1, int(rng.integers(1, N_BACKGROUND)))
    add(int(rng.integers(2, 6)), -1, N_BACKGROUND - 1)  # outro
    return segs


def _asr_captions(
    world: World, rng: np.random.Generator, segs: list[tuple[int, int, int, int]], task: int, opts: SyntheticOptions
) -> list[dict[str, Any]]:
    """Noisy ASR-like captions of a timeline, each with its ground truth (``kind``, true span)."""
    length = segs[-1][1]
    caps: list[dict[str, Any]] = []
    for s, e, a, o in segs:
        if a < 0 or rng.random() < opts.uncaptioned_prob:
            continue
        templates = world.asr_templates
        text = templates[int(rng.integers(len(templates)))].format(a=world.actions[a][0], o=world.objects[o])
        cs = s + float(rng.uniform(0, 1.5))
        ce = min(cs + float(rng.uniform(2, 4)), float(e))
        kind = "aligned"
        if rng.random() < opts.shift_prob and opts.shift_seconds > 0:
            shift = float(rng.uniform(0.5, 1.0)) * opts.shift_seconds * (1 if rng.random() < 0.5 else -1)
            cs, ce = cs + shift, ce + shift
            if cs < 0:
                cs, ce = 0.0, ce - cs
            if ce > length:
                cs, ce = cs - (ce - length), float(length)
            kind = "shifted"
        caps.append({"start": round(cs, 2), "end": round(ce, 2), "text": text, "kind": kind, "span": [s, e],
                     "step": world.step_name(a, o)})
    # nonvisual / all captions = nonvisual_prob on average
    n_chatter = int(rng.binomial(max(len(caps), 1), min(1.0, opts.nonvisual_prob / (1 - opts.nonvisual_prob))))
    if n_chatter and rng.random() < 0.5:  # one of them may be the intro, also without a visual counterpart
        caps.append({"start": 0.2, "end": 3.0, "text": INTRO.format(task=world.task_names[task]), "kind": "nonvisual"})
        n_chatter -= 1
    for _ in range(n_chatter):
        cs = float(rng.uniform(0, max(0.5, length - 3)))
        text = world.chatter[int(rng.integers(len(world.chatter)))]
        if opts.chatter_at_edges_prob > 0 and rng.random() < opts.chatter_at_edges_prob:
            # greetings and sign-offs: said over the talking-head intro or outro, as on real channels
            s, e = segs[0][:2] if rng.random() < 0.5 else segs[-1][:2]
            cs = float(rng.uniform(s, max(s, e - 2)))
        if opts.chatter_mentions_prob > 0 and rng.random() < opts.chatter_mentions_prob:
            # names one of the task's ingredients, but nothing on screen shows it then
            steps = world.tasks[task]
            obj = world.objects[steps[int(rng.integers(len(steps)))][1]]
            text = MENTION_TEMPLATES[int(rng.integers(len(MENTION_TEMPLATES)))].format(o=obj)
        caps.append({"start": round(cs, 2), "end": round(min(cs + rng.uniform(2, 4), length), 2), "text": text,
                     "kind": "nonvisual"})
    if not caps:  # every video needs a caption; a lone visual one for the first step
        s, e, a, o = next(seg for seg in segs if seg[2] >= 0)
        caps.append({"start": float(s), "end": float(min(s + 3, e)), "text": world.asr_templates[0].format(
            a=world.actions[a][0], o=world.objects[o]), "kind": "aligned", "span": [s, e], "step": world.step_name(a, o)})
    caps.sort(key=lambda c: (c["start"], c["end"]))
    return caps


def _n_steps(rng: np.random.Generator, opts: SyntheticOptions) -> int:
    target = rng.integers(opts.min_seconds, opts.max_seconds + 1)
    # a step with its gaps averages (shortest + longest) / 2 + ~1 s (9 s by default), intro + outro ~7 s
    per_step = (opts.step_seconds_min + opts.step_seconds_max) / 2 + 1.0
    return max(2, int(round((target - 7) / per_step)))


def _save(path: Path, feats: np.ndarray) -> None:
    np.save(path, feats, allow_pickle=False)


def generate(out_dir: str | Path, videos: int = 400, seed: int = 0, **options: Any) -> SyntheticPaths:
    """Write the raw How2 layout and the evaluation sets to ``out_dir``; deterministic given the arguments.

    ``options`` are the other fields of :class:`SyntheticOptions`.
    """
    try:
        opts = SyntheticOptions(videos=videos, seed=seed, **options)
    except ValueError as exc:
        raise DataError(f"synthetic generator: {exc}") from None
    opts.check()
    with locked_output(Path(out_dir)):  # one generator per --out: a second one is refused, never interleaved
        return _generate(Path(out_dir), opts)


def _generate(out: Path, opts: SyntheticOptions) -> SyntheticPaths:
    feat_dir = out / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    world = World(opts)
    rng = np.random.default_rng([opts.seed, 1])
    used: set[str] = set()
    captions: dict[str, Any] = {}
    truth: dict[str, Any] = {}
    ids: list[str] = []
    for n in range(opts.videos + opts.val_videos):
        vid = _video_id(rng, used)
        task = int(rng.integers(len(world.tasks)))
        segs = _timeline(world, rng, task, _n_steps(rng, opts), opts)
        feats = world.features(rng, segs, opts.feature_noise, opts.feature_drift)
        caps = _asr_captions(world, rng, segs, task, opts)
        _save(feat_dir / f"{vid}.npy", feats)
        captions[vid] = {k: [c[k] for c in caps] for k in ("start", "end", "text")}
        truth[vid] = {
            "split": "train" if n < opts.videos else "val",
            "task": world.task_names[task],
            "steps": [[s, e, world.actions[a][0], world.objects[o]] for s, e, a, o in segs if a >= 0],
            "caption_kinds": [c["kind"] for c in caps],
            "caption_spans": [c.get("span") for c in caps],
            "caption_steps": [c.get("step") for c in caps],
        }
        ids.append(vid)
    dirty = _inject_dirty(rng, ids[: opts.videos], feat_dir, captions, opts.dirty)
    lists = {"train": out / "train.lst", "val": out / "val.lst"}
    lists["train"].write_text("".join(f"{v}\n" for v in ids[: opts.videos]))
    lists["val"].write_text("".join(f"{v}\n" for v in ids[opts.videos :]))
    (out / "captions.json").write_text(json.dumps(captions))
    (out / "ground_truth.json").write_text(json.dumps({"options": attrs.asdict(opts), "videos": truth}))
    if dirty:
        (out / "dirty.json").write_text(json.dumps(dirty, indent=1))
    eval_root = out / "eval"
    _youcook2(world, np.random.default_rng([opts.seed, 2]), eval_root / "youcook2", used, opts)
    _htm_align(world, np.random.default_rng([opts.seed, 3]), eval_root / "htm_align", used, opts)
    _msrvtt(world, np.random.default_rng([opts.seed, 4]), eval_root / "msrvtt", opts)
    # MSR-VTT-QA multiple choice and DiDeMo moment retrieval sets
    _msrvtt_qa(world, np.random.default_rng([opts.seed, 24, 1]), eval_root / "msrvtt", opts)
    _didemo(world, np.random.default_rng([opts.seed, 24, 2]), eval_root / "didemo", opts)
    # COIN action segmentation and CrossTask step localization sets
    _coin(world, np.random.default_rng([opts.seed, 20]), eval_root / "coin", used, opts)
    _crosstask(world, np.random.default_rng([opts.seed, 21]), eval_root / "crosstask", used, opts)
    # marks the sets as generated: tables leave out the published numbers, which were measured on the released data
    eval_root.mkdir(parents=True, exist_ok=True)
    (eval_root / "GENERATED").write_text("evaluation sets written by norton's synthetic generator, not the released "
                                         "datasets\n")
    return SyntheticPaths(out, feat_dir, out / "captions.json", lists, eval_root)


def _inject_dirty(
    rng: np.random.Generator, ids: list[str], feat_dir: Path, captions: dict[str, Any], rate: float
) -> dict[str, str]:
    """Corrupt ``rate`` of the training videos the ways real How2 data is dirty (for preparation tests)."""
    kinds = ["missing_features", "nonfinite_features", "wrong_shape", "missing_captions", "end_before_start",
             "empty_text", "caption_after_end"]
    dirty: dict[str, str] = {}
    for vid in ids:
        if rng.random() >= rate:
            continue
        kind = kinds[int(rng.integers(len(kinds)))]
        path = feat_dir / f"{vid}.npy"
        cap = captions[vid]
        if kind == "missing_features":
            path.unlink()
        elif kind == "nonfinite_features":
            feats = np.load(path)
            feats[int(rng.integers(len(feats)))] = np.nan
            _save(path, feats)
        elif kind == "wrong_shape":
            _save(path, np.load(path)[:, :256])
        elif kind == "missing_captions":
            del captions[vid]
        elif kind == "end_before_start":
            cap["end"][0] = cap["start"][0] - 1.0
        elif kind == "empty_text":
            cap["text"][0] = "   "
        else:
            length = np.load(path, mmap_mode="r").shape[0]
            cap["start"].append(length + 5.0)
            cap["end"].append(length + 8.0)
            cap["text"].append("see you after the break")
        dirty[vid] = kind
    return dirty


def _clean_video(world: World, rng: np.random.Generator, n_steps: int,
                 opts: SyntheticOptions) -> tuple[int, list, np.ndarray]:
    task = int(rng.integers(len(world.tasks)))
    segs = _timeline(world, rng, task, n_steps, opts)
    return task, segs, world.features(rng, segs, opts.feature_noise, opts.feature_drift)


def _youcook2(world: World, rng: np.random.Generator, root: Path, used: set[str], opts: SyntheticOptions) -> None:
    (root / "features").mkdir(parents=True, exist_ok=True)
    database: dict[str, Any] = {}
    for _ in range(opts.youcook2_videos):
        vid = _video_id(rng, used)
        _, segs, feats = _clean_video(world, rng, int(rng.integers(4, 11)), opts)
        steps = [seg for seg in segs if seg[2] >= 0]
        annotations = []
        for i, (s, e, a, o) in enumerate(steps):
            template = EVAL_TEMPLATES[int(rng.integers(len(EVAL_TEMPLATES)))]
            sentence = template.format(A=world.actions[a][0].capitalize(), o=world.objects[o])
            annotations.append({"id": i, "segment": [s, e], "sentence": sentence})
        database[vid] = {"duration": float(len(feats)), "subset": "validation", "annotations": annotations}
        _save(root / "features" / f"{vid}.npy", feats)
    (root / "annotations.json").write_text(json.dumps({"database": database}))


def _htm_align(world: World, rng: np.random.Generator, root: Path, used: set[str], opts: SyntheticOptions) -> None:
    (root / "features").mkdir(parents=True, exist_ok=True)
    table: dict[str, Any] = {}
    for _ in range(opts.htm_align_videos):
        vid = _video_id(rng, used)
        n_steps = _n_steps(rng, opts)
        task, segs, feats = _clean_video(world, rng, n_steps, opts)
        rows = []
        # like the real set, about half the transcript is not visually alignable; the protocol anchors its windows
        # on those sentences, so they must be spread over the whole video
        asr = attrs.evolve(opts, nonvisual_prob=max(opts.nonvisual_prob, HTM_ALIGN_NONVISUAL))
        for c in _asr_captions(world, rng, segs, task, asr):
            if c["kind"] == "nonvisual":
                rows.append([0, c["start"], c["end"], c["text"]])
            else:  # the ground truth is the span of the step the sentence describes, however the ASR was timed
                rows.append([1, float(c["span"][0]), float(c["span"][1]), c["text"]])
        table[vid] = rows
        _save(root / "features" / f"{vid}.npy", feats)
    (root / "htm_align.json").write_text(json.dumps(table))


def _msrvtt(world: World, rng: np.random.Generator, root: Path, opts: SyntheticOptions) -> None:
    (root / "features").mkdir(parents=True, exist_ok=True)
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "vid_key", "video_id", "sentence"])
        for i in range(opts.msrvtt_clips):
            task = world.tasks[int(rng.integers(len(world.tasks)))]
            a, o = task[int(rng.integers(len(task)))]
            before, during, after = int(rng.integers(0, 3)), int(rng.integers(6, 16)), int(rng.integers(0, 3))
            segs = [(0, before, -1, 1), (before, before + during, a, o), (before + during, before + during + after, -1, 2)]
            feats = world.features(rng, [seg for seg in segs if seg[1] > seg[0]], opts.feature_noise,
                                   opts.feature_drift)
            sentence = MSRVTT_TEMPLATES[int(rng.integers(len(MSRVTT_TEMPLATES)))].format(
                a3=world.actions[a][1], o=world.objects[o])
            number = 7000 + i
            writer.writerow([f"ret{i}", f"msr{number}", f"video{number}", sentence])
            _save(root / "features" / f"video{number}.npy", feats)


# ----------------------------------------------------------------------------------------------------------------
# MSR-VTT-QA multiple choice and DiDeMo moment retrieval sets
# ----------------------------------------------------------------------------------------------------------------


def _step_sentence(world: World, rng: np.random.Generator, a: int, o: int) -> str:
    return MSRVTT_TEMPLATES[int(rng.integers(len(MSRVTT_TEMPLATES)))].format(a3=world.actions[a][1], o=world.objects[o])


def _msrvtt_qa(world: World, rng: np.random.Generator, root: Path, opts: SyntheticOptions) -> None:
    """``MSR_MC_test.csv`` (tab-separated, 0-based ``answer``) beside the retrieval set: a clip of one step per
    question (videos numbered after the retrieval clips) and 5 sentences, the other 4 naming other steps."""
    if not opts.msrvtt_qa_questions:
        return
    (root / "features").mkdir(parents=True, exist_ok=True)
    rows = [["key", "vid_key", *(f"a{k}" for k in range(1, QA_CHOICES + 1)), "answer"]]
    for i in range(opts.msrvtt_qa_questions):
        task = world.tasks[int(rng.integers(len(world.tasks)))]
        a, o = task[int(rng.integers(len(task)))]
        before, during, after = int(rng.integers(0, 3)), int(rng.integers(6, 16)), int(rng.integers(0, 3))
        segs = [(0, before, -1, 1), (before, before + during, a, o), (before + during, before + during + after, -1, 2)]
        feats = world.features(rng, [seg for seg in segs if seg[1] > seg[0]], opts.feature_noise, opts.feature_drift)
        steps = {(a, o)}
        while len(steps) < QA_CHOICES:  # distractors: other (action, object) steps, often sharing a word
            steps.add((int(rng.integers(len(world.actions))), int(rng.integers(len(world.objects)))))
        others = [_step_sentence(world, rng, *step) for step in sorted(steps - {(a, o)})]
        answer = int(rng.integers(QA_CHOICES))
        candidates = [*others[:answer], _step_sentence(world, rng, a, o), *others[answer:]]
        number = 7000 + opts.msrvtt_clips + i
        rows.append([f"mc{i}", f"msr{number}", *candidates, str(answer)])
        _save(root / "features" / f"video{number}.npy", feats)
    with open(root / "MSR_MC_test.csv", "w", newline="") as fh:
        csv.writer(fh, delimiter="\t").writerows(rows)


DIDEMO_CHUNK = 5


def _didemo(world: World, rng: np.random.Generator, root: Path, opts: SyntheticOptions) -> None:
    """DiDeMo's ``test_data.json``: 25-30 s videos with two marked moments of one or two 5-second chunks, each
    showing one step; four annotators per sentence, the fourth sometimes marking one chunk more."""
    if not opts.didemo_videos:
        return
    (root / "features").mkdir(parents=True, exist_ok=True)
    queries: list[dict[str, Any]] = []
    for v in range(opts.didemo_videos):
        length = int(rng.integers(25, 31))
        chunks = -(-length // DIDEMO_CHUNK)
        first = int(rng.integers(0, chunks - 1))
        moments = [(first, first + int(rng.integers(0, 2)) if first + 1 < chunks - 1 else first)]
        rest = [c for c in range(chunks) if c < moments[0][0] - 1 or c > moments[0][1] + 1]
        start = rest[int(rng.integers(len(rest)))] if rest else chunks - 1
        moments.append((start, start))
        marks: list[tuple[int, int, int, int]] = []
        for s, e in sorted(moments):
            task = world.tasks[int(rng.integers(len(world.tasks)))]
            a, o = task[int(rng.integers(len(task)))]
            marks.append((s, e, a, o))
        segs, t = [], 0
        for s, e, a, o in marks:
            lo, hi = s * DIDEMO_CHUNK, min((e + 1) * DIDEMO_CHUNK, length)
            if lo > t:
                segs.append((t, lo, -1, int(rng.integers(N_BACKGROUND))))
            segs.append((lo, hi, a, o))
            t = hi
        if t < length:
            segs.append((t, length, -1, int(rng.integers(N_BACKGROUND))))
        feats = world.features(rng, segs, opts.feature_noise, opts.feature_drift)
        name = f"{int(rng.integers(10**7, 10**8))}@N{v % 100:02d}_{v:010d}.mov"
        for s, e, a, o in marks:
            times = [[s, e]] * 3
            wider = (s, e + 1) if e + 1 < chunks else (max(s - 1, 0), e)
            times.append(list(wider) if rng.random() < 0.4 else [s, e])
            template = EVAL_TEMPLATES[int(rng.integers(len(EVAL_TEMPLATES)))]
            queries.append({"annotation_id": len(queries), "video": name, "times": times, "num_segments": chunks,
                            "description": template.format(A=world.actions[a][0].capitalize(), o=world.objects[o])})
        _save(root / "features" / f"{name}.npy", feats)
    (root / "test_data.json").write_text(json.dumps(queries))


# ----------------------------------------------------------------------------------------------------------------
# COIN action segmentation and CrossTask step localization sets
# ----------------------------------------------------------------------------------------------------------------

CROSSTASK_PRIMARY = 3
CROSSTASK_RELATED = 2
CROSSTASK_VAL = 2  # of each primary task's videos, the last ones, also listed in videos_val.csv
CROSSTASK_RELATED_VIDEOS = 3


def _coin(world: World, rng: np.random.Generator, root: Path, used: set[str], opts: SyntheticOptions) -> None:
    """COIN.json as released. Step ids number the step names in order of first use, the testing videos' first, so
    that the testing subset (which defines the label set) uses every id up to its largest; nothing is written for 0
    videos, so that the set reads as absent rather than empty."""
    if opts.coin_videos == 0:
        return
    (root / "features").mkdir(parents=True, exist_ok=True)
    videos = []
    for n in range(opts.coin_videos):
        vid = _video_id(rng, used)
        task, segs, feats = _clean_video(world, rng, int(rng.integers(3, 9)), opts)
        videos.append((vid, task, "training" if n % 5 == 4 else "testing", segs, len(feats)))
        _save(root / "features" / f"{vid}.npy", feats)
    ordered = sorted(videos, key=lambda v: v[2] != "testing")  # stable: testing videos first, in order
    names = list(dict.fromkeys(world.step_name(a, o) for v in ordered for _, _, a, o in v[3] if a >= 0))
    ids = {name: k for k, name in enumerate(names, start=1)}
    database: dict[str, Any] = {}
    for vid, task, subset, segs, length in videos:
        annotation = [{"id": str(ids[world.step_name(a, o)]), "segment": [float(s), float(e)],
                       "label": world.step_name(a, o)} for s, e, a, o in segs if a >= 0]
        database[vid] = {"recipe_type": task, "class": world.task_names[task], "subset": subset, "start": 0.0,
                         "end": float(length), "duration": float(length),
                         "video_url": f"https://www.youtube.com/embed/{vid}", "annotation": annotation}
    (root / "COIN.json").write_text(json.dumps({"version": "synthetic", "database": database}))


def _crosstask(world: World, rng: np.random.Generator, root: Path, used: set[str], opts: SyntheticOptions) -> None:
    """crosstask_release/ as released: task files, video lists and one annotation CSV per video (nothing for 0
    videos)."""
    if opts.crosstask_videos == 0:
        return
    release = root / "crosstask_release"
    (release / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "features").mkdir(parents=True, exist_ok=True)
    task_ids = {task: str(10000 + task) for task in range(min(len(world.tasks), CROSSTASK_PRIMARY + CROSSTASK_RELATED))}
    primary = [t for t in task_ids if t < CROSSTASK_PRIMARY]
    for name, tasks in (("tasks_primary.txt", primary), ("tasks_related.txt", [t for t in task_ids if t not in primary])):
        blocks = [f"{task_ids[t]}\n{world.task_names[t].capitalize()}\nhttps://www.wikihow.com/{task_ids[t]}\n"
                  f"{len(world.tasks[t])}\n{','.join(world.step_name(a, o) for a, o in world.tasks[t])}\n\n"
                  for t in tasks]
        (release / name).write_text("".join(blocks))
    rows, val = [], []
    for task in task_ids:
        count = max(opts.crosstask_videos, CROSSTASK_VAL) if task in primary else CROSSTASK_RELATED_VIDEOS
        steps = world.tasks[task]
        for n in range(count):
            vid = _video_id(rng, used)
            segs = _timeline(world, rng, task, int(rng.integers(3, len(steps) + 2)), opts)
            lines = [f"{steps.index((a, o)) + 1},{s:.2f},{e:.2f}" for s, e, a, o in segs if a >= 0]
            _save(root / "features" / f"{vid}.npy", world.features(rng, segs, opts.feature_noise, opts.feature_drift))
            (release / "annotations" / f"{task_ids[task]}_{vid}.csv").write_text("\n".join(lines) + "\n")
            rows.append(f"{task_ids[task]},{vid},https://www.youtube.com/watch?v={vid}\n")
            if task in primary and n >= count - CROSSTASK_VAL:
                val.append(rows[-1])
    (release / "videos.csv").write_text("".join(rows))
    (release / "videos_val.csv").write_text("".join(val))
