"""Random-access read speed of the shard store against one ``.npy`` file per video.

Builds a How2-shaped set (default 12,000 videos of 60..600 rows x 512 fp16, ~4 GB, 20 captions each) twice: as
a prepared shard store and as one ``.npy`` per video. Then reads random videos into a preallocated batch buffer
(what a collate does), side by side in one run:

- warm: page cache holds everything; median of 5 passes; plus the memory-copy floor (same bytes from RAM);
- cold: page cache dropped before each layout (root only: ``echo 3 > /proc/sys/vm/drop_caches``); "x payload" is
  bytes the kernel read (``/proc/self/io`` read_bytes) per byte requested.

Usage: ``python benchmarks/io_bench.py [--videos 12000] [--dir /tmp/norton-io-bench] [--keep]``
Runs with glibc's malloc thresholds raised so results do not flip between runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def _build(root: Path, n: int, seed: int) -> tuple[Path, Path, np.ndarray]:
    from norton_core.data import manifest as mf
    from norton_core.data.writer import ShardWriter

    rng = np.random.default_rng(seed)
    lengths = rng.integers(60, 601, n)
    block = rng.standard_normal((1200, 512)).astype(np.float16)  # content is irrelevant to IO: reuse a block
    store_dir, npy_dir = root / "store", root / "npy"
    store_dir.mkdir(parents=True)
    npy_dir.mkdir(parents=True)
    shard_size, entries = 4096, []
    times = np.stack([np.arange(20, dtype=np.float32), np.arange(20, dtype=np.float32) + 2], 1)
    tokens = np.full((20, 32), -1, np.int32)
    tokens[:, :12] = rng.integers(1000, 30000, (20, 12))
    t0 = time.perf_counter()
    for k in range(0, n, shard_size):
        w = ShardWriter(store_dir, "train", k // shard_size, "captions.bench.", 512, 32, 64 << 20)
        for i in range(k, min(n, k + shard_size)):
            off = int(rng.integers(0, 600))
            feats = block[off : off + lengths[i]]
            w.add(f"v{i:07d}", feats, times, tokens)
            np.save(npy_dir / f"v{i:07d}.npy", feats)
        entries.append(w.commit())
    manifest = {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION, "split": "train", "feature_dim": 512,
        "tokenizer": "bench", "vocab_hash": "-", "max_text_len": 32, "max_text_chars": 96,
        "chunk_bytes": 64 << 20, "data_dir": ".", "num_videos": n, "skipped": {}, "shards": entries,
    }
    (store_dir / "manifest.json").write_bytes(mf.dumps(manifest))
    os.sync()
    print(f"built {n} videos ({lengths.sum() * 1024 / 1e9:.2f} GB per layout) in {time.perf_counter() - t0:.0f} s",
          file=sys.stderr)
    return store_dir, npy_dir, lengths


def _read_bytes() -> int:
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("read_bytes")).split()[1])


def _drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def _pass(kind: str, sample: np.ndarray, ctx: dict, out: np.ndarray) -> float:
    """Seconds to read the sampled videos into ``out`` with one layout."""
    t0 = time.perf_counter()
    if kind in ("store-mmap", "store-pread"):
        store = ctx[kind]
        for i in sample:
            f = store.features(int(i))
            out[: len(f)] = f
    elif kind in ("store-mmap get()", "store-pread get()"):
        store = ctx[kind.split()[0]]
        for i in sample:
            f = store.get(int(i)).features
            out[: len(f)] = f
    elif kind == "npy per video":
        d = ctx["npy"]
        for i in sample:
            f = np.load(d / f"v{int(i):07d}.npy")
            out[: len(f)] = f
    elif kind == "memcpy floor":
        src, starts = ctx["ram"], ctx["ram_starts"]
        for i in sample:
            a, b = starts[i], starts[i + 1]
            out[: b - a] = src[a:b]
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=12000)
    ap.add_argument("--warm-sample", type=int, default=2000)
    ap.add_argument("--cold-sample", type=int, default=1000)
    ap.add_argument("--dir", default="/tmp/norton-io-bench")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

    from norton_core.data.store import ShardStore

    root = Path(args.dir)
    if root.exists():
        shutil.rmtree(root)
    store_dir, npy_dir, lengths = _build(root, args.videos, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    out = np.empty((int(lengths.max()), 512), np.float16)
    mb = lambda s: float(lengths[s].sum()) * 1024 / 1e6  # noqa: E731 - MB per sample
    try:
        # ---- cold: a fresh store / file handles after dropping the page cache ----
        cold_rows = []
        cold_sample = rng.choice(args.videos, args.cold_sample, replace=False)
        can_drop = True
        for kind in ("store-mmap", "store-pread", "npy per video"):
            ctx = {"npy": npy_dir}
            if kind.startswith("store"):
                ctx[kind] = ShardStore.open(store_dir, kind.split("-")[1])  # open reads only headers and offsets
            can_drop = _drop_caches() and can_drop
            before = _read_bytes()
            secs = _pass(kind, cold_sample, ctx, out)
            read = _read_bytes() - before
            cold_rows.append((kind, args.cold_sample / secs, mb(cold_sample) / secs, read / (mb(cold_sample) * 1e6)))
        # ---- warm: everything cached and mapped; median of 5 passes over the same random videos ----
        warm_sample = rng.choice(args.videos, args.warm_sample, replace=False)
        ram_starts = np.concatenate([[0], np.cumsum(lengths)])
        ram = np.empty((int(ram_starts[-1]), 512), np.float16)
        ctx = {"store-mmap": ShardStore.open(store_dir, "mmap"), "store-pread": ShardStore.open(store_dir, "pread"),
               "npy": npy_dir, "ram": ram, "ram_starts": ram_starts}
        warm_rows = []
        kinds = ("memcpy floor", "store-mmap", "store-mmap get()", "store-pread", "store-pread get()",
                 "npy per video")
        for kind in kinds:
            _pass(kind, warm_sample, ctx, out)  # warm-up: page cache + page tables
        for kind in kinds:
            secs = statistics.median(_pass(kind, warm_sample, ctx, out) for _ in range(5))
            warm_rows.append((kind, args.warm_sample / secs, mb(warm_sample) / secs))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    npy_warm = dict((k, v) for k, v, _ in warm_rows)["npy per video"]
    print(f"\nwarm: {args.warm_sample} random videos of {args.videos}, median of 5 passes, into a preallocated buffer")
    print("| layout | videos/s | MB/s | vs npy per video |\n|---|---|---|---|")
    for kind, vps, mbs in warm_rows:
        print(f"| {kind} | {vps:,.0f} | {mbs:,.0f} | {vps / npy_warm:.1f}x |")
    cold = {k: v for k, v, _, _ in cold_rows}
    note = "" if can_drop else " (page cache NOT dropped: not root?)"
    print(f"\ncold: {args.cold_sample} random videos of {args.videos}, page cache dropped before each layout{note}")
    print("| layout | videos/s | MB/s | x payload | vs store-mmap |\n|---|---|---|---|---|")
    for kind, vps, mbs, x in cold_rows:
        print(f"| {kind} | {vps:,.0f} | {mbs:,.0f} | {x:.1f}x | {vps / cold['store-mmap']:.1f}x |")
    warm_ratio = dict((k, v) for k, v, _ in warm_rows)["store-mmap get()"] / npy_warm
    cold_ratio = cold["store-pread"] / cold["store-mmap"]
    print(f"\nwarm store-mmap get() / npy per video = {warm_ratio:.1f}x (target >= 4x)")
    print(f"cold store-pread / store-mmap = {cold_ratio:.1f}x (target >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
