"""``norton study FILE --jobs N``: a study's stages in N worker processes.

Stages that do not depend on each other (another variant or seed, or two arms of one cell) run at the same time;
an arm starts once its cell's first stage is finished, so that stage is trained once while its arms wait. Each
worker is a fresh (spawned) process that trains one stage after another with :func:`.runner.run_stage`, exactly as
a one-process study does, so finished stages are reused and interrupted ones resumed in the same way and the
records (and so the report) are the same.

Where a stage runs: with several GPUs visible and stages that may use CUDA (``run.device`` ``auto`` or ``cuda``),
each worker gets one GPU of its own (``CUDA_VISIBLE_DEVICES``) and at most one worker runs per GPU. Each worker
gets ``cpus // workers`` torch (and faiss) threads; a recipe that sets ``run.threads`` keeps its own number (said
when the workers together would use more threads than there are CPUs).

Stopping: SIGTERM (a cluster's preemption) or Ctrl-C asks every running stage to commit a checkpoint at its next
step and stop, as one process does; a stage that fails stops the others the same way, and its error is reported.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TextIO

from norton_core import errors
from norton_core.errors import NortonError
from norton_core.study.runner import Stage, run_stage

#: set in a worker when it was asked to stop between two stages
_stop_requested = False


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def gpu_ids() -> list[str]:
    """The CUDA devices visible to this process, as ``CUDA_VISIBLE_DEVICES`` entries for the workers."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA is no GPU
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return names[:count] if len(names) >= count else [str(i) for i in range(count)]


class _Prefixed:
    """A text stream that starts every line with ``prefix`` (two stages' logs side by side stay readable)."""

    def __init__(self, stream: TextIO, prefix: str) -> None:
        self.stream, self.prefix, self.at_start = stream, prefix, True

    def write(self, text: str) -> int:
        for part in text.splitlines(keepends=True):
            if self.at_start:
                self.stream.write(self.prefix)
            self.stream.write(part)
            self.at_start = part.endswith("\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False  # no progress bars drawn over another stage's lines

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _on_sigterm(signum: int, frame: Any) -> None:
    global _stop_requested
    _stop_requested = True


def _init_worker(threads: int, gpus: Any) -> None:
    """A worker's start: its GPU (before CUDA is initialised), its threads, SIGTERM noted between stages (during a
    stage the engine's own handler commits a checkpoint) and Ctrl-C left to the parent, which relays it as SIGTERM."""
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if threads:
        import torch

        torch.set_num_threads(threads)
        try:
            import faiss
        except ImportError:
            pass
        else:
            faiss.omp_set_num_threads(threads)


def _work(stage: Stage, first: dict[str, Any] | None) -> tuple[str, Any]:
    """Train one stage in a worker: ``("ok", record)`` or ``("error", (error class name, lines))``."""
    from norton_core.plugin.manager import default_plugins

    if _stop_requested:
        return "error", ("Preempted", [f"{stage.title}: not started (asked to stop)"])
    out, err = sys.stdout, sys.stderr
    prefix = f"[{stage.label} seed {stage.seed} {stage.name}] "
    sys.stdout, sys.stderr = _Prefixed(out, prefix), _Prefixed(err, prefix)
    try:
        return "ok", run_stage(stage, default_plugins(), lambda m: print(m, flush=True), first)
    except NortonError as exc:
        return "error", (type(exc).__name__, exc.lines())
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = out, err


def _error(name: str, lines: list[str]) -> NortonError:
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, NortonError)):
        cls = NortonError
    return cls(lines[0] if len(lines) == 1 else None, problems=lines)


def placement(stages: list[Stage], jobs: int, log: Callable[[str], None]) -> tuple[int, int, list[str] | None]:
    """``(workers, threads per worker (0: the recipe's own), GPU ids per worker or None)``; says what it decided."""
    gpus = gpu_ids() if any(s.device in ("auto", "cuda") for s in stages) else []
    workers, ids = jobs, None
    if len(gpus) > 1:
        workers, ids = min(jobs, len(gpus)), gpus[:min(jobs, len(gpus))]
        log(f"norton study: --jobs {jobs}: {workers} stages at a time, one per GPU ({', '.join(ids)})"
            + (f"; {len(gpus)} GPUs visible, so not {jobs}" if jobs > len(gpus) else ""))
    elif len(gpus) == 1:
        log(f"norton study: --jobs {jobs}: one GPU visible: up to {jobs} stages share it")
    cpus = cpu_count()
    share = max(1, cpus // workers)
    pinned = max((s.threads for s in stages), default=0)
    if pinned and pinned * workers > cpus:
        log(f"norton study: --jobs {jobs}: the recipes set run.threads = {pinned}, so {workers} stages at a time use "
            f"{pinned * workers} threads on {cpus} CPUs; --set run.threads={share} gives each its share")
    return workers, share, ids


def run_parallel(stages: list[Stage], jobs: int, log: Callable[[str], None]) -> dict[Any, dict[str, Any]]:
    """Train ``stages`` (in :func:`.runner.plan` order) in ``jobs`` processes; returns the records in plan order.
    Raises the first stage's error (others are stopped at their next step and resume next time)."""
    workers, share, ids = placement(stages, jobs, log)
    ctx = mp.get_context("spawn")  # a fresh interpreter: no inherited torch threads, CUDA state or locks
    gpus = None
    if ids is not None:
        gpus = ctx.Queue()
        for gpu in ids:
            gpus.put(gpu)
    todo: list[Stage] = list(stages)
    done: dict[Any, Any] = {}
    running: dict[Future[tuple[str, Any]], Stage] = {}
    failures: list[NortonError] = []
    stopping = False
    n = 0

    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(share, gpus)) as pool:
        def stop(why: str) -> None:
            nonlocal stopping
            if not stopping:
                log(f"norton study: {why}: the running stages commit a checkpoint and stop")
            stopping = True
            # the executor keeps its processes in a private map; without it the workers stop at SIGTERM of the group
            for proc in list(getattr(pool, "_processes", {}).values()):
                if proc.is_alive() and proc.pid is not None:
                    os.kill(proc.pid, signal.SIGTERM)

        previous = signal.signal(signal.SIGTERM, lambda *_: stop("SIGTERM")) if _main_thread() else None
        try:
            while True:
                for stage in list(todo):
                    if stopping or len(running) >= workers:
                        break
                    if stage.after is not None and (stage.label, stage.seed, stage.after) not in done:
                        continue  # its first stage is still training
                    todo.remove(stage)
                    n += 1
                    log(f"norton study: [{n}/{len(stages)}] {stage.title}")
                    first = done.get((stage.label, stage.seed, stage.after)) if stage.after else None
                    running[pool.submit(_work, stage, first)] = stage
                if not running:
                    break
                try:
                    finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    if stopping:
                        raise
                    stop("interrupted")
                    continue
                for future in finished:
                    stage = running.pop(future)
                    try:
                        status, value = future.result()  # an exception that is no NortonError is a bug: a traceback
                    except BrokenProcessPool:
                        raise errors.TrainingError(
                            f"{stage.title}: its worker process died (killed, or out of memory); finished cells are "
                            "kept: run the same `norton study` command again to continue") from None
                    if status == "ok":
                        done[stage.key] = value
                        log(f"norton study: {stage.title}: finished")
                    else:
                        failures.append(_error(*value))
                        log(f"norton study: {stage.title}: {failures[-1].lines()[0]}")
                        stop("a stage failed")
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    real = [f for f in failures if not isinstance(f, errors.Preempted)]
    if real:
        raise real[0]
    if stopping:
        raise errors.Preempted(f"stopped: {len(failures)} running stage(s) committed a checkpoint; run the same "
                               "`norton study` command again to continue")
    return {s.key: done[s.key] for s in stages if s.key in done}


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
