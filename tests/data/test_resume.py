"""A preparation killed with SIGKILL leaves no partial file under a final name and no manifest; the rerun yields
byte-identical shards and manifest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from norton_core.data.npyfile import read_header
from norton_core.data.prepare_how2 import PrepareOptions, prepare_how2
from norton_core.data.synthetic import SyntheticPaths

PREPARE = """
import sys
from pathlib import Path
from norton_core.data.prepare_how2 import PrepareOptions, prepare_how2
raw, out = Path(sys.argv[1]), Path(sys.argv[2])
prepare_how2(raw / "features", raw / "captions.json", {"train": raw / "train.lst"}, out,
             PrepareOptions(shard_size=8), workers=1, progress=False)
"""


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fault", ["shard_file_renamed:8", "shard_committed:2"])
def test_killed_prepare_resumes_to_identical_bytes(small_raw: SyntheticPaths, small_store_dir: Path,
                                                   tmp_path: Path, fault: str) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "NORTON_FAULT": fault}
    proc = subprocess.run([sys.executable, "-c", PREPARE, str(small_raw.root), str(out)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    split = out / "train"
    assert not (split / "manifest.json").exists()
    for path in split.glob("*.npy"):  # whatever is under a final name is complete
        dtype, shape, _, offset = read_header(path)
        assert path.stat().st_size == offset + int(np.prod(shape)) * dtype.itemsize, path
    assert any(p.name.endswith(".json") for p in (split / ".parts").iterdir())

    prepare_how2(small_raw.features, small_raw.captions, {"train": small_raw.lists["train"]}, out, PrepareOptions(shard_size=8),
                 workers=1, progress=False)
    reference = _tree(small_store_dir)
    resumed = _tree(split)
    assert sorted(resumed) == sorted(reference)
    assert all(resumed[name] == reference[name] for name in reference)


@pytest.mark.slow
def test_worker_processes_write_the_same_bytes(small_raw: SyntheticPaths, small_store_dir: Path, tmp_path: Path) -> None:
    out = prepare_how2(small_raw.features, small_raw.captions, {"train": small_raw.lists["train"]}, tmp_path,
                       PrepareOptions(shard_size=8), workers=2, progress=False)["train"]
    assert _tree(out) == _tree(small_store_dir)
