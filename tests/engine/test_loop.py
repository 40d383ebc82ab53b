"""In-process runs of the engine with tiny fake components: the run-directory contract, resume rules, numerical
health, the lock, safe weight loading and lifecycle hooks."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from norton_core import hookimpl
from norton_core.engine import checkpoint as ckpt
from norton_core.engine import state_files
from norton_core.engine.loop import learning_rate
from norton_core.errors import CheckpointError, DataError, TrainingError
from norton_core.recipe.tables import TrainConfig
from tests.engine.fakes import run_fake as _run


def _steps(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if '"event"' not in line]


def test_run_directory_contract(tmp_path, plugins):
    result = _run(tmp_path, plugins)
    run_dir = tmp_path / "runs" / "fake"
    assert result.complete and result.run_dir == run_dir and result.step == 15  # 3 epochs x 5 batches of 4 videos
    recipe = json.loads((run_dir / "recipe.json").read_text())
    assert recipe["source"] == "<engine test>" and recipe["train"]["videos_per_batch"] == 4
    assert {p["name"] for p in json.loads((run_dir / "plugins.json").read_text())} >= {"retrieval", "engine-fakes"}
    steps = _steps(run_dir)
    assert [s["step"] for s in steps] == list(range(1, 16))
    assert all(np.isfinite(s["loss"]) and {"lr", "grad_norm", "clips_per_s", "v2t_loss"} <= set(s) for s in steps)
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"event"' in line]
    rounds = [e for e in events if e["event"] == "retrieval"]
    assert [r["epoch"] for r in rounds] == [2, 3]  # random batches before retrieval.start_epoch
    assert all(r["videos"] == 22 and r["embedded_per_rank"] == [22] and 0 <= r["recall"] <= 1 for r in rounds)
    root = run_dir / "checkpoints"
    assert (root / "latest").read_text().strip() == "step-15"
    assert [p.name for _, p in ckpt.committed_steps(root)] == ["step-14", "step-15"]  # keep_last = 2
    files = ckpt.read_checkpoint(root / "step-14")
    batches = state_files.load_npy(files["batches.npy"])
    assert batches.dtype == np.int64 and batches.shape == (5, 4) and not set(batches.ravel()) & {3, 11}
    state = json.loads(files["state.json"])
    assert state["step"] == 14 and state["epoch"] == 3 and state["cursor"] == 4
    assert "model.safetensors" in files and "optimizer.safetensors" in files


def test_resume_of_a_complete_run_changes_nothing(tmp_path, plugins, capsys):
    """A9."""
    _run(tmp_path, plugins)
    run_dir = tmp_path / "runs" / "fake"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    result = _run(tmp_path, plugins, resume=True)
    assert result.complete and result.step == 15
    assert "run already complete at step 15" in capsys.readouterr().out
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert set(after) == set(before)
    assert all(after[p] == before[p] for p in before if p.name not in ("recipe.json", "plugins.json"))


def test_existing_run_needs_resume_or_overwrite(tmp_path, plugins, capsys):
    """H2: an unfinished run is not continued or discarded by accident; a complete one is reported (the same
    command can be run twice)."""
    _run(tmp_path, plugins, train={"max_steps": 2})
    again = _run(tmp_path, plugins, train={"max_steps": 2})
    assert again.complete and again.step == 2 and "holds a complete run" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="--resume.*--overwrite"):
        _run(tmp_path, plugins, train={"max_steps": 3})
    result = _run(tmp_path, plugins, train={"max_steps": 3}, overwrite=True)
    assert result.step == 3 and [s["step"] for s in _steps(result.run_dir)] == [1, 2, 3]


def test_changed_recipe_is_refused_unless_allowed_per_key(tmp_path, plugins):
    """B6: every differing key is listed with old -> new; allowed changes are recorded in the checkpoint."""
    _run(tmp_path, plugins, train={"max_steps": 3})
    with pytest.raises(CheckpointError) as err:
        _run(tmp_path, plugins, train={"max_steps": 6, "lr": 5e-3}, resume=True)
    text = "\n".join(err.value.lines())
    assert "train.lr: 0.01 -> 0.005" in text and "train.max_steps: 3 -> 6" in text
    with pytest.raises(CheckpointError, match="train.lr"):
        _run(tmp_path, plugins, train={"max_steps": 6, "lr": 5e-3}, resume=True,
             allow_recipe_change=("train.max_steps",))
    result = _run(tmp_path, plugins, train={"max_steps": 6, "lr": 5e-3}, resume=True,
                  allow_recipe_change=("train.max_steps", "train.lr"))
    assert result.step == 6 and result.resumed_from.name == "step-3"
    state = json.loads((result.run_dir / "checkpoints" / "step-6" / "state.json").read_text())
    assert {c["key"] for c in state["recipe_changes"][0]["changes"]} == {"train.lr", "train.max_steps"}


@pytest.mark.parametrize(("loss", "term"), [({"nan_at_call": 4}, "non-finite loss at step 4"),
                                            ({"inf_grad_at_call": 4}, "non-finite gradient norm at step 4")])
def test_nonfinite_loss_or_gradient_stops_before_the_update(tmp_path, plugins, loss, term):
    """D1/D2: the error names the term, step and loss; the last checkpoint (step 2) is untouched."""
    with pytest.raises(TrainingError) as err:
        _run(tmp_path, plugins, loss=loss)
    message = str(err.value)
    assert term in message and "'fake-nce'" in message and "rank 0" in message and "step-2" in message
    root = tmp_path / "runs" / "fake" / "checkpoints"
    assert (root / "latest").read_text().strip() == "step-2"
    assert [p.name for _, p in ckpt.committed_steps(root)] == ["step-2"]
    ckpt.read_checkpoint(root / "step-2")
    assert [s["step"] for s in _steps(tmp_path / "runs" / "fake")] == [1, 2, 3]


def test_skip_policy_counts_skipped_steps(tmp_path, plugins):
    result = _run(tmp_path, plugins, loss={"nan_at_call": 2}, train={"on_nonfinite": "skip"})
    assert result.complete and result.step == 14
    state = json.loads((result.run_dir / "checkpoints" / "step-14" / "state.json").read_text())
    assert state["skipped_steps"] == 1


def test_pickled_init_weights_are_never_loaded(tmp_path, plugins):
    """J1: a malicious pickle is refused before anything reads it."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="never loaded"):
        _run(tmp_path, plugins, run={"init_from": str(evil)})
    assert not marker.exists()


def test_init_from_another_run(tmp_path, plugins, capsys):
    first = _run(tmp_path, plugins, train={"max_steps": 2})
    result = _run(tmp_path, plugins, run={"name": "second", "init_from": str(first.run_dir)},
                  train={"max_steps": 1})
    assert result.step == 1
    assert f"initialised from {first.run_dir / 'checkpoints' / 'step-2'}" in capsys.readouterr().out


@pytest.mark.parametrize("target", ["run", "checkpoint", "file"])
def test_init_from_refuses_a_checkpoint_with_one_flipped_byte(tmp_path, plugins, target):
    """Issue 10 #4: run.init_from checks the manifest's hashes and names the corrupt file."""
    first = _run(tmp_path, plugins, train={"max_steps": 2})
    step = first.run_dir / "checkpoints" / "step-2"
    weights = step / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-7] ^= 0x02
    weights.write_bytes(bytes(data))
    spec = {"run": first.run_dir, "checkpoint": step, "file": weights}[target]
    with pytest.raises(CheckpointError, match=rf"^{weights}: sha256 differs from the manifest"):
        _run(tmp_path, plugins, run={"name": "second", "init_from": str(spec)}, train={"max_steps": 1})


def test_a_locked_run_directory_is_refused(tmp_path, plugins):
    """H1 (in-process part; the lock's release on SIGKILL is covered by the resume test)."""
    run_dir = tmp_path / "runs" / "fake"
    run_dir.mkdir(parents=True)
    holder = ckpt.RunLock(run_dir)
    holder.acquire()
    try:
        with pytest.raises(CheckpointError, match="locked by pid"):
            _run(tmp_path, plugins)
    finally:
        holder.release()


def test_missing_data_points_to_the_demo(tmp_path, plugins):
    with pytest.raises(DataError) as err:
        _run(tmp_path, plugins, data={"missing": True})
    assert "recipes/how2_demo.toml" in str(err.value)


def test_lifecycle_hooks_fire_at_their_boundaries(tmp_path, plugins):
    calls: list[tuple] = []

    class Recorder:
        @hookimpl
        def norton_run_start(self, run):
            calls.append(("run_start", run.step))

        @hookimpl
        def norton_epoch_start(self, run, epoch):
            calls.append(("epoch_start", epoch))

        @hookimpl
        def norton_retrieval_round_end(self, run, epoch, stats):
            calls.append(("retrieval", epoch, stats["videos"], stats["backend"]))

        @hookimpl
        def norton_step_end(self, run, step, metrics):
            calls.append(("step", step))

        @hookimpl
        def norton_epoch_end(self, run, epoch, metrics):
            calls.append(("epoch_end", epoch, round(metrics["lr"], 6) > 0))

        @hookimpl
        def norton_run_end(self, run, metrics):
            calls.append(("run_end", run.step))

    plugins.register(Recorder(), name="recorder")
    _run(tmp_path, plugins, train={"epochs": 2})
    assert calls[0] == ("run_start", 0) and calls[1] == ("epoch_start", 1)
    assert calls[2:7] == [("step", s) for s in range(1, 6)]
    assert calls[7:10] == [("epoch_end", 1, True), ("retrieval", 2, 22, "faiss-ivf"), ("epoch_start", 2)]
    assert calls[-2:] == [("epoch_end", 2, True), ("run_end", 10)]


def test_a_worker_lost_to_a_preemption_still_commits_the_step(tmp_path, plugins, monkeypatch):
    """Issue 10 #2: if a DataLoader worker dies of the job's SIGTERM anyway (in the moment before it ignores the
    signal), the next fetch fails; the loop still commits the step boundary and stops as preempted."""
    import os
    import signal

    import norton_core.engine.loader as dataio
    from norton_core.errors import Preempted

    real = dataio.make_loader
    calls = {"n": 0}

    class Dying:
        def __init__(self, loader):
            self.inner = iter(loader)

        def __iter__(self):
            return self

        def __next__(self):
            calls["n"] += 1
            if calls["n"] == 4:
                os.kill(os.getpid(), signal.SIGTERM)  # the engine's handler only records it
                raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")
            return next(self.inner)

    monkeypatch.setattr(dataio, "make_loader", lambda *a, **k: Dying(real(*a, **k)))
    with pytest.raises(Preempted, match="stopped after step 3.*worker died"):
        _run(tmp_path, plugins, run={"name": "lost"})
    root = tmp_path / "runs" / "lost" / "checkpoints"
    assert ckpt.read_latest(root) == "step-3"
    assert json.loads(ckpt.read_checkpoint(root / "step-3")["state.json"])["cursor"] == 3


def test_schedule_warms_up_linearly_then_decays_polynomially():
    cfg = TrainConfig(lr=1.0, warmup_updates=4, total_updates=14, end_lr=0.0, power=1.0)
    lrs = [learning_rate(cfg, s) for s in range(16)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and lrs[9] == pytest.approx(0.5) and lrs[14] == 0.0 and lrs[15] == 0.0
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    squared = TrainConfig(lr=1.0, warmup_updates=0, total_updates=10, power=2.0)
    assert learning_rate(squared, 5) == pytest.approx(0.25)
