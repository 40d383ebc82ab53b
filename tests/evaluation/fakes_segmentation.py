"""Tiny COIN and CrossTask sets in their released layouts, for the planted fake model of :mod:`.fakes`.

A step labelled ``w<k>`` is shown as concept ``k`` during its segment. The planted model therefore scores a step's
label near 1 inside its segments. CrossTask's background seconds show concepts 1900+, which no step names; COIN's are
faint noise, so that every label scores near 0 there, below COIN's background threshold (the largest similarity of
two labels, about 0.1 for a dozen random unit vectors, which a frame of an unrelated concept often exceeds for one
of a dozen labels).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.evaluation.fakes import DIM, _video, concepts

COIN_FIRST = 600  # label id k is the word w<COIN_FIRST + k - 1>


def make_coin(root: Path, videos: int = 6, labels: int = 12, seed: int = 5) -> Path:
    """``root/coin`` with ``videos`` testing videos (and one training video, which is not evaluated)."""
    rng = np.random.default_rng(seed)
    out = root / "coin"
    (out / "features").mkdir(parents=True, exist_ok=True)
    database = {}
    count = 0  # labels in turn: with at least 2 steps a video, 6 videos use all 12 labels
    for v in range(videos + 1):
        t, spans, anns = int(rng.integers(2, 8)), [], []
        for _ in range(int(rng.integers(2, 5))):
            label = count % labels + 1
            count += 1
            length = int(rng.integers(4, 15))
            spans.append((COIN_FIRST + label - 1, t, t + length))
            anns.append({"id": str(label), "segment": [float(t), float(t + length)], "label": f"w{COIN_FIRST + label - 1}"})
            t += length + int(rng.integers(2, 12))
        vid = f"coin{v:03d}"
        feats = 0.02 * rng.standard_normal((t, DIM))
        for k, start, end in spans:
            feats[start:end] = concepts()[k] + 0.05 * rng.standard_normal((end - start, DIM))
        np.save(out / "features" / f"{vid}.npy", feats.astype(np.float16))
        subset = "testing" if v < videos else "training"
        database[vid] = {"recipe_type": 1, "class": "fake", "subset": subset, "start": 0.0, "end": float(t),
                         "video_url": "", "annotation": anns}
    (out / "COIN.json").write_text(json.dumps({"version": "fake", "database": database}))
    return out


CROSSTASK_TASKS = {"100": [700, 701, 702], "200": [710, 711, 712, 713]}
CROSSTASK_RELATED = {"300": [720, 721]}


def _task_file(path: Path, tasks: dict[str, list[int]]) -> None:
    blocks = [f"{task}\nTask {task}\nhttps://example.org/{task}\n{len(words)}\n{','.join(f'w{w}' for w in words)}\n"
              for task, words in tasks.items()]
    path.write_text("\n".join(blocks) + "\n")


def make_crosstask(root: Path, videos_per_task: int = 4, seed: int = 6) -> Path:
    """``root/crosstask`` with ``crosstask_release/`` and features: per primary task ``videos_per_task`` videos in
    ``videos.csv`` plus one more in ``videos_val.csv`` (listed in both, as released); two related-task videos."""
    rng = np.random.default_rng(seed)
    out = root / "crosstask"
    release = out / "crosstask_release"
    (release / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "features").mkdir(parents=True, exist_ok=True)
    _task_file(release / "tasks_primary.txt", CROSSTASK_TASKS)
    _task_file(release / "tasks_related.txt", CROSSTASK_RELATED)
    rows, val = [], []
    for task, words in {**CROSSTASK_TASKS, **CROSSTASK_RELATED}.items():
        n = videos_per_task + 1 if task in CROSSTASK_TASKS else 2
        for v in range(n):
            vid = f"ct{task}x{v:02d}"
            t, spans, lines = int(rng.integers(3, 9)), [], []
            for step, word in enumerate(words, start=1):
                length = int(rng.integers(3, 8))
                spans.append((word, t, t + length))
                lines.append(f"{step},{t + 0.3:.2f},{t + length - 0.4:.2f}")
                t += length + int(rng.integers(3, 10))
            np.save(out / "features" / f"{vid}.npy", _video(rng, t + 4, spans))
            (release / "annotations" / f"{task}_{vid}.csv").write_text("\n".join(lines) + "\n")
            rows.append(f"{task},{vid},https://www.youtube.com/watch?v={vid}")
            if task in CROSSTASK_TASKS and v == n - 1:
                val.append(rows[-1])
    (release / "videos.csv").write_text("\n".join(rows) + "\n")
    (release / "videos_val.csv").write_text("\n".join(val) + "\n")
    return out
