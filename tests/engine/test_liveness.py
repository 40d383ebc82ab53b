"""Two CPU ranks under torchrun: when one rank dies the other exits by itself with one line naming it, and when
torchrun itself is killed its ranks commit a checkpoint and stop instead of training on as orphans."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.fakes import recipe_dict

DRIVER = Path(__file__).with_name("fakes.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(DRIVER)]


def _recipe(tmp: Path, name: str, epochs: int) -> Path:
    raw = recipe_dict(tmp, run={"name": name}, train={"epochs": epochs, "checkpoint_every": 0, "log_every": 1})
    raw["retrieval"]["backend"] = {"name": "exact"}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(raw))
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NORTON_FAULT"}
    return {**env, "NORTON_LOAD_PLUGINS": "norton", "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow
@pytest.mark.distributed
def test_a_killed_rank_is_named_and_the_survivor_exits_by_itself(tmp_path):
    done = subprocess.run([*TORCHRUN, str(_recipe(tmp_path, "dies", 6))], capture_output=True, text=True,
                          timeout=300, env=_env(NORTON_FAULT="step:3", NORTON_FAULT_RANK="1"))
    out = done.stdout + done.stderr
    assert done.returncode != 0
    errors = [line for line in out.splitlines() if "norton: error:" in line]
    assert len(errors) == 1 and "rank 1 of 2 stopped" in errors[0] and "rank 0 stops too" in errors[0], out[-3000:]
    assert "[rank0]: Traceback" not in out and "Connection closed by peer" not in out, out[-3000:]
    # torchrun's summary: rank 0 ended with our exit code 2, not with torchrun's SIGTERM/SIGKILL after a timeout
    summary = out.split("Failures:")[-1] + out.split("Root Cause")[-1]
    assert re.search(r"rank\s*: 0 \(local_rank: 0\)\s*\n\s*exitcode\s*: 2 ", summary), summary[-2000:]


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_killing_torchrun_stops_its_ranks_with_a_checkpoint(tmp_path):
    log = open(tmp_path / "out.txt", "w")  # noqa: SIM115 - the child writes it until it ends
    launcher = subprocess.Popen([*TORCHRUN, str(_recipe(tmp_path, "orphan", 500))], stdout=log,
                                stderr=subprocess.STDOUT, env=_env())
    metrics = tmp_path / "runs" / "orphan" / "metrics.jsonl"
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if metrics.exists() and sum('"event"' not in x for x in metrics.read_text().splitlines()) >= 3:
                break
            assert launcher.poll() is None, (tmp_path / "out.txt").read_text()[-3000:]
            time.sleep(0.2)
        ranks = _children(launcher.pid)
        assert len(ranks) == 2, ranks
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        stop = time.monotonic() + 30
        while time.monotonic() < stop and any(_running(r) for r in ranks):
            time.sleep(0.1)
        assert not any(_running(r) for r in ranks), "ranks kept running after torchrun died"
    finally:
        for pid in [*ranks, launcher.pid]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()
    out = (tmp_path / "out.txt").read_text()
    assert out.count("PREEMPTED SIGTERM: stopped after step") == 2, out[-3000:]
    latest = (tmp_path / "runs" / "orphan" / "checkpoints" / "latest").read_text().strip()
    assert int(latest.removeprefix("step-")) >= 3
