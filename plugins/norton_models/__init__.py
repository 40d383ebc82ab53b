"""Built-in model ``mmfusion-separate`` (VideoCLIP's dual encoder, :mod:`norton_models.model`) and the
``norton convert-videoclip`` command (:mod:`norton_models.convert`).

What is registered is a light entry (name + Config) whose ``create`` builds the real ``torch.nn.Module``
(:class:`norton_models.model.MMFusionSeparate`), so that loading the plugin imports neither torch nor transformers.
"""

from __future__ import annotations

from typing import Any

from norton_core import Model, hookimpl

from .config import MMFusionConfig


class MMFusionSeparateEntry(Model):
    """VideoCLIP / Norton dual encoder: an S3D-feature MLP + BERT video tower and a transformers text tower, masked
    mean pooling. ``create`` builds :class:`norton_models.model.MMFusionSeparate`."""

    name = "mmfusion-separate"
    Config = MMFusionConfig

    @classmethod
    def create(cls, config: MMFusionConfig, **context: Any) -> Any:
        from .model import MMFusionSeparate

        return MMFusionSeparate(config, **context)


@hookimpl
def norton_register_models(register):  # noqa: ANN001 - pluggy passes the Register
    register(MMFusionSeparateEntry)


@hookimpl
def norton_register_commands(subparsers):  # noqa: ANN001 - argparse sub-parsers
    from .convert import add_command

    add_command(subparsers)
