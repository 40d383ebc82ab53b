"""A cluster scheduler's preemption, as SLURM and Kubernetes do it: SIGTERM to every process of the job (its
process group) from an unrelated process, at a moment the job does not choose. Used by
``tests/engine/test_preempt.py`` and ``benchmarks/preempt_probe.py``.

One trial starts the fake run (``tests/engine/fakes.py``) in a session of its own with DataLoader workers, waits
until it has begun training (its "starting run" line: the preemption handler is installed by then), sleeps a random
delay and runs ``kill -TERM -- -PGID``. The run must then stop at a step boundary with that step's checkpoint
committed (exit 143) and no worker lost, or have finished before the signal came (exit 0).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs

from norton_core.engine import checkpoint as ckpt
from tests.engine.fakes import recipe_dict

DRIVER = Path(__file__).with_name("fakes.py")
STARTED = "norton: starting run"


@attrs.frozen
class Trial:
    """What one preemption did.

    :ivar delay: seconds between the run's start of training and the signal.
    :ivar outcome: ``preempted`` (exit 143, its step committed), ``finished`` (ended before the signal reached it),
        ``worker lost`` (exit 143 with its step committed, but a DataLoader worker died of the signal: the run was
        lucky to notice it at a step boundary), ``killed`` (any other end).
    :ivar stopped_at: the step the run said it stopped after (``preempted`` only).
    :ivar traceback: stderr holds a Python traceback.
    :ivar tail: the ends of stdout and stderr, to show what went wrong.
    """

    delay: float
    outcome: str
    returncode: int
    stopped_at: int | None
    traceback: bool
    tail: str


def write_recipe(tmp: Path, name: str, workers: int, videos: int = 120) -> Path:
    """The fake recipe with ``workers`` DataLoader workers: 2 epochs of ``videos // 4`` steps, a retrieval round
    before the second (new workers for each epoch and for the round), a checkpoint every 2 steps."""
    raw = recipe_dict(tmp, run={"name": name}, train={"num_workers": workers, "epochs": 2, "log_every": 10},
                      data={"videos": videos})
    raw["retrieval"]["backend"] = {"name": "exact"}  # keeps faiss out of the short-lived processes
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(raw))
    return path


def environment(thread_at_fork: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NORTON_FAULT", "NORTON_TEST_THREAD_AT_FORK")}
    env["NORTON_LOAD_PLUGINS"] = "norton"
    if thread_at_fork:
        env["NORTON_TEST_THREAD_AT_FORK"] = "1"
    return env


def preempt_once(recipe: Path, delay: float, thread_at_fork: bool = True, timeout: float = 180) -> Trial:
    """Start the run, signal its process group ``delay`` seconds after it starts training, wait for its end."""
    out, err = recipe.with_suffix(".out"), recipe.with_suffix(".err")
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, str(DRIVER), str(recipe)], env=environment(thread_at_fork),
                                stdout=stdout, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while STARTED not in out.read_text() and proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{recipe.stem}: did not start training within {timeout:.0f}s")
            time.sleep(0.02)
        time.sleep(delay)
        # an unrelated process (neither the run nor a fork of it) signals the whole group, as a scheduler does
        subprocess.run(["kill", "-TERM", "--", f"-{proc.pid}"], capture_output=True)
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text, errors = out.read_text(), err.read_text()
    stopped = re.search(r"stopped after step (\d+)", text)
    root = Path(json.loads(recipe.read_text())["run"]["output_dir"]) / recipe.stem / "checkpoints"
    if code == 143 and stopped and ckpt.read_latest(root) == f"step-{stopped.group(1)}":
        outcome = "worker lost" if "a DataLoader worker died" in text else "preempted"
    elif code == 0 and "complete=True" in text:
        outcome = "finished"
    else:
        outcome = "killed"
    return Trial(delay, outcome, code, int(stopped.group(1)) if stopped else None, "Traceback" in errors,
                 f"stdout: ...{text[-600:]}\nstderr: ...{errors[-1500:]}")


def resume(recipe: Path, thread_at_fork: bool = True) -> subprocess.CompletedProcess:
    """``--resume`` the run to its end."""
    return subprocess.run([sys.executable, str(DRIVER), str(recipe), "--resume"], env=environment(thread_at_fork),
                          capture_output=True, text=True, timeout=300, start_new_session=True)
