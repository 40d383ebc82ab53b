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

Output (the raw How2 layout plus evaluation sets in their public layouts, docs/data_formats.md)::

    out/features/<id>.npy   out/captions.json   out/train.lst   out/val.lst   out/ground_truth.json
    out/eval/youcook2/{annotations.json, features/}   out/eval/htm_align/{htm_align.json, features/}
    out/eval/msrvtt/{MSRVTT_JSFUSION_test.csv, features/}

Evaluation videos are held out (never in the lists) and annotated without noise: YouCook2 segments are the exact
step spans; HTM-Align lists a noisy ASR transcript (half of it non-visual chatter, as in the real set, whose
protocol anchors its windows on those sentences) where each visual sentence carries its step's true span; MSR-VTT
clips show one step each with a one-sentence description.
"""

from __future__ import annotations

import csv
import json
import string
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ..errors import DataError

DIM = 512
WORLD_SEED = 20240116

#: (base form, third person) of each action
ACTIONS = [
    ("chop", "chops"), ("slice", "slices"), ("stir", "stirs"), ("pour", "pours"), ("mix", "mixes"),
    ("fry", "fries"), ("boil", "boils"), ("peel", "peels"), ("wash", "washes"), ("bake", "bakes"),
    ("grate", "grates"), ("season", "seasons"),
]
OBJECTS = [
    "onion", "tomato", "carrot", "potato", "garlic", "chicken", "beef", "rice", "noodles", "sauce",
    "eggs", "butter", "cheese", "flour", "dough", "lettuce", "pepper", "mushrooms", "bread", "shrimp",
]
TASKS = [
    "tomato soup", "fried rice", "beef stew", "garlic bread", "chicken curry", "vegetable salad",
    "mushroom omelette", "shrimp noodles", "mashed potatoes", "homemade pizza", "cheese pancakes", "pepper stir fry",
]
ASR_TEMPLATES = [
    "now we {a} the {o}", "next, {a} the {o}", "then you want to {a} the {o}", "let's {a} the {o}",
    "go ahead and {a} the {o}", "okay so now i {a} the {o}", "{a} the {o} like this", "after that we {a} the {o}",
]
EVAL_TEMPLATES = ["{A} the {o}.", "{A} the {o} carefully.", "{A} the {o} in a bowl."]
MSRVTT_TEMPLATES = ["a person {a3} the {o}", "someone {a3} the {o} in a kitchen", "a cook {a3} the {o}"]
CHATTER = [
    "hey guys welcome back to my channel", "don't forget to like and subscribe", "thanks for watching see you next time",
    "this recipe is from my grandmother", "let me know in the comments what you think", "i hope you enjoy this video",
    "so yeah that's pretty much it", "my kids absolutely love this one", "hit the bell so you don't miss a video",
    "i bought all of this at the local market", "today is a really sunny day here", "sorry about the noise earlier",
]
HTM_ALIGN_NONVISUAL = 0.5
INTRO = "today i'm going to show you how to make {task}"
N_BACKGROUND = 4
ID_CHARS = string.ascii_letters + string.digits + "-_"


@attrs.frozen
class SyntheticOptions:
    """Generator options (the ``synthetic`` data source exposes the same names)."""

    videos: int = 400
    val_videos: int = 40
    seed: int = 0
    min_seconds: int = 40
    max_seconds: int = 120
    shift_prob: float = 0.3
    shift_seconds: float = 6.0
    nonvisual_prob: float = 0.15
    uncaptioned_prob: float = 0.1
    feature_noise: float = 0.6
    youcook2_videos: int = 50
    htm_align_videos: int = 20
    msrvtt_clips: int = 200
    dirty: float = 0.0

    def check(self) -> None:
        problems = []
        for name in ("videos", "min_seconds"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("val_videos", "youcook2_videos", "htm_align_videos", "msrvtt_clips"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_seconds < max(self.min_seconds, 16):
            problems.append(f"max_seconds must be >= max(min_seconds, 16), got {self.max_seconds}")
        for name in ("shift_prob", "nonvisual_prob", "uncaptioned_prob", "dirty"):
            if not 0.0 <= getattr(self, name) <= 0.9:
                problems.append(f"{name} must be in [0, 0.9], got {getattr(self, name)}")
        for name in ("shift_seconds", "feature_noise"):
            if not 0.0 <= getattr(self, name) <= 100.0:
                problems.append(f"{name} must be in [0, 100], got {getattr(self, name)}")
        if problems:
            raise DataError(problems=problems)


@attrs.frozen
class SyntheticPaths:
    root: Path
    features: Path
    captions: Path
    lists: dict[str, Path]
    eval_root: Path


class World:
    """The fixed semantics: tasks, step vocabularies and the random maps from content to features."""

    def __init__(self) -> None:
        rng = np.random.default_rng(WORLD_SEED)
        scale = 1.0 / np.sqrt(DIM)
        self.w_action = rng.normal(0, scale, (len(ACTIONS), DIM))
        self.w_object = rng.normal(0, scale, (len(OBJECTS), DIM))
        self.w_background = rng.normal(0, 1.4 * scale, (N_BACKGROUND, DIM))
        self.tasks: list[list[tuple[int, int]]] = []
        for _ in TASKS:
            objects = rng.choice(len(OBJECTS), size=4, replace=False)
            n_steps = int(rng.integers(6, 10))
            steps: list[tuple[int, int]] = []
            while len(steps) < n_steps:
                # mostly the task's own ingredients, sometimes any: tasks share steps through the vocabulary
                o = int(rng.choice(objects)) if rng.random() < 0.8 else int(rng.integers(len(OBJECTS)))
                step = (int(rng.integers(len(ACTIONS))), o)
                if step not in steps:
                    steps.append(step)
            self.tasks.append(steps)

    def features(self, rng: np.random.Generator, segments: list[tuple[int, int, int, int]], noise: float) -> np.ndarray:
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
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        return feats.astype(np.float16)


def _video_id(rng: np.random.Generator, used: set[str]) -> str:
    while True:
        vid = "".join(ID_CHARS[i] for i in rng.integers(0, len(ID_CHARS), 11))
        if vid not in used:
            used.add(vid)
            return vid


def _timeline(world: World, rng: np.random.Generator, task: int, n_steps: int) -> list[tuple[int, int, int, int]]:
    """``(start, end, action, object)`` segments in whole seconds; action -1 = background of kind ``object``."""
    steps = world.tasks[task]
    order: list[int] = [i for i in range(len(steps)) if rng.random() > 0.1] or [0]
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
        add(int(rng.integers(4, 13)), a, o)
        if rng.random() < 0.3:
            add(int(rng.integers(1, 5)), -1, int(rng.integers(1, N_BACKGROUND)))
    add(int(rng.integers(2, 6)), -1, N_BACKGROUND - 1)  # outro
    return segs


def _asr_captions(
    rng: np.random.Generator, segs: list[tuple[int, int, int, int]], task: int, opts: SyntheticOptions
) -> list[dict[str, Any]]:
    """Noisy ASR-like captions of a timeline, each with its ground truth (``kind``, true span)."""
    length = segs[-1][1]
    caps: list[dict[str, Any]] = []
    for s, e, a, o in segs:
        if a < 0 or rng.random() < opts.uncaptioned_prob:
            continue
        text = ASR_TEMPLATES[int(rng.integers(len(ASR_TEMPLATES)))].format(a=ACTIONS[a][0], o=OBJECTS[o])
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
        caps.append({"start": round(cs, 2), "end": round(ce, 2), "text": text, "kind": kind, "span": [s, e]})
    # nonvisual / all captions = nonvisual_prob on average
    n_chatter = int(rng.binomial(max(len(caps), 1), min(1.0, opts.nonvisual_prob / (1 - opts.nonvisual_prob))))
    if n_chatter and rng.random() < 0.5:  # one of them may be the intro, also without a visual counterpart
        caps.append({"start": 0.2, "end": 3.0, "text": INTRO.format(task=TASKS[task]), "kind": "nonvisual"})
        n_chatter -= 1
    for _ in range(n_chatter):
        cs = float(rng.uniform(0, max(0.5, length - 3)))
        text = CHATTER[int(rng.integers(len(CHATTER)))]
        caps.append({"start": round(cs, 2), "end": round(min(cs + rng.uniform(2, 4), length), 2), "text": text,
                     "kind": "nonvisual"})
    if not caps:  # every video needs a caption; a lone visual one for the first step
        s, e, a, o = next(seg for seg in segs if seg[2] >= 0)
        caps.append({"start": float(s), "end": float(min(s + 3, e)), "text": ASR_TEMPLATES[0].format(
            a=ACTIONS[a][0], o=OBJECTS[o]), "kind": "aligned", "span": [s, e]})
    caps.sort(key=lambda c: (c["start"], c["end"]))
    return caps


def _n_steps(rng: np.random.Generator, opts: SyntheticOptions) -> int:
    target = rng.integers(opts.min_seconds, opts.max_seconds + 1)
    return max(2, int(round((target - 7) / 9.0)))  # a step with its gaps averages ~9 s, intro + outro ~7 s


def _save(path: Path, feats: np.ndarray) -> None:
    np.save(path, feats, allow_pickle=False)


def generate(out_dir: str | Path, videos: int = 400, seed: int = 0, **options: Any) -> SyntheticPaths:
    """Write the raw How2 layout and the evaluation sets to ``out_dir``; deterministic given the arguments.

    ``options`` are the other fields of :class:`SyntheticOptions`.
    """
    opts = SyntheticOptions(videos=videos, seed=seed, **options)
    opts.check()
    out = Path(out_dir)
    feat_dir = out / "features"
    feat_dir.mkdir(parents=True, exist_ok=True)
    world = World()
    rng = np.random.default_rng([opts.seed, 1])
    used: set[str] = set()
    captions: dict[str, Any] = {}
    truth: dict[str, Any] = {}
    ids: list[str] = []
    for _ in range(opts.videos + opts.val_videos):
        vid = _video_id(rng, used)
        task = int(rng.integers(len(TASKS)))
        segs = _timeline(world, rng, task, _n_steps(rng, opts))
        feats = world.features(rng, segs, opts.feature_noise)
        caps = _asr_captions(rng, segs, task, opts)
        _save(feat_dir / f"{vid}.npy", feats)
        captions[vid] = {k: [c[k] for c in caps] for k in ("start", "end", "text")}
        truth[vid] = {
            "task": TASKS[task],
            "steps": [[s, e, ACTIONS[a][0], OBJECTS[o]] for s, e, a, o in segs if a >= 0],
            "caption_kinds": [c["kind"] for c in caps],
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


def _clean_video(world: World, rng: np.random.Generator, n_steps: int, noise: float) -> tuple[int, list, np.ndarray]:
    task = int(rng.integers(len(TASKS)))
    segs = _timeline(world, rng, task, n_steps)
    return task, segs, world.features(rng, segs, noise)


def _youcook2(world: World, rng: np.random.Generator, root: Path, used: set[str], opts: SyntheticOptions) -> None:
    (root / "features").mkdir(parents=True, exist_ok=True)
    database: dict[str, Any] = {}
    for _ in range(opts.youcook2_videos):
        vid = _video_id(rng, used)
        _, segs, feats = _clean_video(world, rng, int(rng.integers(4, 11)), opts.feature_noise)
        steps = [seg for seg in segs if seg[2] >= 0]
        annotations = []
        for i, (s, e, a, o) in enumerate(steps):
            template = EVAL_TEMPLATES[int(rng.integers(len(EVAL_TEMPLATES)))]
            sentence = template.format(A=ACTIONS[a][0].capitalize(), o=OBJECTS[o])
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
        task, segs, feats = _clean_video(world, rng, n_steps, opts.feature_noise)
        rows = []
        # like the real set, about half the transcript is not visually alignable; the protocol anchors its windows
        # on those sentences, so they must be spread over the whole video
        asr = attrs.evolve(opts, nonvisual_prob=max(opts.nonvisual_prob, HTM_ALIGN_NONVISUAL))
        for c in _asr_captions(rng, segs, task, asr):
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
            task = world.tasks[int(rng.integers(len(TASKS)))]
            a, o = task[int(rng.integers(len(task)))]
            before, during, after = int(rng.integers(0, 3)), int(rng.integers(6, 16)), int(rng.integers(0, 3))
            segs = [(0, before, -1, 1), (before, before + during, a, o), (before + during, before + during + after, -1, 2)]
            feats = world.features(rng, [seg for seg in segs if seg[1] > seg[0]], opts.feature_noise)
            sentence = MSRVTT_TEMPLATES[int(rng.integers(len(MSRVTT_TEMPLATES)))].format(a3=ACTIONS[a][1], o=OBJECTS[o])
            number = 7000 + i
            writer.writerow([f"ret{i}", f"msr{number}", f"video{number}", sentence])
            _save(root / "features" / f"video{number}.npy", feats)
