"""The run's parts in one object: what the recipe built (data, model, loss, aligners, optimizer), where the run
lives, and its progress. :func:`assemble` builds it in the order the loop needs; every engine helper takes it,
so none of them needs a dozen arguments and the loop in :mod:`.loop` reads top to bottom.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from norton_core.engine import distributed
from norton_core.engine import loader as dataio
from norton_core.engine.distributed import Dist
from norton_core.engine.guards import check_data_bounds
from norton_core.engine.preempt import Preemption
from norton_core.engine.records import MetricsLog
from norton_core.engine.setup import (
    DEMO_HINT,
    autocast_factory,
    cache_dir_of,
    check_tokenizer,
    load_init_weights,
    prepare_data,
    read_json,
)
from norton_core.engine.state import RunContext, TrainState
from norton_core.engine.validation import open_validation
from norton_core.errors import CheckpointError, DataError, TrainingError


@attrs.define(eq=False)
class Run:
    """One training run: fixed parts (set once by :func:`assemble`) and progress (``state``, ``evaluation``).

    :ivar recipe: the :class:`norton_core.recipe.load.Recipe`; ``resolved`` its plain-dict form (saved with checkpoints).
    :ivar plugins: the :class:`norton_core.Plugins` that built the components and receive the lifecycle hooks.
    :ivar dist: this process's place in the (torchrun) world; ``log`` prints on rank 0 only.
    :ivar run_dir / ckpt_root: the run directory and its ``checkpoints`` folder.
    :ivar found: the checkpoint this run resumes from (directory, files), or None for a fresh start.
    :ivar allow: recipe keys allowed to differ from the checkpoint's.
    :ivar paths: the data source's prepared paths; ``store`` the training shard store; ``videos`` the store
        indices that can be sampled; ``val_store`` / ``val_batches`` the validation store (``data.val``) and its
        fixed batches (empty without one; see :mod:`.validation`).
    :ivar model / loss_fn / aligner / embed_aligner: the components (the embed aligner lays out retrieval rounds).
    :ivar params: what the optimizer updates (the model's trainable parameters and a loss's learnable ones);
        ``loss_params`` the loss's share of them.
    :ivar parallel: under torchrun, the model wrapped in ``DistributedDataParallel`` (the training step's forward
        goes through it); None on one process.
    :ivar scaler: fp16's ``GradScaler`` or None; ``autocast`` a factory of the precision's autocast context.
    :ivar state: the resumable training state; ``metrics`` the records' fan-out to the ``[logging]`` sinks;
        ``ctx`` what hooks see.
    :ivar evaluation: ``{label: results}`` so far (including ``prior_evaluation``, a pretraining stage's).
    :ivar preempt: set when SIGTERM arrived; the loop checks it at step boundaries.
    """

    recipe: Any
    plugins: Any
    dist: Dist
    log: Callable[[str], None]
    preempt: Preemption
    precision: str
    run_dir: Path
    ckpt_root: Path
    found: tuple[Path, dict[str, bytes]] | None
    allow: tuple[str, ...]
    resolved: dict[str, Any]
    paths: Any
    store: Any
    videos: np.ndarray
    model: Any
    loss_fn: Any
    aligner: Any
    embed_aligner: Any
    params: list[Any]
    loss_params: list[Any]
    parallel: Any
    optimizer: Any
    scaler: Any
    autocast: Callable[[], Any]
    metrics: MetricsLog
    ctx: RunContext
    prior_evaluation: dict[str, Any]
    state: TrainState = attrs.field(factory=TrainState)
    evaluation: dict[str, Any] = attrs.field(factory=dict)
    val_store: Any = None
    val_batches: list[list[int]] = attrs.field(factory=list)

    @property
    def cfg(self) -> Any:
        return self.recipe.run

    @property
    def tcfg(self) -> Any:
        return self.recipe.train

    @property
    def device(self) -> str:
        return self.dist.device

    @property
    def per_step(self) -> int:
        """Batches one optimizer step consumes over all ranks."""
        return self.dist.world_size * self.recipe.train.grad_accum

    def finished(self) -> bool:
        return self.state.epoch > self.tcfg.epochs or (self.tcfg.max_steps > 0 and self.state.step >= self.tcfg.max_steps)


def assemble(recipe: Any, plugins: Any, *, dist: Dist, log: Callable[[str], None], preempt: Preemption,
             precision: str, run_dir: Path, ckpt_root: Path, found: tuple[Path, dict[str, bytes]] | None,
             allow: tuple[str, ...], init_from: str, prior_evaluation: dict[str, Any]) -> Run:
    """Prepare the data, build the components and the optimizer, then restore the checkpoint (if any)."""
    import torch

    from norton_core.engine.resume import restore_state

    cfg, tcfg, ecfg = recipe.run, recipe.train, recipe.evaluation
    metrics = MetricsLog.open(recipe, run_dir, dist.is_main, log)
    # -- data: prepared once (rank 0 first, so that only one process generates or converts it) ---------------------
    source = recipe.build("data", cache_dir=cache_dir_of(cfg))
    paths = prepare_data(source, dist, log)
    if ecfg.tasks and (ecfg.before or ecfg.after) and paths.eval_root is None:
        raise DataError(f"evaluation.tasks = {ecfg.tasks} but the data source {recipe.components['data'].name!r} "
                        "provides no evaluation sets (eval_root); remove the tasks or use a source that has them")
    if found is None and init_from and not Path(init_from).expanduser().exists():
        raise CheckpointError(f"run.init_from = {init_from!r} does not exist. The paper's setup starts from VideoCLIP "
                              "weights converted to safetensors (`norton convert-videoclip`); set run.init_from = \"\" "
                              f"to start from the text encoder alone; {DEMO_HINT}")
    store = dataio.open_store(paths.train, tcfg.read_mode, tcfg.check_finite, tcfg.check_chunks)
    videos = dataio.sampleable_videos(store, log)
    val_store, val_batches = open_validation(paths, tcfg, dist, log)
    check_data_bounds(recipe, len(videos), store, dist.world_size)  # before any retrieval round or batch

    # -- components: the same seed on every rank gives identical initial weights ----------------------------------
    torch.manual_seed(cfg.seed)
    model = recipe.build("model")
    check_tokenizer(model, store)
    loss_fn = recipe.build("loss", rank=dist.rank, world_size=dist.world_size)
    aligner = recipe.build("aligner", special_tokens=model.special_tokens())
    embed_aligner = recipe.build("retrieval.aligner", special_tokens=model.special_tokens())
    if found is None and init_from:
        load_init_weights(model, init_from, log)
    model.to(dist.device)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn.to(dist.device)
    params = list(model.trainable_parameters())
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad] if isinstance(loss_fn, torch.nn.Module) else []
    params += loss_params  # a learnable temperature must really be trained
    if not params:
        raise TrainingError("the model has no trainable parameters (check model.freeze)")
    opt_cls = torch.optim.AdamW if tcfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=tcfg.lr, betas=tuple(tcfg.betas), eps=tcfg.eps, weight_decay=tcfg.weight_decay)
    # dropout streams differ per rank and do not reuse init draws; Python's and numpy's global generators (which
    # plugins may use) start from the seed too, so that they are part of the exact-resume state
    torch.manual_seed(cfg.seed + 1 + dist.rank)
    random.seed(cfg.seed + 1 + dist.rank)
    np.random.seed(cfg.seed + 1 + dist.rank)

    resolved = recipe.resolved()
    ctx = RunContext(recipe=resolved, run_dir=run_dir, rank=dist.rank, world_size=dist.world_size, model=model,
                     optimizer=optimizer, device=dist.device)
    metrics.ctx = ctx
    run = Run(recipe=recipe, plugins=plugins, dist=dist, log=log, preempt=preempt, precision=precision,
              run_dir=run_dir, ckpt_root=ckpt_root, found=found, allow=allow, resolved=resolved, paths=paths,
              store=store, videos=videos, model=model, loss_fn=loss_fn, aligner=aligner, embed_aligner=embed_aligner,
              params=params, loss_params=loss_params,
              parallel=distributed.DataParallel(model, dist) if dist.enabled else None, optimizer=optimizer,
              scaler=torch.amp.GradScaler("cuda") if precision == "fp16" else None,
              autocast=autocast_factory(precision, dist.device),
              metrics=metrics, ctx=ctx,
              prior_evaluation=prior_evaluation, val_store=val_store, val_batches=val_batches)

    # -- resume: tensors, RNG streams, the epoch's batches and the cursor ------------------------------------------
    if found is not None:
        run.state = restore_state(run, found)
    run.ctx.step, run.ctx.epoch = run.state.step, run.state.epoch
    if found is None and dist.is_main:  # a fresh start (or --resume before any checkpoint): no stale outputs
        run.metrics.truncate(0)
        (run_dir / "eval.json").unlink(missing_ok=True)
    run.evaluation = dict(prior_evaluation) | read_json(run_dir / "eval.json")
    return run
