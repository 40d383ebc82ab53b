"""Recipe values bounded by the machine (at validation) and by the data (when the store opens, before any work),
and clear messages for a loss that breaks its contract and for the skip policy."""

from __future__ import annotations

import os

import attrs
import pytest
import torch

from norton_core import Loss, hookimpl
from norton_core.engine import train
from norton_core.errors import PluginError, RecipeError, TrainingError
from tests.engine.fakes import FakeLoss, build_recipe, recipe_dict


def _run(tmp_path, plugins, **tables):
    return train(build_recipe(recipe_dict(tmp_path, **tables), plugins), plugins=plugins)


def test_threads_are_bounded_by_the_machine(tmp_path, plugins):
    with pytest.raises(RecipeError, match=rf"run\.threads: must be <= {os.cpu_count()}, got 1000000000"):
        build_recipe(recipe_dict(tmp_path, run={"threads": 10**9}), plugins)


@pytest.mark.parametrize(("tables", "message"), [
    ({"train": {"videos_per_batch": 10**9}},
     r"train\.videos_per_batch: 1000000000 videos x 1 batch\(es\) per step .* but the training store .* has 22 "
     r"sampleable videos; at most 22"),
    ({"train": {"videos_per_batch": 12, "grad_accum": 2}}, r"train\.videos_per_batch: 12 .* at most 11"),
    ({"retrieval": {"num_cands": 10**9}}, r"retrieval\.num_cands: 1000000000 neighbours .* at most 22"),
])
def test_sizes_beyond_the_data_stop_before_any_work(tmp_path, plugins, capsys, tables, message):
    tables.setdefault("retrieval", {})["start_epoch"] = 1  # retrieval would be the first work
    with pytest.raises(RecipeError, match=message):
        _run(tmp_path, plugins, **tables)
    assert "retrieval round" not in capsys.readouterr().out
    assert not (tmp_path / "runs" / "fake" / "metrics.jsonl").exists()  # not a step, not a retrieval round


class NoLossKey(Loss, torch.nn.Module):
    name = "no-loss-key"

    @attrs.frozen
    class Config:
        pass

    def __init__(self, config, rank=0, world_size=1):
        torch.nn.Module.__init__(self)

    def forward(self, outputs, batch):
        return {"nce": outputs["pooled_video"].sum(), "v2t_loss": outputs["pooled_text"].sum()}


class _Extra:
    @staticmethod
    @hookimpl
    def norton_register_losses(register):
        register(NoLossKey)


def test_a_loss_without_a_loss_term_names_the_plugin_and_its_keys(tmp_path, plugins):
    plugins.register(_Extra(), name="extra-losses")
    with pytest.raises(PluginError, match=r"loss 'no-loss-key' from plugin 'extra-losses' .* returned a dict with "
                                          r"keys \['nce', 'v2t_loss'\]; a loss must return a dict with the scalar"):
        _run(tmp_path, plugins, loss={"name": "no-loss-key"})


def test_the_skip_policy_message_does_not_advise_the_skip_policy(tmp_path, plugins, monkeypatch):
    monkeypatch.setattr(FakeLoss, "forward", lambda self, outputs, batch: {
        "loss": outputs["pooled_video"].sum() * float("nan")})
    with pytest.raises(TrainingError) as info:
        _run(tmp_path, plugins, train={"on_nonfinite": "skip", "max_consecutive_skips": 2})
    assert "3 consecutive non-finite steps" in str(info.value) and "on_nonfinite" not in str(info.value)
    with pytest.raises(TrainingError, match="set train.on_nonfinite = 'skip'"):
        _run(tmp_path, plugins, run={"name": "other"})
