"""Probe: preemption as a cluster scheduler does it, many times.

    python benchmarks/preempt_probe.py [--trials 20] [--workers 1 2 3] [--window 2.5] [--parallel 2] [--seed N]
                                       [--no-thread-at-fork]

Each trial starts a small training run (the engine tests' fake components, 2 epochs of 30 steps, a retrieval
round, a checkpoint every 2 steps) with DataLoader workers in a session of its own, waits until it has started
training, sleeps a random delay in ``[0, --window]`` seconds and sends SIGTERM to its whole process group from an
unrelated process (``kill -TERM -- -PGID``, as SLURM and Kubernetes do). A run that stopped is then resumed with
``--resume`` to its end.

By default each worker also has an idle thread born at fork, before ``worker_init_fn`` runs (as the thread pools of
some torch builds have); ``--no-thread-at-fork`` leaves the workers as this host's torch makes them.

Prints one line per trial and the table: trials; survived (stopped at a step boundary with that step committed,
no DataLoader worker lost and no traceback, and the resume continued from the committed step to the end; or
finished before the signal); clean exit (exit 143 or 0, no traceback); traceback; worker lost (a worker died of
the signal, and the run only noticed it at a step boundary); killed (any other end).
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.engine import scheduler  # noqa: E402


def one(tmp: Path, index: int, workers: int, delay: float, thread_at_fork: bool) -> dict:
    recipe = scheduler.write_recipe(tmp, f"trial{index:03d}", workers)
    trial = scheduler.preempt_once(recipe, delay, thread_at_fork)
    resumed_ok: bool | None = None  # None: nothing to resume
    if trial.outcome in ("preempted", "worker lost"):
        proc = scheduler.resume(recipe, thread_at_fork)
        at = re.search(r"resumed at step (\d+)", proc.stdout)
        resumed_ok = (proc.returncode == 0 and "complete=True" in proc.stdout and at is not None
                      and int(at.group(1)) == trial.stopped_at)
    return {"index": index, "workers": workers, "trial": trial, "resumed_ok": resumed_ok}


def survived(result: dict) -> bool:
    """Stopped cleanly at a step boundary and resumed from it to the end, or finished before the signal."""
    trial = result["trial"]
    if trial.traceback:
        return False
    return trial.outcome == "finished" or (trial.outcome == "preempted" and bool(result["resumed_ok"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3], help="cycled over the trials")
    ap.add_argument("--window", type=float, default=2.5, help="the signal comes 0 to this many s into training")
    ap.add_argument("--parallel", type=int, default=2, help="trials run at once")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--no-thread-at-fork", dest="thread_at_fork", action="store_false")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)
    plans = [(i, args.workers[i % len(args.workers)], rng.uniform(0, args.window)) for i in range(args.trials)]
    print(f"preempt probe: {args.trials} trials, workers {args.workers}, window {args.window}s, seed {seed}, "
          f"thread born at fork: {args.thread_at_fork}")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda p: one(Path(tmp), *p, args.thread_at_fork), plans))
    for r in results:
        t = r["trial"]
        print(f"  trial {r['index']:3d}: {r['workers']} workers, signal at {t.delay:4.2f}s -> {t.outcome:11s} "
              f"exit {t.returncode:4d}" + (f", stopped after step {t.stopped_at}" if t.stopped_at is not None else "")
              + {None: "", True: ", resumed to the end", False: ", resume FAILED"}[r["resumed_ok"]]
              + (", TRACEBACK" if t.traceback else ""))
    trials = [r["trial"] for r in results]
    row = {
        "trials": len(trials),
        "survived": sum(survived(r) for r in results),
        "clean exit": sum(t.returncode in (0, 143) and not t.traceback for t in trials),
        "traceback": sum(t.traceback for t in trials),
        "worker lost": sum(t.outcome == "worker lost" for t in trials),
        "killed": sum(t.outcome == "killed" for t in trials),
    }
    print()
    print(" | ".join(f"{k:>{max(len(k), 5)}}" for k in row))
    print(" | ".join(f"{v:>{max(len(k), 5)}}" for k, v in row.items()))
    print(f"({time.perf_counter() - began:.0f}s)")
    return 0 if row["survived"] == len(trials) else 1


if __name__ == "__main__":
    sys.exit(main())
