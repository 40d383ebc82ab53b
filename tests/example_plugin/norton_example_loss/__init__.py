"""A complete third-party loss plugin: hinge loss on the clip-caption similarity matrix."""

from __future__ import annotations

import attrs
import torch

from norton_core import Loss, hookimpl, option


class MarginLoss(Loss, torch.nn.Module):
    name = "example-margin"

    @attrs.frozen
    class Config:
        margin: float = option(0.2, ge=0.0, help="how much a positive must beat each negative by")

    def __init__(self, config: Config, rank: int = 0, world_size: int = 1) -> None:
        torch.nn.Module.__init__(self)
        self.margin = config.margin

    def forward(self, outputs: dict, batch: dict) -> dict:
        v = torch.nn.functional.normalize(outputs["pooled_video"], dim=-1)
        t = torch.nn.functional.normalize(outputs["pooled_text"], dim=-1)
        sim = v @ t.T
        hinge = (self.margin + sim - sim.diag()[:, None]).clamp(min=0).fill_diagonal_(0)
        return {"loss": hinge.mean(), "margin_loss": hinge.mean()}


@hookimpl
def norton_register_losses(register):
    register(MarginLoss)
