"""Start-up at How2 scale: open a 1.1M-video shard store and find its sampleable videos.

Generates (once, kept in ``--dir``) a store of ``--videos`` short videos (1-3 feature rows, 1-3 captions each, 4096
videos per shard, as HowTo100M's MMPT shards), then, each in a fresh process so that peak memory is its own:

- ``offsets``: ``ShardStore.open`` + ``sampleable_videos`` (decided from the shard offsets), mmap and pread;
- ``per-video``: the same open + the previous way, one ``store.get`` per video (reads every video's rows: in
  pread mode that is the whole dataset at every start and resume). Skip it with ``--no-legacy``.

Prints seconds and peak RSS (VmHWM) per case, and the ratio. Targets: at most 10 s and 1 GB at 1.1M videos.

Usage: ``python benchmarks/startup_bench.py [--videos 1100000] [--dir /tmp/norton-startup-bench]``
(~2.5 GB of disk; run under ``flock /work/heavy.lock`` on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHARD = 4096
TEXT_LEN = 16


def build(store_dir: Path, n: int, seed: int = 0) -> None:
    from norton_core.data import manifest as mf

    rng = np.random.default_rng(seed)
    store_dir.mkdir(parents=True, exist_ok=True)
    block = rng.standard_normal((3 * SHARD, 512)).astype(np.float16)  # content is irrelevant here: reuse one block
    prefix, entries = "captions.bench.", []
    t0 = time.perf_counter()
    for k, first in enumerate(range(0, n, SHARD)):
        count = min(SHARD, n - first)
        rows = rng.integers(1, 4, count)
        caps = rng.integers(1, 4, count)
        arrays = {
            "video_starts": np.concatenate([[0], np.cumsum(rows)]).astype("<i8"),
            "video_data": block[: rows.sum()],
            "times_starts": np.concatenate([[0], np.cumsum(caps)]).astype("<i8"),
            "times_data": np.tile(np.asarray([[0.0, 2.0]], np.float32), (int(caps.sum()), 1)),
            "tokens_starts": np.concatenate([[0], np.cumsum(caps)]).astype("<i8"),
            "tokens_data": np.full((int(caps.sum()), TEXT_LEN), -1, "<i4"),
        }
        arrays["tokens_data"][:, :4] = 1000
        names = mf.shard_file_names("train", k, prefix)
        files = {}
        for role, array in arrays.items():
            np.save(store_dir / names[role], array)
            files[role] = {"name": names[role], "dtype": mf.ROLES[role], "shape": list(array.shape),
                           "bytes": (store_dir / names[role]).stat().st_size, "sha256": "not hashed (benchmark)",
                           "chunk_sha256": []}
        entries.append({"index": k, "num_videos": count, "video_ids": [f"v{first + i:07d}" for i in range(count)],
                        "feature_rows": int(rows.sum()), "caption_rows": int(caps.sum()), "files": files})
    manifest = {"format": mf.FORMAT, "format_version": mf.FORMAT_VERSION, "split": "train", "feature_dim": 512,
                "tokenizer": "bench", "vocab_hash": "-", "max_text_len": TEXT_LEN, "max_text_chars": 64,
                "chunk_bytes": mf.DEFAULT_CHUNK_BYTES, "data_dir": ".", "num_videos": n, "skipped": {},
                "shards": entries}
    (store_dir / mf.MANIFEST).write_bytes(mf.dumps(manifest))
    print(f"built {n} videos in {len(entries)} shards in {time.perf_counter() - t0:.0f} s", flush=True)


def legacy_sampleable(store: object) -> np.ndarray:
    """The previous decision: read every video."""
    keep = []
    for i in range(len(store)):  # type: ignore[arg-type]
        record = store.get(i)  # type: ignore[attr-defined]
        if record.features.shape[0] and any(len(t) for t in record.tokens):
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def child(store_dir: str, mode: str, how: str) -> None:
    from norton_core.data.store import ShardStore
    from norton_core.engine.loader import sampleable_videos

    t0 = time.perf_counter()
    store = ShardStore.open(store_dir, mode)  # type: ignore[arg-type]
    t_open = time.perf_counter() - t0
    videos = sampleable_videos(store, lambda m: None) if how == "offsets" else legacy_sampleable(store)
    seconds = time.perf_counter() - t0
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"open_s": t_open, "total_s": seconds, "peak_mb": hwm / 1024, "videos": int(len(videos))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=1_100_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/norton-startup-bench"))
    parser.add_argument("--no-legacy", action="store_true", help="skip the per-video reads (slow)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    store_dir = args.dir / f"store-{args.videos}"
    if not (store_dir / "manifest.json").exists():
        build(store_dir, args.videos)
    cases = [("offsets", "mmap"), ("offsets", "pread")] + ([] if args.no_legacy else [("per-video", "pread"),
                                                                                      ("per-video", "mmap")])
    results = {}
    for how, mode in cases:
        out = subprocess.run([sys.executable, __file__, "--child", str(store_dir), mode, how], capture_output=True,
                             text=True, check=True, env=os.environ)
        results[how, mode] = r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{how:>9} {mode:>5}: open {r['open_s']:6.2f} s, open+sampleable {r['total_s']:7.2f} s, "
              f"peak RSS {r['peak_mb']:7.0f} MB, {r['videos']} sampleable", flush=True)
    if ("per-video", "pread") in results:
        for mode in ("mmap", "pread"):
            a, b = results["per-video", mode], results["offsets", mode]
            print(f"{mode}: offsets vs per-video: {a['total_s'] / b['total_s']:.1f}x faster")
    best = results["offsets", "pread"]
    ok = best["total_s"] <= 10 and best["peak_mb"] <= 1024
    print(f"target (<= 10 s, <= 1 GB at 1.1M, pread): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
