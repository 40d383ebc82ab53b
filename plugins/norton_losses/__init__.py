"""Built-in losses: ``norton`` (clip contrast with faulty-negative exploitation + video-paragraph OT contrast) and
``videoclip-nce`` (VideoCLIP's symmetric InfoNCE). See :mod:`norton_losses.norton` for every quirk decision.

What is registered are light entries (name + Config) whose ``create`` builds the real ``torch.nn.Module`` losses
(:class:`norton_losses.norton.NortonLoss`, :class:`norton_losses.norton.VideoCLIPNCELoss`), so that loading the
plugin does not import torch.
"""

from __future__ import annotations

from typing import Any

from norton_core import Loss, hookimpl

from .config import NCEConfig, NortonConfig


class NortonLossEntry(Loss):
    """Norton: L_clip with faulty-negative exploitation + lambda * L_video (fine-grained similarity, alignable prompt
    bucket OT, sequence contrast). ``create`` builds :class:`norton_losses.norton.NortonLoss`."""

    name = "norton"
    Config = NortonConfig

    @classmethod
    def create(cls, config: NortonConfig, **context: Any) -> Any:  # context: rank, world_size
        from .norton import NortonLoss

        return NortonLoss(config, **context)


class VideoCLIPNCEEntry(Loss):
    """VideoCLIP's symmetric InfoNCE on the pooled vectors (raw unless model.normalize). ``create`` builds
    :class:`norton_losses.norton.VideoCLIPNCELoss`."""

    name = "videoclip-nce"
    Config = NCEConfig

    @classmethod
    def create(cls, config: NCEConfig, **context: Any) -> Any:  # context: rank, world_size
        from .norton import VideoCLIPNCELoss

        return VideoCLIPNCELoss(config, **context)


@hookimpl
def norton_register_losses(register):  # noqa: ANN001 - pluggy passes the Register
    register(NortonLossEntry)
    register(VideoCLIPNCEEntry)
