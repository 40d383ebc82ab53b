"""Crafted run files end in one clear line naming the file, or (for a garbled ``latest``) in the fallback scan."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest

from norton_core.engine import checkpoint as ckpt
from norton_core.errors import CheckpointError
from tests.engine.fakes import run_fake as _run


def test_a_non_utf8_latest_pointer_falls_back_to_the_scan(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2):
        ckpt.save_checkpoint(root, step, {"state.json": json.dumps({"step": step}).encode()}, keep_last=5, log=lambda m: None)
    (root / "latest").write_bytes(b"\xff\xfe\x80step-\xc3")
    messages: list[str] = []
    found, _ = ckpt.find_latest(root, log=messages.append)
    assert found == root / "step-2"
    assert any("does not name a checkpoint" in m and "scanning" in m for m in messages), messages


def test_resume_with_a_garbled_latest_continues_from_the_newest(tmp_path, plugins, capsys):
    _run(tmp_path, plugins, train={"max_steps": 2})
    root = tmp_path / "runs" / "fake" / "checkpoints"
    (root / "latest").write_bytes(b"\x80\x81\x82\xff")
    result = _run(tmp_path, plugins, resume=True, allow_recipe_change=("train.max_steps",), train={"max_steps": 3})
    assert result.step == 3
    out = capsys.readouterr().out
    assert "does not name a checkpoint" in out and f"resuming from {root / 'step-2'}" in out


def _pickle_bytes() -> bytes:
    return pickle.dumps({"weight": [1.0, 2.0]})


def test_a_pickle_named_safetensors_as_init_from_is_one_error(tmp_path, plugins):
    fake = tmp_path / "weights.safetensors"
    fake.write_bytes(_pickle_bytes())
    with pytest.raises(CheckpointError, match=rf"^{fake}: not a readable safetensors file .*it is a pickle"):
        _run(tmp_path, plugins, run={"init_from": str(fake)})


def test_a_rehashed_non_safetensors_model_file_is_one_error_on_resume(tmp_path, plugins):
    _run(tmp_path, plugins, train={"max_steps": 2})
    step = tmp_path / "runs" / "fake" / "checkpoints" / "step-2"
    data = _pickle_bytes()
    (step / "model.safetensors").write_bytes(data)
    manifest = json.loads((step / "manifest.json").read_text())
    manifest["files"]["model.safetensors"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (step / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=rf"^{step / 'model.safetensors'}: not a readable safetensors file"):
        _run(tmp_path, plugins, resume=True, allow_recipe_change=("train.max_steps",), train={"max_steps": 3})
