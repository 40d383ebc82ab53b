"""norton: noise-robust video-text pretraining (Norton + VideoCLIP retrieval rounds), built from plugins.

This module is the whole surface a plugin may rely on; plugins import from ``norton_core`` and nothing deeper
(``tests/test_walls.py`` keeps the built-in and example plugins to it). What it offers:

- declaring components: :data:`hookimpl`, :class:`Register`, the component base classes (:class:`Aligner`,
  :class:`DataSource`, :class:`Evaluator`, :class:`FeatureExtractor`, :class:`Loss`, :class:`MetricSink`,
  :class:`Model`, :class:`RetrievalBackend`) and their context types (:class:`DecodeSpec` and :class:`OutputSpec`
  for extractors), :func:`option` and :func:`parse_config` for options;
- the error types (:class:`NortonError` and its kinds), printed as one line by the CLI;
- building a component by name (:func:`build`) and the plugin manager (:class:`Plugins`);
- helpers the built-in plugins share, imported on first use so that ``import norton_core`` stays light (no torch):
  batching (:func:`collate_clips`) and the token layout (:func:`build_text_seq`, :func:`build_video_seq`);
  evaluation (:func:`encode_clips`, :func:`encode_texts`, :func:`rank_metrics`, :func:`rank_counts`,
  :func:`roc_auc`, :func:`grounding_hits`, :func:`alignment_scores`, :func:`caption_average`,
  :func:`centre_per_caption`); nearest-neighbour search (:func:`exact_knn`, :func:`knn_scores`, :func:`row_norms`);
  run records (:func:`scalars`); files and weights (:func:`replace_atomic`, :func:`read_bounded`,
  :func:`read_json`, :func:`load_plain`, :func:`load_checkpoint`, :class:`LazyTensor`, :func:`load_tokenizer`,
  :func:`resolve_pretrained`); compiled loops (:func:`compile_cached`, :func:`say_if_compiled`,
  :func:`compiled_threads`, :data:`LAUNCH`); data stores (:data:`MANIFEST`, :func:`prepare_how2`,
  :class:`PrepareOptions`, :func:`generate_synthetic` and its options
  :class:`SyntheticOptions`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from norton_core._util.bounded import read_bounded, read_json
    from norton_core._util.compiled import LAUNCH, compile_cached, say_if_compiled
    from norton_core._util.compiled import threads as compiled_threads
    from norton_core._util.files import replace_atomic
    from norton_core._util.safe_checkpoint import LazyTensor, load_checkpoint
    from norton_core._util.safe_pickle import load_plain
    from norton_core._util.text_encoders import load_tokenizer, resolve_pretrained
    from norton_core.data.collate import collate_clips
    from norton_core.data.layout import build_text_seq, build_video_seq
    from norton_core.data.manifest import MANIFEST
    from norton_core.data.prepare_how2 import PrepareOptions, prepare_how2
    from norton_core.data.synthetic import SyntheticOptions
    from norton_core.data.synthetic import generate as generate_synthetic
    from norton_core.evaluation.embed import encode_clips, encode_texts
    from norton_core.evaluation.metrics import grounding_hits, rank_counts, rank_metrics, roc_auc
    from norton_core.evaluation.sequence import alignment_scores, caption_average, centre_per_caption
    from norton_core.retrieval.search import exact_knn, knn_scores, row_norms
    from norton_core.runs.scalars import scalars

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("norton")

#: helpers imported on first use: public name -> (module, attribute)
_LAZY = {
    "LAUNCH": ("norton_core._util.compiled", "LAUNCH"),
    "compile_cached": ("norton_core._util.compiled", "compile_cached"),
    "say_if_compiled": ("norton_core._util.compiled", "say_if_compiled"),
    "compiled_threads": ("norton_core._util.compiled", "threads"),
    "replace_atomic": ("norton_core._util.files", "replace_atomic"),
    "read_bounded": ("norton_core._util.bounded", "read_bounded"),
    "read_json": ("norton_core._util.bounded", "read_json"),
    "LazyTensor": ("norton_core._util.safe_checkpoint", "LazyTensor"),
    "load_checkpoint": ("norton_core._util.safe_checkpoint", "load_checkpoint"),
    "load_plain": ("norton_core._util.safe_pickle", "load_plain"),
    "load_tokenizer": ("norton_core._util.text_encoders", "load_tokenizer"),
    "resolve_pretrained": ("norton_core._util.text_encoders", "resolve_pretrained"),
    "collate_clips": ("norton_core.data.collate", "collate_clips"),
    "build_text_seq": ("norton_core.data.layout", "build_text_seq"),
    "build_video_seq": ("norton_core.data.layout", "build_video_seq"),
    "MANIFEST": ("norton_core.data.manifest", "MANIFEST"),
    "PrepareOptions": ("norton_core.data.prepare_how2", "PrepareOptions"),
    "prepare_how2": ("norton_core.data.prepare_how2", "prepare_how2"),
    "generate_synthetic": ("norton_core.data.synthetic", "generate"),
    "SyntheticOptions": ("norton_core.data.synthetic", "SyntheticOptions"),
    "encode_clips": ("norton_core.evaluation.embed", "encode_clips"),
    "encode_texts": ("norton_core.evaluation.embed", "encode_texts"),
    "grounding_hits": ("norton_core.evaluation.metrics", "grounding_hits"),
    "rank_counts": ("norton_core.evaluation.metrics", "rank_counts"),
    "rank_metrics": ("norton_core.evaluation.metrics", "rank_metrics"),
    "roc_auc": ("norton_core.evaluation.metrics", "roc_auc"),
    "alignment_scores": ("norton_core.evaluation.sequence", "alignment_scores"),
    "caption_average": ("norton_core.evaluation.sequence", "caption_average"),
    "centre_per_caption": ("norton_core.evaluation.sequence", "centre_per_caption"),
    "exact_knn": ("norton_core.retrieval.search", "exact_knn"),
    "knn_scores": ("norton_core.retrieval.search", "knn_scores"),
    "row_norms": ("norton_core.retrieval.search", "row_norms"),
    "scalars": ("norton_core.runs.scalars", "scalars"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'norton_core' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
    "Evaluator", "FeatureExtractor", "Loss", "MetricSink", "Model", "NortonError", "OutputSpec", "PluginError",
    "Plugins", "Preempted", "RecipeError", "Register", "RetrievalBackend", "SpecialTokens", "TrainingError",
    "VideoRecord", "build", "default_plugins", "hookimpl", "option", "parse_config", "set_default_plugins",
    "__version__", "LAUNCH", "compile_cached", "say_if_compiled", "compiled_threads", "replace_atomic",
    "read_bounded", "read_json", "LazyTensor", "load_checkpoint", "load_plain", "load_tokenizer",
    "resolve_pretrained", "collate_clips", "build_text_seq", "build_video_seq", "MANIFEST", "PrepareOptions",
    "prepare_how2", "generate_synthetic", "SyntheticOptions", "encode_clips", "encode_texts", "grounding_hits",
    "rank_counts", "rank_metrics", "roc_auc", "alignment_scores", "caption_average", "centre_per_caption",
    "exact_knn", "knn_scores", "row_norms", "scalars",
]
