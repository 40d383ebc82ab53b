"""A retrieval round without the model, at How2 scale: N clustered 768-d float32 video vectors, then rank 0's work
phase by phase, as :func:`norton_core.engine.retrieval.plan_batches` runs it:

- build: the ``faiss-ivf`` backend's index (512 cells, 48 training vectors per cell);
- search: N/64 random query videos, 192 neighbours each (``nprobe = 1``);
- batching: each neighbourhood into one batch of 64 videos;
- recall: 256 sampled queries against exact search.

Each size runs in a fresh process. Peak memory is the process's peak RSS minus its RSS before the vectors existed,
as a multiple of the vectors' bytes (the vectors themselves count as 1x). Targets at 1.1M: <= 15 s, <= 2x.

``--compare DIR`` runs the same in the same invocation with the norton source tree in DIR (e.g. an older commit
unpacked with ``git archive``), side by side, and reports how far the two agree on the neighbours.

Usage: ``python tests/benchmarks/retrieval_bench.py [--sizes 100000,1100000] [--compare DIR] [--compare-sizes 100000]``
(1.1M x 768 is 3.4 GB of vectors: run under ``flock /work/heavy.lock`` on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM, PER_BATCH, CANDS, RECALL = 768, 64, 192, 256


def _rss(field: str) -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))


def vectors(n: int, seed: int = 0) -> np.ndarray:
    """Clustered vectors (2000 centres), written chunk by chunk into one matrix."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, DIM), dtype=np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for a in range(0, n, 65536):
        b = min(n, a + 65536)
        out[a:b] = centres[rng.integers(0, len(centres), b - a)]
        out[a:b] += 0.7 * rng.standard_normal((b - a, DIM), dtype=np.float32)
    return out


def child(n: int, found_path: str) -> None:
    import faiss  # noqa: F401 - libraries loaded before the baseline: their code is not the round's memory
    import torch  # noqa: F401
    from norton_retrieval import FaissIVF, FaissIVFConfig

    from norton_core.engine.retrieval import check_results, neighbour_batches, neighbour_recall

    before = _rss("VmRSS")
    matrix = vectors(n)
    times = {"vectors": 0.0}
    t = time.perf_counter()
    backend = FaissIVF(FaissIVFConfig(), seed=0)
    backend.build(matrix, np.arange(n, dtype=np.int64))
    times["build"] = time.perf_counter() - t
    rng = random.Random("0:1:retrieval")
    queries = np.asarray(rng.sample(range(n), n // PER_BATCH), dtype=np.int64)
    t = time.perf_counter()
    found = check_results(backend.search(queries, CANDS), len(queries), CANDS, n, backend)
    times["search"] = time.perf_counter() - t
    t = time.perf_counter()
    neighbour_batches(found, queries, PER_BATCH, n, rng)
    times["batching"] = time.perf_counter() - t
    t = time.perf_counter()
    recall = neighbour_recall(backend, matrix, CANDS, RECALL, random.Random("0:1:recall"), "l2")
    times["recall"] = time.perf_counter() - t
    del times["vectors"]
    np.save(found_path, found)
    peak = _rss("VmHWM") - before
    print(json.dumps({**times, "total": sum(times.values()), "peak_x": peak / matrix.nbytes, "peak_gb": peak / 1e9,
                      "vectors_gb": matrix.nbytes / 1e9, "recall": recall}))


def run(tree: Path | None, n: int, found_path: str) -> dict:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "plugins")])
    out = subprocess.run([sys.executable, __file__, "--child", str(n), found_path], capture_output=True, text=True,
                         env=env)
    if out.returncode:
        raise SystemExit(f"child failed ({tree or 'this tree'}, n={n}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def show(label: str, n: int, r: dict) -> None:
    print(f"{label:>8} N={n:>9,}: build {r['build']:6.2f} s  search {r['search']:6.2f} s  batching "
          f"{r['batching']:5.2f} s  recall {r['recall']:6.2f} s  total {r['total']:6.2f} s  | peak "
          f"{r['peak_gb']:5.2f} GB = {r['peak_x']:.2f}x the vectors ({r['vectors_gb']:.2f} GB)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1100000")
    parser.add_argument("--compare", type=Path, help="another norton source tree, run side by side")
    parser.add_argument("--compare-sizes", default="100000",
                        help="sizes for --compare (the previous backend needs ~4.8x the vectors: 16 GB at 1.1M)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1])
        return
    compare_sizes = {int(s) for s in args.compare_sizes.split(",")} if args.compare else set()
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            mine = run(None, n, f"{tmp}/new.npy")
            if n in compare_sizes:
                old = run(args.compare, n, f"{tmp}/old.npy")
                show("before", n, old)
            show("now", n, mine)
            if n in compare_sizes:
                a, b = np.load(f"{tmp}/old.npy"), np.load(f"{tmp}/new.npy")
                same_sets = np.mean([set(x.tolist()) == set(y.tolist()) for x, y in zip(a, b, strict=True)])
                print(f"         speed-up {old['total'] / mine['total']:.1f}x, memory {old['peak_x']:.2f}x -> "
                      f"{mine['peak_x']:.2f}x; neighbour lists identical for {np.mean((a == b).all(1)):.1%} of queries, "
                      f"same sets for {same_sets:.1%}; recall vs exact {old['recall']:.3f} -> {mine['recall']:.3f}")
            if n >= 1_000_000:
                ok = mine["total"] <= 15 and mine["peak_x"] <= 2
                print(f"         target at {n:,} (<= 15 s, <= 2x): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
