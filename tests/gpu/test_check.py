"""The GPU check script skips cleanly (exit 0, one "skipped: no CUDA" line) on a machine without CUDA."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: run tests/gpu/check.sh itself")
def test_gpu_check_skips_without_cuda() -> None:
    proc = subprocess.run(["bash", str(ROOT / "tests" / "gpu" / "check.sh")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("skipped: no CUDA"), proc.stdout
