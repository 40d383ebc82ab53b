"""The training engine: ``train(recipe)`` runs a recipe's training (and evaluation) in its run directory.

Read :mod:`.loop` first: the loop top to bottom, with a step's pieces (forward pass, loss checks, update, learning
rate) beside it. Then, in the order a run meets them: :mod:`.setup` (the run's parts in one :class:`~.setup.Run`,
built in the order they are needed), :mod:`.loader` (batches from shard stores in DataLoader workers),
:mod:`.validation` (validation loss and the best checkpoint), :mod:`.records` (the run's records to the metric
sinks), :mod:`.progress` (what the user sees while it trains), :mod:`.chance` (saying so when the loss sits at
chance), :mod:`.resume` (what a checkpoint holds and putting a run back), :mod:`.checkpoint` (the commit protocol,
retention, the run lock), :mod:`.state_files` (tensors and arrays as checkpoint bytes), :mod:`.state`
(``RunContext`` for hooks, ``TrainState``, ``RunResult``), :mod:`.preempt` (SIGTERM at step boundaries),
:mod:`.distributed` and :mod:`.liveness` (torchrun and knowing when a rank is gone). Retrieval rounds live in
:mod:`norton_core.retrieval`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from norton_core.engine.preempt import Preemption, until_exit
from norton_core.engine.state import RunContext, RunResult

__all__ = ["RunContext", "RunResult", "train", "until_exit"]

_depth = 0


def train(recipe: Any, *, resume: bool = False, overwrite: bool = False, allow_recipe_change: Iterable[str] = (),
          plugins: Any = None) -> RunResult:
    """Train as ``recipe`` (a :class:`norton_core.recipe.load.Recipe`) says, in ``<run.output_dir>/<run.name>``.

    :param resume: continue from the newest valid checkpoint (a run without one starts from the beginning); a
        complete run only reports that it is complete.
    :param overwrite: discard an existing run of the same directory first.
    :param allow_recipe_change: dotted recipe keys (or tables) that may differ from the checkpoint's recipe.
    :param plugins: a :class:`norton_core.Plugins` (default: the process-wide one).
    :raises NortonError: a user-fixable problem (data, recipe, checkpoint, non-finite training).

    When ``run.pretrain_recipe`` names another recipe, that stage is trained first (resumed if interrupted,
    skipped if complete) and its final weights initialise this run (unless ``run.init_from`` is set).
    """
    global _depth
    from norton_core.engine import distributed, loop
    from norton_core.plugin.manager import default_plugins

    plugins = plugins or default_plugins()
    _depth += 1
    try:
        # one SIGTERM handler over both stages: a signal between them stops the second at its first step boundary
        with Preemption():
            init_from, prior, prior_precision = recipe.run.init_from, {}, {}
            if recipe.run.pretrain_recipe:
                stage = first_stage(recipe, plugins)
                done = train(stage, resume=True, plugins=plugins)
                prior = {f"{stage.run.name}/{label}": res for label, res in done.evaluation.items()
                         if "/" not in label}
                prior_precision = {f"{stage.run.name}/after": done.precision}
                init_from = init_from or str(done.run_dir)
                print(f"norton: stage 2/2: {recipe.source} (run {recipe.run.name})", flush=True)
            return loop.run(recipe, plugins, resume=resume, overwrite=overwrite,
                            allow_recipe_change=tuple(allow_recipe_change), init_from=init_from,
                            prior_evaluation=prior, prior_precision=prior_precision)
    finally:
        _depth -= 1
        if _depth == 0:
            distributed.shutdown(distributed.Dist(world_size=_world_size()))


def first_stage(recipe: Any, plugins: Any) -> Any:
    """The recipe of ``recipe``'s first stage (``run.pretrain_recipe``) as it will train, with what it is told said:
    where runs and data live, what runs them and the data themselves follow ``recipe`` (and its ``--set``), so that a
    child recipe that changes only ``[data]`` trains both stages on its data."""
    from norton_core.errors import RecipeError
    from norton_core.recipe.load import load_recipe, toml_value

    # loading resolved it from the file that wrote it; a recipe.json from an older run may hold it relative
    stage_path = Path(recipe.source).parent / recipe.run.pretrain_recipe
    shared = [f"run.{key}={json.dumps(getattr(recipe.run, key))}"
              for key in ("output_dir", "cache_dir", "device", "threads")]
    data = recipe.resolved()["data"]
    shared += [f"data.{key}={toml_value(value)}" for key, value in
               sorted(data.items(), key=lambda kv: kv[0] != "name")  # the name first: it restarts the table
               if value is not None]
    own = load_recipe(stage_path, plugins=plugins).resolved()["data"]
    stage = load_recipe(stage_path, overrides=shared, plugins=plugins)
    given = stage.resolved()["data"]
    differ = sorted(k for k in {*data, *given} if data.get(k) != given.get(k))
    if differ:  # a key this recipe leaves unset (None) that the stage's own recipe sets
        raise RecipeError(f"{stage_path}: the first stage would train on other data than {recipe.source}: "
                          f"data.{', data.'.join(differ)} differ; set them in the first stage's recipe too")
    print(f"norton: stage 1/2: {stage_path} (run {stage.run.name})", flush=True)
    if own != data:
        # another source: its name says it; the same source: the keys that differ do
        keys = ", ".join(sorted(k for k in {*own, *data} if own.get(k) != data.get(k)))
        how = "" if own.get("name") != data.get("name") else f"; differing: {keys}"
        print(f"norton: stage 1/2 trains on this recipe's [data] (name = {data.get('name')!r}), not on the [data] "
              f"its own recipe names (name = {own.get('name')!r}{how})", flush=True)
    kept = _stage_only_overrides(recipe, {s.split("=", 1)[0] for s in shared}, prefixes=("data.",))
    if kept:
        print(f"norton: stage 1/2 does not receive --set {', '.join(kept)} (they apply to stage 2 only; "
              "set them in the first stage's recipe to change it too)", flush=True)
    return stage


def _stage_only_overrides(recipe: Any, passed_on: set[str], prefixes: tuple[str, ...] = ()) -> list[str]:
    """The ``--set`` keys of ``recipe`` that its first stage does not receive (said, so none is dropped silently)."""
    from norton_core.recipe.files import SET_SOURCE

    sources = getattr(recipe.origins, "sources", {}) or {}
    keys = {key for key, where in sources.items() if where == SET_SOURCE}
    # a table is recorded beside the keys set inside it: name the keys, not their tables
    leaves = {key for key in keys if not any(other.startswith(key + ".") for other in keys)}
    return sorted(key for key in leaves - passed_on if key != "data" and not key.startswith(prefixes))


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))
