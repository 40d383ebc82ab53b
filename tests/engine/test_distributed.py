"""Two CPU processes under torchrun (gloo): a retrieval round embeds every video exactly once across ranks, and
the weights match one process that accumulates the same two batches per step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from norton_core.engine import checkpoint as ckpt
from norton_core.engine import state_files
from tests.engine.fakes import recipe_dict

DRIVER = Path(__file__).with_name("fakes.py")


def _recipe(tmp: Path, name: str, grad_accum: int) -> Path:
    raw = recipe_dict(tmp, run={"name": name}, train={"epochs": 2, "grad_accum": grad_accum, "checkpoint_every": 0})
    raw["retrieval"]["backend"] = {"name": "exact"}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_match_one_process_accumulating_two_batches(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NORTON_FAULT"}
    env.update(NORTON_LOAD_PLUGINS="norton", OMP_NUM_THREADS="1")
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(DRIVER),
         str(_recipe(tmp_path, "two", 1))], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(DRIVER), str(_recipe(tmp_path, "one", 2))], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]

    runs = tmp_path / "runs"
    events = [json.loads(x) for x in (runs / "two" / "metrics.jsonl").read_text().splitlines() if '"event"' in x]
    rounds = [e for e in events if e["event"] == "retrieval"]
    assert len(rounds) == 1 and rounds[0]["videos"] == 22 and rounds[0]["embedded_per_rank"] == [11, 11]
    a = ckpt.find_latest(runs / "one" / "checkpoints", log=lambda m: None)
    b = ckpt.find_latest(runs / "two" / "checkpoints", log=lambda m: None)
    assert a[0].name == b[0].name == "step-4"  # 2 epochs x (5 batches // 2 batches per step)
    wa, wb = state_files.bytes_to_tensors(a[1]["model.safetensors"]), state_files.bytes_to_tensors(b[1]["model.safetensors"])
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-5)
    losses = [[json.loads(x)["loss"] for x in (runs / r / "metrics.jsonl").read_text().splitlines()
               if '"event"' not in x] for r in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
