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


class _Weights:
    """Keeps a copy of every model tensor at the start and at the end of a run."""

    def __init__(self) -> None:
        self.start: dict[str, torch.Tensor] = {}
        self.end: dict[str, torch.Tensor] = {}

    @hookimpl
    def norton_run_start(self, run) -> None:
        self.start = {k: v.detach().clone() for k, v in run.model.state_dict().items()}

    @hookimpl
    def norton_run_end(self, run, metrics) -> None:
        self.end = {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_lr_scales_give_each_module_its_learning_rate_and_say_so(tmp_path, plugins, capsys):
    seen = _Weights()
    plugins.register(seen, name="weights")
    _run(tmp_path, plugins, retrieval={"enabled": False},
         train={"lr_scales": {"words": 0.0, "video.0": 0.5}, "checkpoint_every": 0})
    # a multiplier of 0 freezes the module; the others train
    assert torch.equal(seen.start["words.weight"], seen.end["words.weight"])
    assert not torch.equal(seen.start["text.weight"], seen.end["text.weight"])
    assert not torch.equal(seen.start["video.0.weight"], seen.end["video.0.weight"])
    out = capsys.readouterr().out
    assert "norton: learning rates: words x0 (1 tensors), video.0 x0.5 (2 tensors); 4 other tensors at train.lr" in out


def test_lr_groups_pick_the_longest_prefix_and_refuse_what_names_nothing():
    from norton_core.engine.setup import lr_groups
    from tests.engine.fakes import FakeModel

    model = FakeModel(FakeModel.Config())
    params = model.trainable_parameters()
    assert [len(g["params"]) for g in lr_groups(model, params, {}, None)] == [len(params)]
    groups = lr_groups(model, params, {"video": 0.2, "video.2": 0.5}, None)
    by_scale = {g["lr_scale"]: {n for n, p in model.named_parameters() if any(p is q for q in g["params"])}
                for g in groups}
    assert by_scale == {1.0: {"words.weight", "text.weight", "text.bias"},
                        0.2: {"video.0.weight", "video.0.bias"}, 0.5: {"video.2.weight", "video.2.bias"}}
    with pytest.raises(RecipeError, match=r"train\.lr_scales\.vid: matches no trainable parameter \(trainable "
                                          r"modules: text, video, words\)"):
        lr_groups(model, params, {"vid": 0.1}, None)
    with pytest.raises(RecipeError, match=r"train\.lr_scales\.text: must be a finite number >= 0, got -1"):
        lr_groups(model, params, {"text": -1.0}, None)
