"""A run's set-up, in the order it happens: :func:`assemble` prepares the data, builds the components and the
optimizer and restores a checkpoint into one :class:`Run`, which every engine helper takes (so none of them needs
a dozen arguments and the loop in :mod:`norton_core.engine.loop` reads top to bottom); the helpers below it follow
in the order it calls them. Nothing here holds training state beyond the ``Run`` it returns.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import numpy as np

from norton_core._util.bounded import read_json
from norton_core.engine import checkpoint as ckpt
from norton_core.engine import distributed, state_files
from norton_core.engine import loader as dataio
from norton_core.engine.distributed import DataParallel, Dist
from norton_core.engine.preempt import Preemption
from norton_core.engine.records import MetricsLog
from norton_core.engine.state import RunContext, TrainState
from norton_core.engine.validation import open_validation
from norton_core.errors import CheckpointError, DataError, RecipeError, TrainingError

if TYPE_CHECKING:
    import torch

    from norton_core.data.store import ShardStore
    from norton_core.plugin.interfaces import Aligner, DataPaths, Loss, Model
    from norton_core.plugin.manager import Plugins
    from norton_core.recipe.load import Recipe
    from norton_core.recipe.tables import RunConfig, TrainConfig

    class TrainableModel(Model, torch.nn.Module):
        """What the engine trains: a :class:`Model` that is a ``torch.nn.Module``, as the interface asks."""

#: what to try without the dataset
DEMO_HINT = "to try norton without the dataset, run the laptop demo: norton-run recipes/how2_demo.toml"

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
    :ivar trained_in: ``{evaluation label: training precision}`` of an earlier stage's results (the run's own come
        from its state), so that tables say which precision made a column.
    """

    recipe: Recipe
    plugins: Plugins
    dist: Dist
    log: Callable[[str], None]
    preempt: Preemption
    precision: str
    run_dir: Path
    ckpt_root: Path
    found: tuple[Path, dict[str, bytes]] | None
    allow: tuple[str, ...]
    resolved: dict[str, Any]
    paths: DataPaths
    store: ShardStore
    videos: np.ndarray
    model: TrainableModel
    loss_fn: Loss
    aligner: Aligner
    embed_aligner: Aligner
    params: list[torch.nn.Parameter]
    loss_params: list[torch.nn.Parameter]
    parallel: DataParallel | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    autocast: Callable[[], AbstractContextManager[Any]]
    metrics: MetricsLog
    ctx: RunContext
    prior_evaluation: dict[str, dict[str, float]]
    state: TrainState = attrs.field(factory=TrainState)
    evaluation: dict[str, dict[str, float]] = attrs.field(factory=dict)
    val_store: ShardStore | None = None
    val_batches: list[list[int]] = attrs.field(factory=list)
    trained_in: dict[str, str] = attrs.field(factory=dict)

    @property
    def cfg(self) -> RunConfig:
        return self.recipe.run

    @property
    def tcfg(self) -> TrainConfig:
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


def assemble(recipe: Recipe, plugins: Plugins, *, dist: Dist, log: Callable[[str], None], preempt: Preemption,
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
    betas = cast("tuple[float, float]", tuple(tcfg.betas))  # torch itself refuses any other length
    groups = lr_groups(model, params, tcfg.lr_scales, log if dist.is_main else None)
    optimizer = opt_cls(groups, lr=tcfg.lr, betas=betas, eps=tcfg.eps, weight_decay=tcfg.weight_decay)
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
    run.evaluation = dict(prior_evaluation) | read_evaluation(run_dir / "eval.json")
    return run


def check_data_bounds(recipe: Any, sampleable: int, store: Any, world_size: int) -> None:
    """Refuse sizes the training store cannot fill, before a retrieval round or a batch is built.

    One optimizer step takes ``world_size x grad_accum`` batches of ``videos_per_batch`` distinct videos from one
    epoch, and a retrieval query has at most every other video as a neighbour.
    """
    tcfg, rcfg = recipe.train, recipe.retrieval
    has = f"the training store {getattr(store, 'path', '(in memory)')} has {sampleable} sampleable videos"
    problems = []
    per_step = world_size * tcfg.grad_accum
    if tcfg.videos_per_batch * per_step > sampleable:
        problems.append(
            f"{recipe.source}: train.videos_per_batch: {tcfg.videos_per_batch} videos x {per_step} batch(es) per step "
            f"(world_size {world_size} x train.grad_accum {tcfg.grad_accum}) need {tcfg.videos_per_batch * per_step} "
            f"videos, but {has}; at most {sampleable // per_step}")
    retrieves = rcfg.enabled and rcfg.start_epoch <= tcfg.epochs
    if retrieves and rcfg.num_cands > sampleable:
        problems.append(f"{recipe.source}: retrieval.num_cands: {rcfg.num_cands} neighbours per query, but {has}; "
                        f"at most {sampleable}")
    if problems:
        raise RecipeError(problems=problems)

def apply_determinism(cfg: Any) -> Callable[[], None]:
    """Apply the recipe's thread and determinism settings; returns a function that puts the previous ones back
    (a run inside a notebook or a test must not leave the process single-threaded).

    faiss (its own OpenMP runtime, one thread per core by default) follows ``run.threads`` too: two one-thread
    runs side by side must not each start a faiss thread per core in their retrieval rounds. Deterministic runs
    keep faiss at one thread (its k-means reductions could otherwise add in a different order)."""
    import torch

    threads, strict = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    # faiss is imported (0.2 s) only when a setting touches it; by default it has one thread per core, as torch
    faiss_threads = _faiss_threads() if cfg.threads or cfg.deterministic else None

    def restore() -> None:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)
        if faiss_threads is not None:
            _faiss_threads(faiss_threads)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        _faiss_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        if not cfg.threads:
            torch.set_num_threads(1)  # reductions split across threads may add in a different order
        _faiss_threads(1)
    return restore


def _faiss_threads(set_to: int | None = None) -> int | None:
    """faiss's OpenMP thread count (None without faiss); with ``set_to``, set it first."""
    try:
        import faiss
    except ImportError:
        return None
    if set_to is not None:
        faiss.omp_set_num_threads(set_to)
    return int(faiss.omp_get_max_threads())


def cache_dir_of(cfg: Any) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path("~/.cache/norton").expanduser()


def prepare_data(source: Any, dist: distributed.Dist, log: Callable[[str], None]) -> Any:
    """Rank 0 prepares; the others wait, then open what it prepared."""
    paths = None
    for turn in (0, 1):
        if (dist.is_main and turn == 0) or (not dist.is_main and turn == 1):
            try:
                paths = source.prepare(progress=dist.is_main and sys.stderr.isatty())
            except DataError as exc:
                if "how2_demo" in str(exc) or any("how2_demo" in line for line in exc.lines()):
                    raise
                lines = exc.lines()
                raise DataError(f"{lines[0]} ({DEMO_HINT})", problems=[*lines, DEMO_HINT]) from None
        distributed.barrier(dist)
    return paths


def check_tokenizer(model: Any, store: Any) -> None:
    """Shards are tokenized once, offline: refuse a model whose tokenizer would read the ids differently."""
    manifest = getattr(store, "manifest", {}) or {}
    expected = manifest.get("vocab_hash")
    if not expected:
        return
    from norton_core._util.text_encoders import load_tokenizer, vocab_hash

    actual = vocab_hash(load_tokenizer(model.tokenizer_name()))
    if actual != expected:
        raise DataError(f"{getattr(store, 'path', 'the training store')}: tokenized with {manifest.get('tokenizer')!r} "
                        f"(vocab {expected[:12]}...), but the model's text encoder uses {model.tokenizer_name()!r} "
                        f"(vocab {actual[:12]}...); prepare the data with the model's tokenizer")


def load_init_weights(model: Any, spec: str, log: Callable[[str], None]) -> None:
    """Weights from another run, a checkpoint directory or a ``.safetensors`` file (never a pickle)."""
    path = Path(spec).expanduser()
    # checkpoints are checked against their manifests: a corrupt one is refused naming the file, never replaced
    if (path / "checkpoints").is_dir():
        steps = ckpt.committed_steps(path / "checkpoints")
        if not steps:
            raise CheckpointError(f"run.init_from {spec!r}: the run has no checkpoint")
        where = steps[-1][1]  # the run's final weights
        tensors = state_files.bytes_to_tensors(ckpt.read_checkpoint(where)["model.safetensors"],
                                               str(where / "model.safetensors"))
    elif (path / "manifest.json").is_file():
        tensors, where = state_files.bytes_to_tensors(ckpt.read_checkpoint(path)["model.safetensors"],
                                                      str(path / "model.safetensors")), path
    elif path.is_file() and path.suffix == ".safetensors":  # inside a checkpoint directory: checked too
        tensors, where = state_files.bytes_to_tensors(ckpt.read_checkpoint_file(path), str(path)), path
    elif path.exists():
        raise CheckpointError(f"run.init_from {spec!r}: expected a run directory, a checkpoint directory or a "
                              ".safetensors file; pickled checkpoints (.pt/.pth/.bin) are never loaded — convert "
                              "VideoCLIP weights with `norton convert-videoclip`")
    else:
        raise CheckpointError(f"run.init_from {spec!r}: not found")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if len(missing) == len(model.state_dict()):
        raise CheckpointError(f"run.init_from {where}: none of its {len(tensors)} tensors match the model's keys")
    log(f"norton: initialised from {where} ({len(tensors) - len(unexpected)} tensors; "
        f"{len(missing)} missing, {len(unexpected)} unexpected)")


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: bf16 where it runs natively, else fp16 on CUDA (with loss scaling) and fp32 on CPU."""
    if precision != "auto":
        return precision
    import torch

    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    cpu = torch.cpu
    native = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
        cpu, "_is_amx_tile_supported", lambda: False)()
    return "bf16" if native else "fp32"


def autocast_factory(precision: str, device: str) -> Callable[[], Any]:
    import torch

    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return lambda: torch.autocast(kind, dtype=dtype)


def plugin_list(plugins: Any) -> list[dict[str, Any]]:
    return [{"name": i.name, "distribution": i.distribution, "version": i.version, "entry_point": i.entry_point}
            for i in sorted(plugins.infos.values(), key=lambda i: i.name)]


#: the largest eval.json read back (a run's results are a few KB)
MAX_EVAL_BYTES = 16 * 1024 * 1024


def read_evaluation(path: Path) -> dict[str, Any]:
    """A resumed run's ``eval.json`` (absent before its first evaluation). An unreadable one is an error naming
    it, not an empty table: a silently dropped result would be evaluated again, or be missing from the run's table."""
    if not path.exists():
        return {}
    results: dict[str, Any] = read_json(path, MAX_EVAL_BYTES, "the run's evaluation results; delete it to evaluate "
                                        "again", CheckpointError, expect=dict)
    return results


def lr_groups(model: Any, params: list[torch.nn.Parameter], scales: Mapping[str, float],
              log: Callable[[str], None] | None) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: ``params`` split by ``train.lr_scales`` (parameter-name prefix ->
    multiplier of the scheduled lr; the longest matching prefix wins, everything else, the loss's own parameters
    included, gets 1). Each group carries its ``lr_scale``; one group when no scale is set. A prefix that matches
    no trainable parameter, or a negative or non-finite multiplier, is a recipe error; the split is said once."""
    if not scales:
        return [{"params": params, "lr_scale": 1.0}]
    bad = [f"train.lr_scales.{k}: must be a finite number >= 0, got {v!r}" for k, v in scales.items()
           if not (math.isfinite(v) and v >= 0)]
    if not callable(getattr(model, "named_parameters", None)):
        bad.append(f"train.lr_scales: model {type(model).__name__} has no named_parameters(), so no prefix can "
                   "name its parameters")
    if bad:
        raise RecipeError(problems=bad)
    names = {id(p): n for n, p in model.named_parameters()}
    prefixes = sorted(scales, key=len, reverse=True)
    chosen: dict[float, list[torch.nn.Parameter]] = {1.0: []}
    used: dict[str, int] = dict.fromkeys(scales, 0)
    for p in params:
        name = names.get(id(p), "")
        match = next((k for k in prefixes if name == k or name.startswith(k + ".")), None) if name else None
        if match is not None:
            used[match] += 1
        chosen.setdefault(scales[match] if match is not None else 1.0, []).append(p)
    unused = [k for k, n in used.items() if n == 0]
    if unused:
        tops = sorted({names[id(p)].split(".", 1)[0] for p in params if id(p) in names})
        raise RecipeError(problems=[f"train.lr_scales.{k}: matches no trainable parameter (trainable modules: "
                                    f"{', '.join(tops)})" for k in unused])
    if log is not None:
        parts = [f"{k} x{scales[k]:g} ({used[k]} tensors)" for k in scales]
        log(f"norton: learning rates: {', '.join(parts)}; {len(chosen[1.0])} other tensors at train.lr")
    return [{"params": ps, "lr_scale": scale} for scale, ps in chosen.items() if ps]
