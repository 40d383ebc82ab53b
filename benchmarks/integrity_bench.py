"""Benchmark: what the default read checks cost per training step of the laptop demo.

Run: ``python benchmarks/integrity_bench.py [--steps 20] [--epochs 3] [--threads 1]``

Builds the demo's Norton stage (recipes/how2_demo.toml: its generated data, model, aligner and loss) and measures:

- the **step time**: forward + backward + optimizer step of one batch of V videos x C clips, median of ``--steps``
  after two warm-up steps (the loop's own work, without data loading);
- the **finite check** (``train.check_finite``): reading every batch of an epoch through the aligner with and
  without ``np.isfinite`` over each video's features; the difference divided by the epoch's steps;
- the **chunk integrity check** (``train.check_chunks``): the same with a freshly opened store per epoch (as each
  epoch's DataLoader workers are new processes, every chunk a worker reads is hashed once per epoch).

Each variant reads one whole epoch per repeat (``--epochs`` repeats, alternating variants, medians reported), so
the page cache is equally warm for all. The checks run in DataLoader workers, beside the main process's step, so
the ratio is an upper bound of what they add to the wall clock with ``num_workers >= 1``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=str(Path("~/.cache/norton").expanduser()))
    args = parser.parse_args()

    import torch

    from norton_core.data.store import ShardStore
    from norton_core.engine.loader import BatchDataset, random_batches, sampleable_videos
    from norton_core.recipe.load import load_recipe

    torch.set_num_threads(args.threads)
    recipe = load_recipe(ROOT / "recipes" / "how2_demo.toml",
                         overrides=[f'run.cache_dir="{args.cache_dir}"', 'train.precision="fp32"'])
    paths = recipe.build("data", cache_dir=Path(args.cache_dir)).prepare(progress=False)
    tcfg = recipe.train
    plain = ShardStore.open(paths.train)
    videos = sampleable_videos(plain, lambda m: None)
    batches = random_batches(videos, tcfg.videos_per_batch, 1, 1)
    torch.manual_seed(0)
    model = recipe.build("model")
    aligner = recipe.build("aligner", special_tokens=model.special_tokens())
    loss_fn = recipe.build("loss", rank=0, world_size=1)
    params = list(model.trainable_parameters())
    optimizer = torch.optim.Adam(params, lr=tcfg.lr)

    # -- the step --------------------------------------------------------------------------------------------------
    data = BatchDataset(plain, aligner, batches, 1, 1, "train")
    step_times = []
    model.train()
    for i in range(args.steps + 2):
        batch = data[i % len(data)]
        t0 = time.perf_counter()
        outputs = model(batch["caps"], batch["cmasks"], batch["vfeats"], batch["vmasks"])
        loss = loss_fn(outputs, batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tcfg.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:
            step_times.append(time.perf_counter() - t0)
    step = statistics.median(step_times)

    # -- reading an epoch with each check --------------------------------------------------------------------------
    variants = {"plain": {}, "finite": {"check_finite": True}, "chunks": {"check_chunks": True},
                "both": {"check_finite": True, "check_chunks": True}}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.epochs):
        for name, kw in variants.items():
            store = ShardStore.open(paths.train, **kw)  # fresh: chunk hashes are checked again, as in new workers
            t0 = time.perf_counter()
            epoch = BatchDataset(store, aligner, batches, 1, 1, "train")
            for i in range(len(epoch)):
                epoch[i]
            times[name].append(time.perf_counter() - t0)
            store.close()
    n = len(batches)
    read = {k: statistics.median(v) / n for k, v in times.items()}
    size = sum(f["bytes"] for s in plain.manifest["shards"] for f in s["files"].values())
    print(f"demo store: {len(plain)} videos, {len(plain.manifest['shards'])} shards, {size / 2**20:.1f} MiB; "
          f"{n} steps per epoch of V={tcfg.videos_per_batch} videos; torch threads {args.threads}")
    print(f"step (forward+backward+update, median of {len(step_times)}): {step * 1e3:8.2f} ms")
    print(f"batch read, no checks (median of {args.epochs} epochs):      {read['plain'] * 1e3:8.3f} ms/step")
    for name, label in (("finite", "finite check"), ("chunks", "chunk integrity check"), ("both", "both checks")):
        extra = read[name] - read["plain"]
        print(f"{label:<22} +{extra * 1e3:8.3f} ms/step = {extra / step:7.2%} of the step time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
