"""Every hook a norton plugin can implement: the whole extension surface.

Implement a hook with ``@norton_core.hookimpl`` on a module-level function of the module (or object) that your
distribution's ``[project.entry-points.norton]`` entry points to. Hooks are called by keyword; an implementation
may accept any subset of the documented parameters. A module implementing a name that is not below fails at
start-up (``check_pending``).

Registration hooks receive a :class:`~norton_core.plugin.registry.Register` and return nothing. Lifecycle hooks are for
callbacks (loggers, schedulers, monitors): they fire at run, epoch, retrieval-round and optimizer-step
boundaries, never inside the per-sample data path, and their return values are ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import argparse

    from norton_core.engine.state import RunContext
    from norton_core.plugin.registry import Register

hookspec = pluggy.HookspecMarker("norton")

# ----------------------------------------------------------------------------------------------------------------
# registration: called once per process, right after plugins are loaded and before any recipe is validated
# ----------------------------------------------------------------------------------------------------------------


@hookspec
def norton_register_data_sources(register: Register) -> None:
    """Register data source classes (kind ``data``; see :class:`norton_core.plugin.interfaces.DataSource`).

    :param register: call ``register(DataSourceClass)``; the class's ``name`` is what ``[data] name`` refers to.
    """


@hookspec
def norton_register_aligners(register: Register) -> None:
    """Register aligner (clip sampler) classes (kind ``aligner``; see :class:`norton_core.plugin.interfaces.Aligner`).

    :param register: call ``register(AlignerClass)``; the class's ``name`` is what ``[aligner] name`` refers to.
    """


@hookspec
def norton_register_models(register: Register) -> None:
    """Register model classes (kind ``model``; see :class:`norton_core.plugin.interfaces.Model`).

    :param register: call ``register(ModelClass)``; the class's ``name`` is what ``[model] name`` refers to.
    """


@hookspec
def norton_register_losses(register: Register) -> None:
    """Register loss classes (kind ``loss``; see :class:`norton_core.plugin.interfaces.Loss`).

    :param register: call ``register(LossClass)``; the class's ``name`` is what ``[loss] name`` refers to.
    """


@hookspec
def norton_register_retrieval_backends(register: Register) -> None:
    """Register retrieval backends (kind ``retrieval_backend``; see :class:`norton_core.plugin.interfaces.RetrievalBackend`).

    :param register: call ``register(BackendClass)``; ``[retrieval.backend] name`` refers to its ``name``.
    """


@hookspec
def norton_register_evaluators(register: Register) -> None:
    """Register evaluation tasks (kind ``evaluator``; see :class:`norton_core.plugin.interfaces.Evaluator`).

    :param register: call ``register(EvaluatorClass)``; ``[evaluation] tasks`` lists their ``name``.
    """


@hookspec
def norton_register_metric_sinks(register: Register) -> None:
    """Register metric sinks (kind ``metric_sink``; see :class:`norton_core.plugin.interfaces.MetricSink`).

    :param register: call ``register(SinkClass)``; ``[logging] sinks`` lists their ``name``.
    """


@hookspec
def norton_register_feature_extractors(register: Register) -> None:
    """Register video feature extractors (kind ``feature_extractor``; see
    :class:`norton_core.plugin.interfaces.FeatureExtractor`).

    :param register: call ``register(ExtractorClass)``; ``norton extract --extractor NAME`` refers to its ``name``.
    """


@hookspec
def norton_register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``norton`` CLI (called once when the CLI starts).

    :param subparsers: ``argparse`` sub-parsers; add a parser and ``set_defaults(func=handler)`` where
        ``handler(args) -> int`` returns the exit code. Raise ``NortonError`` for user errors.
    """


# ----------------------------------------------------------------------------------------------------------------
# run lifecycle: called by the training engine on every rank, in this order
# ----------------------------------------------------------------------------------------------------------------


@hookspec
def norton_run_start(run: RunContext) -> None:
    """Called once when training is about to start (after resume, before the first epoch).

    :param run: the run's context: ``recipe`` (resolved), ``run_dir``, ``rank``, ``world_size``, ``step``
        (non-zero after a resume), ``model`` and ``optimizer``.
    """


@hookspec
def norton_epoch_start(run: RunContext, epoch: int) -> None:
    """Called at the start of each epoch, after its batches (random or retrieved) are fixed.

    :param run: the run's context.
    :param epoch: the epoch number, starting at 1.
    """


@hookspec
def norton_retrieval_round_end(run: RunContext, epoch: int, stats: dict[str, Any]) -> None:
    """Called after a retrieval round built the epoch's candidate batches.

    :param run: the run's context.
    :param epoch: the epoch the batches are for.
    :param stats: ``videos``, ``batches``, ``seconds``, ``recall`` (neighbour recall against exact search on a
        sample) and ``backend``.
    """


@hookspec
def norton_step_end(run: RunContext, step: int, metrics: dict[str, float]) -> None:
    """Called after each optimizer step (on every rank).

    :param run: the run's context.
    :param step: the number of optimizer steps taken so far.
    :param metrics: the logged values of this step: each loss term, ``lr``, ``grad_norm``, ``clips_per_s``.
    """


@hookspec
def norton_epoch_end(run: RunContext, epoch: int, metrics: dict[str, float]) -> None:
    """Called at the end of each epoch, after its checkpoint (if any) is committed.

    :param run: the run's context.
    :param epoch: the epoch that ended.
    :param metrics: epoch means of the logged step values.
    """


@hookspec
def norton_run_end(run: RunContext, metrics: dict[str, float]) -> None:
    """Called once after the last epoch (and the final evaluation, when the recipe asks for one).

    :param run: the run's context.
    :param metrics: the final evaluation metrics as ``task/metric`` keys (empty without evaluation).
    """
