"""norton: noise-robust video-text pretraining (Norton + VideoCLIP retrieval rounds), built from plugins.

The public API: ``hookimpl`` for plugin authors, the component base classes, the error types and :func:`build`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pluggy

from norton_core.errors import CheckpointError, DataError, NortonError, PluginError, Preempted, RecipeError, TrainingError
from norton_core.plugin.interfaces import (
    Aligner,
    DataPaths,
    DataSource,
    DecodeSpec,
    EmptyConfig,
    EvalContext,
    Evaluator,
    FeatureExtractor,
    Loss,
    MetricSink,
    Model,
    OutputSpec,
    RetrievalBackend,
    SpecialTokens,
    VideoRecord,
)
from norton_core.plugin.manager import Plugins, default_plugins, set_default_plugins
from norton_core.plugin.registry import Register
from norton_core.recipe.options import option, parse_config

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("norton")


def build(kind: str, name: str, options: Mapping[str, Any] | None = None, *, plugins: Plugins | None = None,
          **context: Any) -> Any:
    """Build a registered component from its name and a config mapping, e.g.
    ``norton_core.build("loss", "norton", {"beta": 0.3})``.

    :param kind: one of ``data``, ``aligner``, ``model``, ``loss``, ``retrieval_backend``, ``evaluator``,
        ``metric_sink``, ``feature_extractor``.
    :param options: the component's table (without ``name``); validated strictly, all problems reported at once.
    :param context: the kind's keyword context (see :mod:`norton_core.plugin.interfaces`), e.g. ``special_tokens``.
    :raises PluginError: unknown name. :raises RecipeError: invalid options.
    """
    plugins = plugins or default_plugins()
    registry = plugins.registry
    if (kind, name) not in registry:
        raise PluginError(registry.unknown_message(kind, name) + plugins.broken_note())
    cls = registry.get(kind, name).cls
    config, problems = parse_config(cls.Config, dict(options or {}), path=kind, source=f"{kind} {name!r}")
    if problems:
        raise RecipeError(problems=problems)
    return cls.create(config, **context)


__all__ = [
    "Aligner", "CheckpointError", "DataError", "DataPaths", "DataSource", "DecodeSpec", "EmptyConfig", "EvalContext",
    "Evaluator", "FeatureExtractor", "Loss", "MetricSink", "Model", "OutputSpec", "NortonError", "PluginError", "Plugins",
    "Preempted", "RecipeError", "Register",
    "RetrievalBackend", "SpecialTokens", "TrainingError", "VideoRecord", "build", "default_plugins", "hookimpl", "option",
    "parse_config", "set_default_plugins", "__version__",
]
