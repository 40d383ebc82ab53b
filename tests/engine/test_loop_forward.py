"""The precision contract of losses, and the model seeing the whole batch (the forward pass in norton_core.engine.loop)."""

from __future__ import annotations

import pytest
import torch

from norton_core.engine.loop import forward_and_loss
from norton_core.engine.setup import autocast_factory


class LinearModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward_batch(self, batch):
        return {"pooled_video": self.proj(batch["vfeats"]), "seen": sorted(batch)}


class Recorder(torch.nn.Module):
    def __init__(self, autocast: bool) -> None:
        super().__init__()
        self.autocast, self.seen = autocast, {}

    def forward(self, outputs, batch):
        self.seen = {"dtype": outputs["pooled_video"].dtype, "under_autocast": torch.is_autocast_enabled("cpu"),
                     "keys": outputs["seen"]}
        return {"loss": outputs["pooled_video"].float().pow(2).mean()}


@pytest.mark.parametrize(("declares", "dtype", "under"), [(False, torch.float32, False), (True, torch.bfloat16, True)])
def test_a_loss_runs_under_autocast_only_when_it_declares_so(declares, dtype, under):
    model, loss = LinearModel(), Recorder(declares)
    batch = {"vfeats": torch.randn(3, 4), "clip_weight": torch.ones(3)}
    outputs, terms = forward_and_loss(model, loss, batch, autocast_factory("bf16", "cpu"))
    assert outputs["pooled_video"].dtype == torch.bfloat16  # the model itself ran under autocast
    assert loss.seen == {"dtype": dtype, "under_autocast": under, "keys": ["clip_weight", "vfeats"]}
    terms["loss"].backward()
    assert model.proj.weight.grad is not None  # the float32 copy keeps the graph


def test_a_loss_without_the_attribute_gets_float32():
    class Plain(Recorder):
        pass

    loss = Plain(False)
    del loss.autocast  # an object without the attribute at all (not a norton_core.Loss subclass)
    forward_and_loss(LinearModel(), loss, {"vfeats": torch.randn(2, 4)}, autocast_factory("bf16", "cpu"))
    assert loss.seen["dtype"] == torch.float32 and not loss.seen["under_autocast"]
