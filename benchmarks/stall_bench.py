"""Why the demo's first stage stalls at chance on How2-like data that norton's own generator did not make.

A small How2-like generator written independently of :mod:`norton_core.data.synthetic`, following a description
of an outside generator: every step's feature is the normalised sum of a verb vector and an object vector
(28 verbs x 26 objects, so steps share halves), plus a strongly correlated AR(1) noise walk about a third the size
of the signal, background frames between steps; captions from six templates around "<verb> the <object>"; 24 tasks
of 5-9 steps; ASR-like timing (shift std 6 s), dropped captions and Poisson-many chatter lines. It writes the raw
How2 layout (``features/<id>.npy``, ``captions.json``, ``train.lst``, ``val.lst``), a YouCook2-format clip set and an
HTM-Align-format set (every ASR-like line, alignable with its step's true span or not),
prepares it with ``norton prepare how2`` and trains the demo's first stage (``recipes/videoclip_demo.toml`` with only
``[data]`` changed, plus the ``--set`` levers given on the command line) with a probe plugin registered in-process.

The probe writes ``stall_probe.jsonl`` into the run directory, one record every ``--probe-every`` steps:

- ``loss`` (the step's mean loss) and ``chance`` (2 ln B for the batch);
- ``video_spread`` / ``text_spread``: mean cosine distance of each tower's pooled embeddings on a fixed batch from
  their mean direction (0 = every clip embeds alike), ``video_norm`` / ``text_norm`` their mean length, and
  ``video_erank`` / ``text_erank``: effective rank (exp of the entropy of the normalised singular values);
- ``logit_std``: the spread of the fixed batch's logit matrix (what the softmax sees: 1 / temperature included);
- ``grad_<module>``: gradient norm (before clipping) of the text encoder, the video MLP, the video encoder;
- ``text_drift``: mean cosine of the text tower's pooled embeddings of the fixed batch to their step-0 values.

    python benchmarks/stall_bench.py generate --out /tmp/stall          # raw How2 layout + eval set, then prepare
    python benchmarks/stall_bench.py train --out /tmp/stall --name base --epochs 1
    python benchmarks/stall_bench.py train --out /tmp/stall --name warm --epochs 1 --set train.warmup_updates=30
    python benchmarks/stall_bench.py summary --out /tmp/stall            # a table of every run's probe
    python benchmarks/stall_bench.py demo --out /tmp/stall              # both shipped demo stages, only [data] changed

``demo`` is the finish line of the stall: it writes a recipe that extends ``recipes/how2_demo.toml`` with only
``[data]`` replaced (so both stages train on this data), runs it as a user would, and prints the first stage's first
loss and the step it left chance, then each stage's clip R@1, video-paragraph R@1, HTM-Align recall and AUC with
their chance values.

``sweep`` asks the same of data the description does not pin down: it generates each variant in ``VARIANTS`` (the
described generator, then noisier or stickier feature noise, features twenty times longer than unit rows, looser
narration, and all of them at once), runs ``demo`` on each and prints one table against the finish line::

    python benchmarks/stall_bench.py sweep --out /tmp/sweep     # about 5 min a variant on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from norton_core import hookimpl
from norton_core.evaluation.report import chance_level

DIM = 512
VERBS = ["chop", "slice", "dice", "stir", "whisk", "pour", "fold", "knead", "grate", "peel", "mash", "fry",
         "boil", "bake", "roast", "grill", "season", "rinse", "drain", "spread", "roll", "mix", "blend", "press",
         "sprinkle", "crack", "melt", "trim"]
OBJECTS = ["onion", "garlic", "carrot", "potato", "tomato", "pepper", "dough", "butter", "flour", "egg", "cheese",
           "chicken", "beef", "rice", "pasta", "sauce", "bread", "lemon", "apple", "sugar", "milk", "celery",
           "mushroom", "spinach", "bacon", "noodles"]
TEMPLATES = ["{v} the {o}", "now {v} the {o}", "you want to {v} the {o}", "next we {v} the {o}",
             "then {v} the {o} like this", "go ahead and {v} the {o}"]
EVAL_TEMPLATES = ["{V} the {o}.", "{V} the {o} in a bowl.", "{V} the {o} carefully."]
CHATTER = ["thanks for watching", "subscribe to my channel", "this is my favourite part", "let me know below",
           "i got this at the store", "my kids love this one", "that looks really good", "okay so",
           "alright guys", "it smells amazing", "you can use any brand", "we will be right back"]
TASKS, STEPS_MIN, STEPS_MAX = 24, 5, 9


@dataclass(frozen=True)
class Knobs:
    """How hard the generated data is: the feature noise (``noise``: its size against the unit signal, ``rho``: its
    AR(1) correlation from second to second), the features' length (``scale``: 1 = unit rows; extracted features
    are often far longer) and the narration (``shift``: std of a caption's start against its step, in seconds;
    ``drop``: share of steps never said; ``chatter``: mean count of lines about nothing shown)."""

    noise: float = 1 / 3
    rho: float = 0.95
    scale: float = 1.0
    shift: float = 6.0
    drop: float = 0.2
    chatter: float = 3.0


# the robustness sweep: the described generator, then each knob made harder on its own, then all at once
VARIANTS = {
    "described": Knobs(),
    "noisier-features": Knobs(noise=2 / 3),
    "stickier-noise": Knobs(noise=1 / 2, rho=0.99),
    "long-features": Knobs(scale=20.0),
    "looser-narration": Knobs(shift=10.0, drop=0.35, chatter=6.0),
    "all-harder": Knobs(noise=1 / 2, rho=0.99, scale=20.0, shift=10.0, drop=0.35, chatter=6.0),
}


class World:
    """Verb, object and background vectors and the 24 tasks' step lists (fixed by ``seed``)."""

    def __init__(self, seed: int, knobs: Knobs = Knobs()) -> None:
        self.knobs = knobs
        rng = np.random.default_rng([seed, 7])
        self.verbs = _unit(rng.standard_normal((len(VERBS), DIM)))
        self.objects = _unit(rng.standard_normal((len(OBJECTS), DIM)))
        self.background = _unit(rng.standard_normal((4, DIM)))
        self.tasks: list[list[tuple[int, int]]] = []
        for _ in range(TASKS):
            pantry = rng.choice(len(OBJECTS), size=6, replace=False)
            steps: list[tuple[int, int]] = []
            for _ in range(int(rng.integers(STEPS_MIN, STEPS_MAX + 1))):
                while True:
                    step = (int(rng.integers(len(VERBS))), int(rng.choice(pantry)))
                    if step not in steps:
                        break
                steps.append(step)
            self.tasks.append(steps)

    def video(self, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
        """Per-second features (rows of length ``knobs.scale``) and the step spans ``(start, end, verb, object)``."""
        task = self.tasks[int(rng.integers(TASKS))]
        rows: list[np.ndarray] = []
        spans: list[tuple[int, int, int, int]] = []

        def background(seconds: int) -> None:
            rows.extend([self.background[int(rng.integers(4))]] * seconds)

        background(int(rng.integers(3, 10)))
        for v, o in task:
            length = int(rng.integers(4, 13))
            spans.append((len(rows), len(rows) + length, v, o))
            rows.extend([_unit(self.verbs[v] + self.objects[o])] * length)
            background(int(rng.integers(1, 6)))
        background(int(rng.integers(3, 10)))
        signal = np.stack(rows)
        noise = np.empty_like(signal)
        walk = rng.standard_normal(DIM)
        rho = self.knobs.rho
        for t in range(len(signal)):
            walk = rho * walk + math.sqrt(1 - rho**2) * rng.standard_normal(DIM)
            noise[t] = walk
        noise *= self.knobs.noise / math.sqrt(DIM)  # each row's noise ~knobs.noise of the unit signal
        return (self.knobs.scale * _unit(signal + noise)).astype(np.float16), spans

    def captions(self, rng: np.random.Generator, spans: list[tuple[int, int, int, int]],
                 length: int, keep_steps: bool = False) -> dict[str, list[Any]]:
        """ASR-like captions: each step said with a shift (std ``knobs.shift``) or dropped, plus Poisson-many chatter
        lines (``keep_steps``: also each line's step index, None for chatter)."""
        knobs = self.knobs
        lines: list[tuple[float, float, str, int | None]] = []
        for k, (s, _e, v, o) in enumerate(spans):
            if rng.random() < knobs.drop:
                continue
            start = float(np.clip(s + rng.normal(0, knobs.shift), 0, length - 2))
            text = TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(v=VERBS[v], o=OBJECTS[o])
            lines.append((start, min(start + float(rng.uniform(2, 5)), length), text, k))
        for _ in range(int(rng.poisson(knobs.chatter))):
            start = float(rng.uniform(0, length - 2))
            lines.append((start, min(start + float(rng.uniform(1.5, 4)), length),
                          CHATTER[int(rng.integers(len(CHATTER)))], None))
        lines.sort(key=lambda line: line[:3])
        out = {"start": [round(a, 2) for a, _, _, _ in lines], "end": [round(b, 2) for _, b, _, _ in lines],
               "text": [t for _, _, t, _ in lines]}
        if keep_steps:
            out["step"] = [k for _, _, _, k in lines]
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def generate(out: Path, train: int, val: int, youcook2: int, seed: int, htm_align: int = 60,
             knobs: Knobs = Knobs()) -> None:
    """Write the raw How2 layout under ``out/raw``, YouCook2- and HTM-Align-format evaluation sets under
    ``out/eval``, then prepare the stores."""
    world, rng = World(seed, knobs), np.random.default_rng([seed, 1])
    raw = out / "raw"
    (raw / "features").mkdir(parents=True, exist_ok=True)
    captions: dict[str, Any] = {}
    ids = [f"v{seed:02d}{i:05d}" for i in range(train + val)]
    for vid in ids:
        feats, spans = world.video(rng)
        np.save(raw / "features" / f"{vid}.npy", feats)
        captions[vid] = world.captions(rng, spans, len(feats))
    (raw / "captions.json").write_text(json.dumps(captions))
    (raw / "train.lst").write_text("".join(f"{v}\n" for v in ids[:train]))
    (raw / "val.lst").write_text("".join(f"{v}\n" for v in ids[train:]))
    database: dict[str, Any] = {}
    for vid, length, spans in _eval_videos(world, rng, out / "eval" / "youcook2", f"yc{seed:02d}", youcook2):
        notes = [{"id": k, "segment": [s, e], "sentence": EVAL_TEMPLATES[int(rng.integers(3))].format(
            V=VERBS[v].capitalize(), o=OBJECTS[o])} for k, (s, e, v, o) in enumerate(spans)]
        database[vid] = {"duration": float(length), "subset": "validation", "annotations": notes}
    (out / "eval" / "youcook2" / "annotations.json").write_text(json.dumps({"database": database}))
    # HTM-Align: every ASR-like line of a video, alignable (1, the step's true span) or not (0, its ASR time)
    annotated: dict[str, Any] = {}
    for vid, length, spans in _eval_videos(world, rng, out / "eval" / "htm_align", f"ha{seed:02d}", htm_align):
        lines = world.captions(rng, spans, length, keep_steps=True)
        annotated[vid] = [[1, float(spans[k][0]), float(spans[k][1]), text] if k is not None else [0, a, b, text]
                          for a, b, text, k in zip(lines["start"], lines["end"], lines["text"], lines["step"],
                                                   strict=True)]
    (out / "eval" / "htm_align" / "htm_align.json").write_text(json.dumps(annotated))
    prepare = [sys.executable, "-m", "norton_core.cli", "prepare", "how2", str(raw), "--out", str(out / "stores")]
    subprocess.run([*prepare, "--no-progress"], check=True)


def _eval_videos(world: World, rng: np.random.Generator, directory: Path, prefix: str,
                 count: int) -> Iterator[tuple[str, int, list[tuple[int, int, int, int]]]]:
    """``count`` evaluation videos: each one's features saved under ``directory/features``, then its id, length
    and step spans."""
    (directory / "features").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        vid = f"{prefix}{i:04d}"
        feats, spans = world.video(rng)
        np.save(directory / "features" / f"{vid}.npy", feats)
        yield vid, len(feats), spans


def _recipe(out: Path) -> Path:
    """A recipe that is the demo's first stage with only ``[data]`` replaced by the prepared stores."""
    demo = Path(__file__).resolve().parents[1] / "recipes" / "videoclip_demo.toml"
    path = out / "stall_recipe.toml"
    path.write_text(f'extends = "{demo}"\n\n[data]\nname = "how2"\ntrain = "{out / "stores" / "train"}"\n'
                    f'eval_root = "{out / "eval"}"\n')
    return path


class Probe:
    """A norton plugin that measures the towers, gradients and text drift during training (see the module doc)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.batch: dict[str, Any] | None = None
        self.text0: Any = None
        self.sq: dict[str, float] = {}
        self.path: Path | None = None
        self.forward: Any = None

    def _module(self, name: str) -> str:
        for key in ("text_encoder", "videomlp", "video_encoder"):
            if name.startswith(key):
                return key
        return "other"

    @hookimpl
    def norton_run_start(self, run: Any) -> None:
        self.path = Path(run.run_dir) / "stall_probe.jsonl"
        self.path.write_text("")
        for name, p in run.model.named_parameters():
            if p.requires_grad:
                key = self._module(name)
                p.register_post_accumulate_grad_hook(
                    lambda t, key=key: self.sq.__setitem__(key, self.sq.get(key, 0.0) + float(t.grad.pow(2).sum())))

    @hookimpl
    def norton_step_end(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        grads = {f"grad_{k}": math.sqrt(v) for k, v in self.sq.items()}
        self.sq.clear()
        if step % self.every and step != 1:
            return
        record: dict[str, Any] = {"step": step, **{k: metrics[k] for k in ("loss", "lr") if k in metrics}, **grads}
        record.update(self._towers(run))
        with open(self.path, "a") as f:  # type: ignore[arg-type]
            f.write(json.dumps(record) + "\n")

    def _towers(self, run: Any) -> dict[str, float]:
        import torch

        if self.batch is None:
            return {}
        model = run.model
        was = model.training
        model.eval()
        with torch.no_grad():
            out = self.forward(model, self.batch)
        model.train(was)
        v, t = out["pooled_video"].float(), out["pooled_text"].float()
        temp = float(run.recipe.get("loss", {}).get("temperature", 1.0))
        stats = {**_tower("video", v), **_tower("text", t), "logit_std": float((v @ t.T / temp).std())}
        if self.text0 is None:
            self.text0 = t.clone()
        stats["text_drift"] = float(torch.nn.functional.cosine_similarity(t, self.text0, dim=-1).mean())
        return stats


def _tower(name: str, x: Any) -> dict[str, float]:
    import torch

    u = torch.nn.functional.normalize(x, dim=-1)
    mean = torch.nn.functional.normalize(u.mean(0), dim=0)
    s = torch.linalg.svdvals(x - x.mean(0))
    p = s / s.sum()
    erank = float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))
    return {f"{name}_spread": float(1 - (u @ mean).mean()), f"{name}_norm": float(x.norm(dim=-1).mean()),
            f"{name}_erank": erank}


def _capture_first_batch(probe: Probe) -> None:
    """Keep the first batch the engine forwards as the probe's fixed batch (wraps the engine's forward helper)."""
    import copy

    from norton_core.engine import loop

    original = loop.forward_batch

    def forward(model: Any, batch: Any) -> Any:
        if probe.batch is None:
            probe.batch = copy.deepcopy(dict(batch))
        return original(model, batch)

    probe.forward = original
    loop.forward_batch = forward


def train(out: Path, name: str, epochs: int, sets: list[str], every: int, threads: int, evaluate: bool) -> int:
    from norton_core.cli import run_main
    from norton_core.plugin.manager import default_plugins

    probe = Probe(every)
    default_plugins().register(probe, name="stall_probe")
    _capture_first_batch(probe)
    argv = [str(_recipe(out)), "--set", f'run.name="{name}"', "--set", f'run.output_dir="{out / "runs"}"',
            "--set", f"train.epochs={epochs}", "--set", f"run.threads={threads}",
            "--set", "evaluation.before=false", "--set", f"evaluation.after={str(evaluate).lower()}",
            "--set", 'evaluation.suite=""', "--set", 'evaluation.tasks=["youcook2-clip"]']
    for s in sets:
        argv += ["--set", s]
    return run_main(argv + ["--overwrite"])


def demo(out: Path, name: str, sets: list[str]) -> int:
    """Both stages of the shipped demo (``recipes/how2_demo.toml``) with only ``[data]`` changed, as a user with
    this data would run them; then what the issue's finish line asks of them."""
    shipped = Path(__file__).resolve().parents[1] / "recipes" / "how2_demo.toml"
    recipe = out / "demo_recipe.toml"
    recipe.write_text(f'extends = "{shipped}"\n\n[data]\nname = "how2"\ntrain = "{out / "stores" / "train"}"\n'
                      f'eval_root = "{out / "eval"}"\n')
    runs = out / "demo_runs" / name
    argv = [sys.executable, "-m", "norton_core.cli", "run", str(recipe), "--set", f'run.output_dir="{runs}"']
    for s in sets:
        argv += ["--set", s]
    done = subprocess.run(argv, check=False)
    if done.returncode:
        return done.returncode
    demo_summary(runs)
    return 0


def demo_figures(runs: Path) -> dict[str, Any]:
    """What the finish line asks of a ``demo`` run: the first stage's length, first loss, chance and the step it
    left chance; then per stage each metric's value and chance value."""
    first = runs / "videoclip_demo"
    recipe = json.loads((first / "recipe.json").read_text())
    chance = 2 * math.log(recipe["train"]["videos_per_batch"] * recipe["aligner"]["clip_per_video"])
    records = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r and "epoch" in r and "event" not in r]
    figures: dict[str, Any] = {"steps": losses[-1][0] if losses else 0, "first_loss": losses[0][1] if losses else None,
                               "chance": chance, "left_chance": left_chance(losses, chance)}
    for stage in ("videoclip_demo", "how2_demo"):
        after = json.loads((runs / stage / "eval.json").read_text())["after"]
        figures[stage] = {key: (after.get(key), chance_level(key, after)) for key, _ in METRICS}
    return figures


METRICS = (("youcook2_clip/R@1", "clip R@1"), ("youcook2_video/capavg_R@1", "video R@1"),
           ("htm_align/recall", "HTM-Align recall"), ("htm_align/auc", "AUC"))


def demo_summary(runs: Path) -> None:
    """The first stage's steps to leave chance, then each stage's clip R@1, HTM-Align recall and AUC with chance."""
    f = demo_figures(runs)
    print(f"first stage: {f['steps']} steps, first loss {f['first_loss']:.2f} (chance {f['chance']:.2f}), left "
          f"chance at step {f['left_chance']} (first tenth: step {f['steps'] // 10})")
    for stage in ("videoclip_demo", "how2_demo"):
        cells = []
        for key, label in METRICS:
            value, base = f[stage][key]
            cells.append("-" if value is None else f"{label} {value:.2f}" +
                         (f" ({value / base:.1f}x chance {base:.2f})" if base else ""))
        print(f"{stage}: " + ", ".join(cells))


def finish_line(f: dict[str, Any]) -> dict[str, bool]:
    """The issue's finish line on one ``demo`` run: the first stage leaves chance within its first tenth; after
    both stages clip R@1 >= 10x chance, HTM-Align recall >= 2x chance, AUC >= 60."""
    last = f["how2_demo"]
    r1, r1_chance = last["youcook2_clip/R@1"]
    recall, recall_chance = last["htm_align/recall"]
    return {"leaves chance in the first tenth": f["left_chance"] is not None and f["left_chance"] <= f["steps"] // 10,
            "clip R@1 >= 10x chance": r1 >= 10 * r1_chance,
            "HTM-Align recall >= 2x chance": recall >= 2 * recall_chance,
            "AUC >= 60": last["htm_align/auc"][0] >= 60}


def sweep(out: Path, names: list[str], videos: int, seed: int) -> int:
    """For each variant of :data:`VARIANTS`: generate its data (fresh), run ``demo`` on it, then one table of
    every variant's figures against the finish line."""
    rows = []
    for name in names:
        knobs, where = VARIANTS[name], out / name
        print(f"== {name}: {asdict(knobs)}", flush=True)
        if where.exists():  # regenerated: a reused store would hide a changed knob
            if not (where / "raw" / "captions.json").is_file():
                raise SystemExit(f"{where} exists and is not a folder this bench wrote; choose another --out")
            shutil.rmtree(where)
        generate(where, videos, 16, 60, seed, 60, knobs)
        code = demo(where, "sweep", [])
        if code:
            return code
        rows.append((name, demo_figures(where / "demo_runs" / "sweep")))
    print("\n| variant | first loss / chance | left chance (tenth) | clip R@1 (x chance) | HTM-Align recall (x) "
          "| AUC | finish line |")
    print("|---|---|---|---|---|---|---|")
    for name, f in rows:
        last = f["how2_demo"]
        (r1, r1c), (rec, recc), (auc, _) = (last[k] for k in ("youcook2_clip/R@1", "htm_align/recall",
                                                              "htm_align/auc"))
        missed = [k for k, ok in finish_line(f).items() if not ok]
        print(f"| {name} | {f['first_loss']:.2f} / {f['chance']:.2f} | {f['left_chance']} ({f['steps'] // 10}) | "
              f"{r1:.2f} ({r1 / r1c:.0f}x) | {rec:.2f} ({rec / recc:.1f}x) | {auc:.2f} | "
              f"{'met' if not missed else 'missed: ' + '; '.join(missed)} |")
    return 0


def left_chance(losses: list[tuple[int, float]], chance: float, tolerance: float = 0.03) -> int | None:
    """The first logged step at which the loss, and the loss logged next, lie below ``(1 - tolerance) x chance``
    (None if never): norton's own chance watch counts a step within 3 % of chance as at chance."""
    below = [loss < (1 - tolerance) * chance for _, loss in losses]
    for i in range(len(losses) - 1):
        if below[i] and below[i + 1]:
            return losses[i][0]
    return None


def summary(out: Path) -> None:
    """One line per run (steps to leave chance, the loss at a few steps, clip R@1 if evaluated), then the probe."""
    for run in sorted(p.parent for p in (out / "runs").glob("*/stall_probe.jsonl")):
        recipe = json.loads((run / "recipe.json").read_text())
        clips = recipe["train"]["videos_per_batch"] * recipe["aligner"]["clip_per_video"]
        chance = 2 * math.log(clips)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        losses = [(r["step"], r["loss"]) for r in records if "loss" in r and "epoch" in r and "event" not in r]
        evaluation = run / "eval.json"
        r1 = [json.loads(evaluation.read_text())["after"]["youcook2_clip/R@1"]] if evaluation.exists() else []
        at = {s: round(v, 2) for s, v in losses if s in (10, 20, 30, 60, 100, 180)}
        per_epoch = {}
        for r in records:
            if "loss" in r and "epoch" in r and "event" not in r:
                per_epoch.setdefault(r["epoch"], []).append(r["loss"])
        means = {e: round(sum(v) / len(v), 2) for e, v in per_epoch.items()}
        print(f"== {run.name}: chance {chance:.2f}, left chance at step {left_chance(losses, chance)}, "
              f"steps {len(losses) and losses[-1][0]}, loss {at}, epoch means {means}, "
              f"last {round(losses[-1][1], 3) if losses else None}, "
              f"clip R@1 {round(r1[-1], 2) if r1 else '-'}")
        for line in (run / "stall_probe.jsonl").read_text().splitlines():
            r = json.loads(line)
            print("  " + " ".join(f"{k.replace('grad_', 'g_')}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in r.items() if k != "lr"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--videos", type=int, default=480)
    g.add_argument("--val", type=int, default=16)
    g.add_argument("--youcook2", type=int, default=60)
    g.add_argument("--seed", type=int, default=25)
    g.add_argument("--htm-align", type=int, default=60)
    t = sub.add_parser("train")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--name", required=True)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--set", action="append", default=[])
    t.add_argument("--probe-every", type=int, default=5)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--evaluate", action="store_true")
    d = sub.add_parser("demo")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--name", default="shipped")
    d.add_argument("--set", action="append", default=[])
    w = sub.add_parser("sweep", help="the demo on each variant of the generator (VARIANTS), one table")
    w.add_argument("--out", type=Path, required=True)
    w.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    w.add_argument("--videos", type=int, default=480)
    w.add_argument("--seed", type=int, default=25)
    s = sub.add_parser("summary")
    s.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.cmd == "generate":
        generate(args.out, args.videos, args.val, args.youcook2, args.seed, args.htm_align)
        return 0
    if args.cmd == "train":
        return train(args.out, args.name, args.epochs, args.set, args.probe_every, args.threads, args.evaluate)
    if args.cmd == "demo":
        return demo(args.out, args.name, args.set)
    if args.cmd == "sweep":
        return sweep(args.out, args.variants, args.videos, args.seed)
    summary(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
