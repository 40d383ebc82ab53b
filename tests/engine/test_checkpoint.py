"""Checkpoint commits interrupted at every fault point (simulated in-process: the point raises instead of killing):
recovery keeps a complete copy of the newest committed step, never deletes a complete checkpoint it cannot prove
superseded, prefers the newest complete checkpoint, and sets invalid ones aside instead of deleting them."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from norton_core.engine import checkpoint as ckpt
from norton_core.engine import resume, state_files
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
    from norton_core.evaluation.cli import load_weights
    from tests.engine.fakes import FakeModel

    model = FakeModel(FakeModel.Config())
    files = {"model.safetensors": state_files.tensors_to_bytes(model.state_dict()), "state.json": b"{}"}
    path = ckpt.save_checkpoint(tmp_path / "checkpoints", 3, files, keep_last=2, log=lambda m: None)
    load_weights(FakeModel(FakeModel.Config()), path / "model.safetensors")
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-5] ^= 0x01  # a low mantissa bit of the last weight: a silent change without the check
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 differs from the manifest"):
        load_weights(FakeModel(FakeModel.Config()), path / "model.safetensors")



def test_commit_writes_manifest_latest_and_keeps_last_n(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        path = ckpt.save_checkpoint(root, step, _files(step), keep_last=2, log=lambda m: None)
    assert path == root / "step-4"
    assert (root / "latest").read_text().strip() == "step-4"
    assert [p.name for _, p in ckpt.committed_steps(root)] == ["step-3", "step-4"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "state.json"}
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    found, files = ckpt.find_latest(root, log=lambda m: None)
    assert found == path and state_files.bytes_to_tensors(files["model.safetensors"])["w"][0] == 4.0


@pytest.mark.parametrize("damage", ["truncate1", "truncate_half", "empty", "flip", "no_manifest", "missing_file"])
def test_damaged_newest_checkpoint_falls_back_to_previous(tmp_path, damage):
    """B1-B3: a damaged newest checkpoint is refused with the file named, skipped by auto-resume, not deleted."""
    root = tmp_path / "checkpoints"
    for step in (1, 2):
        ckpt.save_checkpoint(root, step, _files(step), keep_last=5, log=lambda m: None)
    target = root / "step-2" / "model.safetensors"
    data = target.read_bytes()
    if damage == "truncate1":
        target.write_bytes(data[:-1])
    elif damage == "truncate_half":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "flip":
        target.write_bytes(data[:-2] + bytes([data[-2] ^ 0xFF]) + data[-1:])
    elif damage == "no_manifest":
        (root / "step-2" / "manifest.json").unlink()
    else:
        target.unlink()
    with pytest.raises(CheckpointError) as err:
        ckpt.read_checkpoint(root / "step-2")
    assert "step-2" in str(err.value)
    messages: list[str] = []
    found, _ = ckpt.find_latest(root, log=messages.append)
    assert found == root / "step-1"
    assert any("skipping checkpoint step-2" in m for m in messages)
    assert (root / "step-2").exists()


def test_latest_pointer_to_missing_dir_falls_back_to_scan(tmp_path):
    """B4."""
    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 5, _files(5), keep_last=5, log=lambda m: None)
    (root / "latest").write_text("step-9\n")
    assert ckpt.find_latest(root, log=lambda m: None)[0] == root / "step-5"


def test_retention_never_follows_symlinks_and_ignores_foreign_names(tmp_path):
    """B7/B8: only our own step-<N> entries are purged; a symlink is unlinked, its target untouched."""
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    root = tmp_path / "checkpoints"
    root.mkdir()
    (root / "step-0").symlink_to(outside)
    (root / "notes").mkdir()
    for step in (1, 2, 3):
        ckpt.save_checkpoint(root, step, _files(step), keep_last=1, log=lambda m: None)
    assert (outside / "keep.txt").exists()
    assert (root / "notes").exists()
    assert [p.name for _, p in ckpt.committed_steps(root)] == ["step-3"]


def test_staging_leftovers_are_cleaned_and_reported(tmp_path):
    """A2: a kill mid-write leaves only hidden staging dirs, which the next start removes and reports."""
    root = tmp_path / "checkpoints"
    (root / ".staging-step-7-123-abcd").mkdir(parents=True)
    (root / ".staging-step-7-123-abcd" / "model.safetensors").write_bytes(b"partial")
    messages: list[str] = []
    assert ckpt.recover(root, log=messages.append) == ["removed .staging-step-7-123-abcd"]
    assert messages and not any(root.iterdir())


def test_npy_loading_refuses_pickled_objects(tmp_path):
    """J3/E5: candidate batches are plain int64 .npy; an object array (a pickle) is refused with no side effect."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import io

    buf = io.BytesIO()
    np.save(buf, np.array([Evil()], dtype=object), allow_pickle=True)
    with pytest.raises(CheckpointError):
        state_files.load_npy(buf.getvalue())
    assert not marker.exists()
    good = state_files.npy_bytes(np.arange(6, dtype=np.int64).reshape(2, 3))
    assert good.startswith(b"\x93NUMPY")
    assert state_files.load_npy(good).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_optimizer_state_round_trips_through_safetensors():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.9, 0.98))
    for _ in range(3):
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    tensors, groups = state_files.optimizer_to_tensors(opt)
    data = state_files.tensors_to_bytes(tensors)
    json.dumps(groups)
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    opt2 = torch.optim.Adam(twin.parameters(), lr=0.1)
    state_files.optimizer_from_tensors(opt2, state_files.bytes_to_tensors(data), groups)
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (twin, opt2)):
        m(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(model.weight, twin.weight)


def test_recipe_changes_need_permission_per_key():
    old = {"train": {"lr": 1e-3, "epochs": 2}, "model": {"hidden": 8}, "source": "a.toml"}
    new = {"train": {"lr": 1e-4, "epochs": 3}, "model": {"hidden": 8}, "source": "b.toml"}
    changes, problems = resume.recipe_changes(old, new, ())
    assert changes == [] and problems == ["train.epochs: 2 -> 3", "train.lr: 0.001 -> 0.0001"]
    changes, problems = resume.recipe_changes(old, new, ("train.lr",))
    assert [c["key"] for c in changes] == ["train.lr"] and problems == ["train.epochs: 2 -> 3"]
    changes, problems = resume.recipe_changes(old, new, ("train",))
    assert len(changes) == 2 and problems == []


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".."])
def test_run_names_cannot_escape_the_output_dir(name):
    with pytest.raises(CheckpointError):
        ckpt.check_run_name(name)


def test_run_lock_refuses_a_second_holder(tmp_path):
    first = ckpt.RunLock(tmp_path)
    first.acquire()
    with pytest.raises(CheckpointError, match="locked by pid"):
        ckpt.RunLock(tmp_path).acquire()
    first.release()
    second = ckpt.RunLock(tmp_path)
    second.acquire()
    second.release()


def test_forked_children_do_not_keep_the_run_lock(tmp_path):
    """H1: a DataLoader worker outliving a SIGKILLed trainer must not keep the run locked."""
    import os

    lock = ckpt.RunLock(tmp_path)
    lock.acquire()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the lock descriptor must already be closed
        try:
            os.fstat(lock.fd)
            os._exit(1)
        except OSError:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    with pytest.raises(CheckpointError):  # the parent still holds it
        ckpt.RunLock(tmp_path).acquire()
    lock.release()
    assert os.waitstatus_to_exitcode(status) == 0


def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """H3: ENOSPC while writing a checkpoint names the error and the file; latest, and every older checkpoint, stay."""
    import errno as errno_mod

    from norton_core.errors import CheckpointError

    root = tmp_path / "checkpoints"
    ckpt.save_checkpoint(root, 1, {"model.safetensors": b"a" * 10, "state.json": b'{"step": 1}'}, keep_last=1,
                         log=lambda m: None)
    real = ckpt.write_durable

    def full_disk(path, data):
        if path.name == "state.json":
            raise OSError(errno_mod.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(ckpt, "write_durable", full_disk)
    with pytest.raises(CheckpointError, match=r"ENOSPC .*state\.json.*\(step-1\) is intact"):
        ckpt.save_checkpoint(root, 2, {"model.safetensors": b"b" * 10, "state.json": b'{"step": 2}'}, keep_last=1,
                             log=lambda m: None)
    assert (root / "latest").read_text().strip() == "step-1"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-1"]
    assert ckpt.read_checkpoint(root / "step-1")["model.safetensors"] == b"a" * 10


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "sparse"])
def test_a_checkpoint_file_that_is_a_fifo_a_device_or_sparse_is_refused_before_reading(tmp_path, kind):
    """rng.json replaced by a FIFO hung the resume; /dev/zero or a sparse 20 GB file was read whole."""
    import os
    import time

    files = {**_files(4), "rng.json": b'[{"python": 1}]'}
    path = ckpt.save_checkpoint(tmp_path, 4, files, keep_last=2, log=lambda *_: None)
    rng = path / "rng.json"
    rng.unlink()
    if kind == "fifo":
        os.mkfifo(rng)
    elif kind == "dev_zero":
        rng.symlink_to("/dev/zero")
    else:
        with open(rng, "wb") as fh:
            fh.truncate(20 * 1024**3)
    began = time.monotonic()
    expected = {"fifo": "is a FIFO (named pipe), not a regular file",
                "dev_zero": "is a character device, not a regular file",
                "sparse": "21474836480 bytes, more than the 15 bytes limit for a checkpoint file (the size its "
                          "manifest records)"}[kind]
    with pytest.raises(CheckpointError) as info:
        ckpt.read_checkpoint(path)
    assert f"{rng}: {expected}" in str(info.value)
    warnings: list[str] = []
    assert ckpt.find_latest(tmp_path, warnings.append) is None  # skipped with a warning, never waited on
    assert expected in warnings[0]
    assert time.monotonic() - began < 5


def test_a_fifo_as_latest_or_manifest_is_not_waited_on(tmp_path):
    import os

    path = ckpt.save_checkpoint(tmp_path, 4, _files(4), keep_last=2, log=lambda *_: None)
    (tmp_path / "latest").unlink()
    os.mkfifo(tmp_path / "latest")
    assert ckpt.read_latest(tmp_path) is None
    (path / "manifest.json").unlink()
    os.mkfifo(path / "manifest.json")
    with pytest.raises(CheckpointError, match=r"manifest\.json: is a FIFO"):
        ckpt.read_checkpoint(path)


# ------------------------------------------------------------------------------------------------------------------
# the step a checkpoint holds: its name, its manifest and its state.json agree
# ------------------------------------------------------------------------------------------------------------------


def rehash(path, name: str, data: bytes) -> None:
    """Replace one file of a committed checkpoint and update its manifest to match: damage no hash detects."""
    (path / name).write_bytes(data)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("state", "reason"), [
    ({"step": -5, "epoch": 2}, r"step -5 is not a non-negative integer"),
    ({"step": 10**30, "epoch": 2}, r"holds step 10{30} but its manifest says step 6"),
    ({"step": "6", "epoch": 2}, r"step '6' is not a non-negative integer"),
    ({"step": 6, "epoch": 0}, r"epoch 0; epochs count from 1"),
    ({"step": 6, "epoch": 2.5}, r"epoch 2.5 is not a non-negative integer"),
    ({"step": 6, "epoch": 2, "cursor": -1}, r"cursor -1 is not a non-negative integer"),
    ({"step": 6, "epoch": 2, "validated_step": 7}, r"validated_step 7 is not a step from -1 to 6"),
    ({"epoch": 2}, r"holds step \(none\) but its manifest says step 6"),
])
def test_a_state_json_that_disagrees_or_is_out_of_range_is_invalid(tmp_path, state, reason):
    root = tmp_path / "checkpoints"
    path = ckpt.save_checkpoint(root, 6, _files(6), keep_last=2, log=lambda m: None)
    rehash(path, "state.json", json.dumps(state).encode())
    with pytest.raises(CheckpointError, match=rf"^{path / 'state.json'}: {reason}"):
        ckpt.read_checkpoint(path)


def test_a_copy_under_a_higher_name_is_invalid_and_never_the_newest(tmp_path):
    """``cp -r step-6 step-100``: its manifest and state.json hold step 6. The resume's search skips it (moving it
    aside, never deleting it) and finds the real newest, step-10; listings leave it out."""
    import shutil

    root = tmp_path / "checkpoints"
    for step in (6, 8, 10):
        ckpt.save_checkpoint(root, step, _files(step), keep_last=3, log=lambda m: None)
    shutil.copytree(root / "step-6", root / "step-100")
    with pytest.raises(CheckpointError, match=r"step-100: its name says step 100 but its manifest holds step 6"):
        ckpt.read_checkpoint(root / "step-100")
    assert [c.label for c in ckpt.list_checkpoints(root)] == ["step-6", "step-8", "step-10"]
    messages: list[str] = []
    path, files = ckpt.find_latest(root, log=messages.append, set_aside=True)
    assert path.name == "step-10" and json.loads(files["state.json"])["step"] == 10
    assert any("skipping checkpoint step-100: " in m for m in messages)
    assert (root / "step-100.corrupt-1" / "manifest.json").is_file() and not (root / "step-100").exists()


def test_retention_never_removes_a_newer_checkpoint_nor_a_stale_copy(tmp_path):
    """A run that continued from step-6 while step-8 and step-10 exist: saving step-7 with keep_last = 1 keeps
    them (and says so once); a stale ``step-100`` (a copy of step-6) is neither counted nor deleted."""
    import shutil

    root = tmp_path / "checkpoints"
    for step in (4, 6, 8, 10):
        ckpt.save_checkpoint(root, step, _files(step), keep_last=5, log=lambda m: None)
    shutil.copytree(root / "step-6", root / "step-100")
    messages: list[str] = []
    ckpt.save_checkpoint(root, 7, _files(7), keep_last=2, log=messages.append)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-10", "step-100", "step-6", "step-7", "step-8"]
    ckpt.save_checkpoint(root, 9, _files(9), keep_last=2, log=messages.append)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-10", "step-100", "step-8", "step-9"]
    assert sum("keeping step-10: it is newer than step-7" in m for m in messages) == 1
    assert sum("keeping step-100 out of retention" in m for m in messages) == 1
