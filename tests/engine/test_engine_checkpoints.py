"""Checkpoint commits interrupted at every fault point (simulated in-process: the point raises instead of killing):
recovery keeps a complete copy of the newest committed step, never deletes a complete checkpoint it cannot prove
superseded, prefers the newest complete checkpoint, and sets invalid ones aside instead of deleting them."""

from __future__ import annotations

import json

import pytest
import torch

from norton_core.engine import checkpoint as ckpt
from norton_core.engine import state_files
from norton_core.errors import CheckpointError


class Killed(BaseException):
    """Stands for SIGKILL: nothing after the fault point runs (not even except/finally blocks that catch
    Exception)."""


def _files(step: int, tag: str = "") -> dict[str, bytes]:
    return {"model.safetensors": state_files.tensors_to_bytes({"w": torch.full((3,), float(step))}),
            "state.json": json.dumps({"step": step, "tag": tag}).encode()}


def _kill_at(monkeypatch, point: str, nth: int = 1) -> None:
    seen = {"n": 0}

    def fault(name: str) -> None:
        if name == point:
            seen["n"] += 1
            if seen["n"] == nth:
                raise Killed(point)

    monkeypatch.setattr(ckpt, "fault_point", fault)


def _tag(files: dict[str, bytes]) -> str:
    return json.loads(files["state.json"])["tag"]


COMMIT_POINTS = ["ckpt_model", "ckpt_state", "ckpt_manifest", "ckpt_before_rename", "ckpt_replace_aside",
                 "ckpt_replace_renamed", "ckpt_after_rename", "ckpt_after_latest"]


@pytest.mark.parametrize("keep_last", [1, 2])
@pytest.mark.parametrize("point", COMMIT_POINTS)
def test_a_killed_re_save_never_loses_the_step(tmp_path, monkeypatch, point, keep_last):
    """Re-saving step 6 (as at an epoch end after a scheduled save at the same step), killed at each point: after
    recovery a complete step-6 exists, holding the old or the new content, and resume continues from it."""
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 4, _files(4), keep_last=keep_last, log=lambda m: None)
    ckpt.save_checkpoint(root, 6, _files(6, "old"), keep_last=keep_last, log=lambda m: None)
    _kill_at(monkeypatch, point)
    with pytest.raises(Killed):
        ckpt.save_checkpoint(root, 6, _files(6, "new"), keep_last=keep_last, log=lambda m: None)
    monkeypatch.undo()
    messages: list[str] = []
    ckpt.recover(root, log=messages.append)
    path, files = ckpt.find_latest(root, log=messages.append, set_aside=True)
    assert path == root / "step-6"
    # the committed step-6 stands until the old copy is moved aside; from then on the complete new copy wins
    assert _tag(files) == ("new" if COMMIT_POINTS.index(point) >= COMMIT_POINTS.index("ckpt_replace_aside")
                           else "old")
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # leftovers resolved
    assert ckpt.read_latest(root) == "step-6"


@pytest.mark.parametrize("point", ["ckpt_model", "ckpt_manifest", "ckpt_before_rename", "ckpt_after_rename",
                                   "ckpt_after_latest", "ckpt_purge"])
def test_a_killed_new_step_resumes_from_the_newest_complete_one(tmp_path, monkeypatch, point):
    root = tmp_path / "checkpoints"
    for step in (2, 4):
        ckpt.save_checkpoint(root, step, _files(step), keep_last=1, log=lambda m: None)
    _kill_at(monkeypatch, point)
    with pytest.raises(Killed):
        ckpt.save_checkpoint(root, 6, _files(6), keep_last=1, log=lambda m: None)
    monkeypatch.undo()
    ckpt.recover(root, log=lambda m: None)
    path, _ = ckpt.find_latest(root, log=lambda m: None, set_aside=True)
    # a staging copy whose manifest was written is complete: it is put in place rather than thrown away
    complete = point not in ("ckpt_model",)
    assert path == root / ("step-6" if complete else "step-4")
    assert ckpt.read_latest(root) == path.name
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_newest_complete_checkpoint_wins_over_an_older_latest(tmp_path):
    """Issue: a kill just after the step-6 rename leaves latest at step-4; resume must take step-6."""
    root = tmp_path / "checkpoints"
    for step in (4, 6):
        ckpt.save_checkpoint(root, step, _files(step), keep_last=5, log=lambda m: None)
    (root / "latest").write_text("step-4\n")
    messages: list[str] = []
    assert ckpt.find_latest(root, log=messages.append, set_aside=True)[0] == root / "step-6"
    assert ckpt.read_latest(root) == "step-6"
    (root / "latest").write_bytes(b"\xff\xfe step-\x80")  # not even UTF-8: a scan, never a crash
    assert ckpt.read_latest(root) is None
    assert ckpt.find_latest(root, log=messages.append)[0] == root / "step-6"


def test_a_corrupt_checkpoint_is_set_aside_and_never_deleted(tmp_path):
    """Resume skips a corrupt step-6 and moves it aside; reaching step 6 again and purging never remove it."""
    root = tmp_path / "checkpoints"
    for step in (4, 6):
        ckpt.save_checkpoint(root, step, _files(step), keep_last=5, log=lambda m: None)
    target = root / "step-6" / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[-3] ^= 0x01
    target.write_bytes(bytes(data))
    messages: list[str] = []
    path, _ = ckpt.find_latest(root, log=messages.append, set_aside=True)
    assert path == root / "step-4"
    assert (root / "step-6.corrupt-1" / "model.safetensors").read_bytes() == bytes(data)
    assert any("model.safetensors" in m and "sha256" in m for m in messages)
    assert any("step-6.corrupt-1" in m for m in messages)
    for step in (6, 8, 10):
        ckpt.save_checkpoint(root, step, _files(step), keep_last=1, log=lambda m: None)
    ckpt.recover(root, log=lambda m: None)
    assert (root / "step-6.corrupt-1").is_dir()
    assert [i.label for i in ckpt.list_checkpoints(root)] == ["step-10"]


def test_recovery_sets_aside_a_leftover_whose_files_do_not_match(tmp_path):
    """A staging copy with a manifest but a damaged file is neither put in place nor deleted."""
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 4, _files(4), keep_last=5, log=lambda m: None)
    staging = root / ".staging-step-6-1-abcd"
    ckpt.commit_dir(root, "step-6", _files(6), {"step": 6}, points="ckpt").rename(staging)
    (staging / "state.json").write_text("{}")
    ckpt.recover(root, log=lambda m: None)
    assert not (root / "step-6").exists()
    assert (root / "staging-step-6-1-abcd.corrupt-1").is_dir()


BEST_POINTS = ["best_model", "best_selection", "best_manifest", "best_before_rename", "best_replace_aside",
               "best_replace_renamed", "best_after_rename"]


@pytest.mark.parametrize("point", BEST_POINTS)
def test_a_killed_best_replacement_leaves_a_complete_best(tmp_path, monkeypatch, point):
    root = tmp_path / "checkpoints"
    ckpt.save_best(root, 4, _files(4), {"metric": "val_loss", "value": 2.0, "step": 4, "split": "val"})
    _kill_at(monkeypatch, point)
    with pytest.raises(Killed):
        ckpt.save_best(root, 6, _files(6), {"metric": "val_loss", "value": 1.5, "step": 6, "split": "val"})
    monkeypatch.undo()
    ckpt.recover(root, log=lambda m: None)
    files = ckpt.read_checkpoint(root / "best")
    selection = json.loads(files["selection.json"])
    assert selection["step"] == json.loads(files["state.json"])["step"] in (4, 6)
    infos = {i.label: i for i in ckpt.list_checkpoints(root)}
    assert infos["best"].selection == selection and infos["best"].step == selection["step"]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_single_files_are_checked_against_the_manifest(tmp_path):
    root = tmp_path / "checkpoints"
    path = ckpt.save_checkpoint(root, 2, _files(2), keep_last=5, log=lambda m: None)
    assert ckpt.read_checkpoint_file(path / "model.safetensors") == _files(2)["model.safetensors"]
    data = bytearray((path / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x10
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 differs"):
        ckpt.read_checkpoint_file(path / "model.safetensors")
    loose = tmp_path / "weights.safetensors"
    loose.write_bytes(b"x")
    assert ckpt.read_checkpoint_file(loose) == b"x"  # converted weights: no manifest to check against


def test_evaluate_refuses_a_checkpoint_with_one_flipped_byte(tmp_path):
    """Issue 10 #4: `norton evaluate` loads weights through the manifest check."""
    from engine_fakes import FakeModel

    from norton_core.evaluation.cli import load_weights

    model = FakeModel(FakeModel.Config())
    files = {"model.safetensors": state_files.tensors_to_bytes(model.state_dict()), "state.json": b"{}"}
    path = ckpt.save_checkpoint(tmp_path / "checkpoints", 3, files, keep_last=2, log=lambda m: None)
    load_weights(FakeModel(FakeModel.Config()), path / "model.safetensors")
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-5] ^= 0x01  # a low mantissa bit of the last weight: a silent change without the check
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 differs from the manifest"):
        load_weights(FakeModel(FakeModel.Config()), path / "model.safetensors")
