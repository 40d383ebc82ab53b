"""Validation loss on data.val at each scheduled checkpoint and the best checkpoint it selects."""

from __future__ import annotations

import json

import torch

from norton_core.engine import checkpoint as ckpt
from norton_core.engine import state_files, train
from norton_core.engine.validation import validation_batches
from tests.engine.fakes import build_recipe, recipe_dict


def _run(tmp_path, plugins, name, **tables):
    raw = recipe_dict(tmp_path, run={"name": name}, **tables)
    raw["retrieval"]["backend"] = {"name": "exact"}
    return train(build_recipe(raw, plugins), plugins=plugins)


def _lines(run_dir, event=None):
    out = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in out if x.get("event") == event]


def test_validation_is_logged_at_each_checkpoint_and_best_is_kept(tmp_path, plugins):
    _run(tmp_path, plugins, "plain")
    _run(tmp_path, plugins, "val", data={"val_videos": 10})
    plain, val = tmp_path / "runs" / "plain", tmp_path / "runs" / "val"
    strip = [{k: v for k, v in x.items() if k not in ("time", "clips_per_s")} for x in _lines(plain)]
    assert strip == [{k: v for k, v in x.items() if k not in ("time", "clips_per_s")} for x in _lines(val)]
    records = _lines(val, "validation")
    # checkpoint_every = 2 and epoch ends (5, 10 = a scheduled step too, 15): each step validated once
    assert [r["step"] for r in records] == [2, 4, 5, 6, 8, 10, 12, 14, 15]
    assert all({"val_loss", "val_v2t_loss", "val_t2v_loss", "epoch"} <= set(r) for r in records)
    best = min(records, key=lambda r: (r["val_loss"], r["step"]))
    root = val / "checkpoints"
    files = ckpt.read_checkpoint(root / "best")
    selection = json.loads(files["selection.json"])
    assert selection == {"metric": "val_loss", "value": best["val_loss"], "step": best["step"], "split": "val"}
    assert json.loads(files["state.json"])["step"] == best["step"]
    infos = ckpt.list_checkpoints(root)
    assert [i.label for i in infos] == ["step-14", "step-15", "best"]  # keep_last = 2 does not touch best
    assert [i.latest for i in infos] == [False, True, False] and infos[-1].selection == selection
    # the best weights are the ones trained at that step (in a run without validation too)
    if (plain / "checkpoints" / f"step-{best['step']}").exists():
        ref = ckpt.read_checkpoint(plain / "checkpoints" / f"step-{best['step']}")["model.safetensors"]
        a, b = state_files.bytes_to_tensors(ref), state_files.bytes_to_tensors(files["model.safetensors"])
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_validation_batches_are_whole_rounds_of_ranks():
    import numpy as np

    videos = np.arange(11)
    assert validation_batches(videos, 4, 1) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert validation_batches(videos, 4, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert validation_batches(videos, 4, 3) == []
    assert validation_batches(np.arange(3), 4, 1) == [[0, 1, 2]]


def test_validation_scores_the_same_clips_and_leaves_training_state_alone():
    import random

    import numpy as np

    from norton_core.engine.distributed import Dist
    from norton_core.engine.validation import validation_loss
    from tests.engine.fakes import FakeAligner, FakeLoss, FakeModel, FakeStore

    torch.manual_seed(0)
    model, loss = FakeModel(FakeModel.Config()), FakeLoss(FakeLoss.Config())
    model.video.append(torch.nn.Dropout(0.5))  # dropout would make the value random in training mode
    store = FakeStore(12, seed=1)
    batches = validation_batches(np.array([i for i in range(12) if i not in (3, 11)]), 4, 1)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    import contextlib

    args = (model, loss, store, FakeAligner(FakeAligner.Config()), batches, 3, Dist(), contextlib.nullcontext, 0)
    first, second = validation_loss(*args), validation_loss(*args)
    assert first == second and set(first) == {"val_loss", "val_v2t_loss", "val_t2v_loss"}
    assert model.training  # put back
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    other = validation_loss(model, loss, store, FakeAligner(FakeAligner.Config()), batches, 4, Dist(),
                            contextlib.nullcontext, 0)
    assert other != first  # another seed draws other clips: the value depends on the seeded sampling

