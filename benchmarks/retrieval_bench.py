"""A retrieval round without the model, at How2 scale: N clustered 768-d float32 video vectors, then rank 0's work:
:func:`norton_core.retrieval.round.plan_batches` itself, timed by its phases:

- build: the ``faiss-ivf`` backend's index (512 cells, 48 training vectors per cell);
- search: N/64 random query videos, 192 neighbours each (``nprobe = 1``);
- batching: each neighbourhood into one batch of 64 videos;
- recall: ``--recall-sample`` sampled queries (default: the engine's ``retrieval.recall_sample``) against exact
  search.

numba's compiled kernels (selection, batch drawing) are loaded before the round (once per process, ~1 s with
numba's import; a first run on a checkout compiles them, ~6 s) and that time is printed apart, as the libraries'
imports are left out.
Each child also times a 2048^3 float32 torch product (after the round): the host's speed drifts (46-150 GFLOP/s
seen on the same 2-core box), so read the round's times beside it.

Each size runs ``--repeats`` times, each in a fresh process; times are medians, peak memory the largest. Peak memory
is the process's peak RSS minus its RSS before the vectors existed, as a multiple of the vectors' bytes (the
vectors themselves count as 1x). Targets at 1.1M: <= 15 s, <= 2x. Each line also gives the torch threads and the
CPUs other processes used meanwhile (the machine's load at the time).

``--compare DIR`` runs the same in the same invocation with the norton source tree in DIR (e.g. an older commit
unpacked with ``git archive``), side by side: the two trees' processes alternate (a drift of the host's speed falls on
both alike) and each pair's ratio is printed beside the medians' ratio. It reports how far the two agree on the
neighbours.

Usage: ``python benchmarks/retrieval_bench.py [--sizes 100000,1100000] [--compare DIR] [--compare-sizes 100000]``
(1.1M x 768 is 3.4 GB of vectors: run under ``flock /work/heavy.lock`` on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM, PER_BATCH, CANDS = 768, 64, 192


def _rss(field: str) -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(field))


def vectors(n: int, seed: int = 0) -> np.ndarray:
    """Clustered vectors, as pooled video embeddings are: one of 2000 Gaussian centres plus noise (std 0.7). The noise
    is the sum of rows drawn from three 4096-row Gaussian banks (7e10 combinations per centre, so no two vectors
    coincide): gathers and adds instead of 0.85e9 normal draws at 1.1M (~1 s instead of ~13 s), and the banks are
    36 MB, so generating adds little to the peak."""
    import torch

    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(2000, DIM, generator=g)
    banks = torch.randn(3, 4096, DIM, generator=g) * (0.7 / 3 ** 0.5)
    out = np.empty((n, DIM), dtype=np.float32)
    rows = torch.from_numpy(out)
    noise = torch.empty(16384, DIM)  # reused: a fresh 48 MB temporary per chunk costs a page fault per 4 KB
    for a in range(0, n, 16384):
        b = min(n, a + 16384)
        torch.index_select(centres, 0, torch.randint(0, len(centres), (b - a,), generator=g), out=rows[a:b])
        for bank in banks:
            torch.index_select(bank, 0, torch.randint(0, len(bank), (b - a,), generator=g), out=noise[:b - a])
            rows[a:b] += noise[:b - a]
    return out


class OtherLoad:
    """CPU time used by every other process while the block runs (from /proc/stat, minus this process's own)."""

    def __enter__(self) -> OtherLoad:
        self.start = (self._busy(), time.process_time(), time.perf_counter())
        return self

    def __exit__(self, *exc: object) -> None:
        busy, cpu, wall = self.start
        self.cpus = ((self._busy() - busy) - (time.process_time() - cpu)) / (time.perf_counter() - wall)

    @staticmethod
    def _busy() -> float:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def gemm_speed() -> dict[str, float]:
    """GFLOP/s of one 2048^3 float32 torch product (best of 3; the round's products are torch's), at torch's
    thread count."""
    import torch

    a = torch.randn(2048, 2048)
    torch.mm(a, a)
    return {"gemm": 2 * 2048 ** 3 / min(_timed(lambda: torch.mm(a, a)) for _ in range(3)) / 1e9}


def product_flops(backend, queries: np.ndarray, recall_sample: int) -> float:  # noqa: ANN001
    """The float32 multiply-adds (x 2) the round's matrix products need at least, from the built index: the k-means
    (faiss's iterations over the training sample, all cells), assigning every vector to a cell, each cell's queries
    against its members (nprobe 1) and the recall's exact search. With the host's GEMM speed this gives the time no
    implementation of the same exact round can beat on it (the rest is selection, gathers and batching)."""
    cells = np.diff(backend.starts)
    per_cell = np.bincount(backend.cell_of[queries], minlength=len(cells))
    n, dim, nlist = len(backend.members), backend.vectors.shape[1], len(cells)
    kmeans = backend.config.kmeans_iterations * backend.build_info["train_vectors"] * nlist
    return 2.0 * dim * (kmeans + n * nlist + float((cells * per_cell).sum()) + n * min(recall_sample, n))


def _timed(f) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def _module(package_dir: Path, *candidates: str):  # noqa: ANN202 - a module
    """The first of ``norton_core.<candidate>`` that exists in the tree under test (the rooms moved once, and
    ``--compare`` may run a tree from before)."""
    import importlib

    for name in candidates:
        if (package_dir / (name.replace(".", "/") + ".py")).exists():
            return importlib.import_module(f"norton_core.{name}")
    return None


def child(n: int, found_path: str, recall_sample: int) -> None:
    import faiss  # noqa: F401 - libraries loaded before the baseline: their code is not the round's memory
    import torch
    from norton_retrieval import FaissIVF, FaissIVFConfig

    # numba and the compiled selection kernels are loaded once per process (a training run has them loaded by its
    # first round, or by the CPU Sinkhorn): timed apart from the round, as the imports above are
    import norton_core

    started = time.perf_counter()
    kernels = 0.0
    here = Path(norton_core.__file__).parent
    smallest_k = _module(here, "retrieval.smallest_k", "smallest_k")
    if smallest_k is not None:  # not in an older tree given to --compare
        warm = smallest_k.RunningSmallest(2, 1)
        warm.add(np.zeros((3, 2), dtype=np.float32), 0)
        warm.result()
    if (here / "retrieval" / "batch_draw.py").exists() or (here / "engine" / "batch_draw.py").exists():
        batching = _module(here, "retrieval.batches", "engine.batching")
        batching.neighbour_batches(np.zeros((1, 2), dtype=np.int64), np.zeros(1, dtype=np.int64), 1, 3,
                                   random.Random(0))
    kernels = time.perf_counter() - started

    plan_batches = _module(here, "retrieval.round", "engine.retrieval").plan_batches

    before = _rss("VmRSS")
    matrix = vectors(n)
    load = OtherLoad().__enter__()
    backend = FaissIVF(FaissIVFConfig(), seed=0)
    searches: list[tuple[np.ndarray, np.ndarray]] = []  # (queries, answers); the first is the round's search
    search = backend.search
    backend.search = lambda q, k: searches.append((q, search(q, k))) or searches[-1][1]  # type: ignore[method-assign]
    _, stats = plan_batches(matrix, np.arange(n, dtype=np.int64), backend, per_batch=PER_BATCH, num_cands=CANDS,
                            recall_sample=recall_sample, seed=0, epoch=1)
    times = {"build": stats["index_seconds"], "search": stats["search_seconds"],
             "batching": stats["batching_seconds"], "recall": stats["recall_seconds"]}
    recall, recall_se = stats["recall"], stats["recall_se"]
    load.__exit__()
    queries, found = searches[0]
    np.save(found_path, found)
    peak = _rss("VmHWM") - before
    build_info = getattr(backend, "build_info", {})
    flops = product_flops(backend, queries, recall_sample)
    del matrix, backend  # the speed probe runs after the round: its buffers must not count in the peak
    speed = gemm_speed()
    print(json.dumps({**times, "total": sum(times.values()), "peak_x": peak / (n * DIM * 4), "peak_gb": peak / 1e9,
                      "vectors_gb": n * DIM * 4 / 1e9, "recall_value": recall, "recall_se": recall_se,
                      "other_cpus": load.cpus, **speed,
                      "threads": torch.get_num_threads(), "kernels_load": kernels, "tflop": flops / 1e12,
                      **build_info}))


def run(tree: Path | None, n: int, found_path: str, recall_sample: int) -> dict:
    """One fresh process: the round's figures (``tree``: another norton source tree, or this one)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "plugins")])
    out = subprocess.run([sys.executable, __file__, "--child", str(n), found_path, str(recall_sample)],
                         capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"child failed ({tree or 'this tree'}, n={n}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def merged(results: list[dict]) -> dict:
    """Each figure's median over the processes (peak memory: the largest)."""
    merged = {key: statistics.median(r[key] for r in results) for key in results[0]
              if isinstance(results[0][key], float)}
    merged.update(peak_x=max(r["peak_x"] for r in results), peak_gb=max(r["peak_gb"] for r in results),
                  totals=[r["total"] for r in results], other_cpus_max=max(r["other_cpus"] for r in results),
                  threads=results[0]["threads"], train_vectors=results[0].get("train_vectors"))
    return merged


def show(label: str, n: int, r: dict) -> None:
    split = (f" (k-means on {r['train_vectors']:,} sampled vectors {r['kmeans_seconds']:.2f} s, assignment "
             f"{r['assign_seconds']:.2f} s, with the cell lists)") if r.get("train_vectors") else ""
    runs = ", ".join(f"{t:.2f}" for t in r["totals"])
    print(f"{label:>8} N={n:>9,}: build {r['build']:6.2f} s{split}  search {r['search']:6.2f} s  batching "
          f"{r['batching']:5.2f} s  recall {r['recall']:6.2f} s  total {r['total']:6.2f} s [{runs}]  | peak "
          f"{r['peak_gb']:5.2f} GB = {r['peak_x']:.2f}x the vectors ({r['vectors_gb']:.2f} GB) | {r['threads']} "
          f"threads, other processes used <= {r['other_cpus_max']:.2f} CPUs | 2048^3 product "
          f"{r['gemm']:.0f} GFLOP/s | compiled kernels loaded in {r.get('kernels_load', 0.0):.2f} s before the round",
          flush=True)
    if r.get("tflop"):
        floor = r["tflop"] * 1e3 / r["gemm"]
        print(f"{'':>8} products: {r['tflop']:.2f} TFLOP, {floor:.1f} s at this host's 2048^3 speed; the other "
              f"{r['total'] - floor:.1f} s are selection, gathers, batching and what runs below that speed",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1100000")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per size and tree (medians)")
    parser.add_argument("--compare", type=Path, help="another norton source tree, run side by side")
    parser.add_argument("--compare-sizes", default="100000",
                        help="sizes for --compare (the backend before this one peaked at 3.3x the vectors: 11 GB at 1.1M)")
    parser.add_argument("--recall-sample", type=int, help="queries of the recall check (default: the engine's)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1], int(args.child[2]))
        return
    if args.recall_sample is None:
        import norton_core

        tables = _module(Path(norton_core.__file__).parent, "recipe.tables", "engine.config")
        args.recall_sample = tables.RetrievalConfig().recall_sample
    print(f"recall check: {args.recall_sample} sampled queries", flush=True)
    compare_sizes = {int(s) for s in args.compare_sizes.split(",")} if args.compare else set()
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            mine_runs, old_runs = [], []
            for _ in range(args.repeats):
                # the two trees alternate, so that a drift of the host's speed (common here) falls on both alike
                if n in compare_sizes:
                    old_runs.append(run(args.compare, n, f"{tmp}/old.npy", args.recall_sample))
                mine_runs.append(run(None, n, f"{tmp}/new.npy", args.recall_sample))
            mine = merged(mine_runs)
            if n in compare_sizes:
                old = merged(old_runs)
                show("before", n, old)
            show("now", n, mine)
            if n in compare_sizes:
                a, b = np.load(f"{tmp}/old.npy"), np.load(f"{tmp}/new.npy")  # the two trees' neighbour lists
                same_sets = np.mean([set(x.tolist()) == set(y.tolist()) for x, y in zip(a, b, strict=True)])
                paired = [o["total"] / m["total"] for o, m in zip(old_runs, mine_runs, strict=True)]
                print(f"         speed-up {old['total'] / mine['total']:.2f}x (run by run, each before/now pair "
                      f"back to back: {', '.join(f'{x:.2f}' for x in paired)}), memory {old['peak_x']:.2f}x -> "
                      f"{mine['peak_x']:.2f}x; neighbour lists identical for {np.mean((a == b).all(1)):.1%} of queries, "
                      f"same sets for {same_sets:.1%}; recall vs exact {old['recall_value']:.3f} -> {mine['recall_value']:.3f} "
                      f"(+- {mine['recall_se']:.3f})")
            if n >= 1_000_000:
                ok = mine["total"] <= 15 and mine["peak_x"] <= 2
                print(f"         target at {n:,} (<= 15 s, <= 2x the vectors): {'met' if ok else 'NOT met'} "
                      f"({mine['total'] / 15:.2f} of the time, {mine['peak_x'] / 2:.2f} of the memory)")


if __name__ == "__main__":
    main()
