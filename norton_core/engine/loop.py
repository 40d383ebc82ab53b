"""The training loop, top to bottom: set-up, resume, epochs of (retrieved or random) batches, checkpoints, and
the evaluation at the end. Read :func:`run` first; the helpers below it are small.

One optimizer step consumes ``world_size x grad_accum`` batches of V videos (C clips each): rank r takes batches
``step*W*A + r*A + a``, so W ranks with A accumulation steps compute exactly what one process accumulating W*A
batches computes. Gradients are averaged over all of them.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, DataError, Preempted, RecipeError, TrainingError
from ..faults import fault_point
from . import checkpoint as ckpt
from . import data as dataio
from . import distributed
from .preempt import Preemption
from .resume import open_run_dir, restore_state, save_state
from .retrieval import retrieval_round
from .schedule import learning_rate
from .setup import (
    DEMO_HINT,
    MetricsLog,
    apply_determinism,
    autocast_factory,
    cache_dir_of,
    check_tokenizer,
    load_init_weights,
    plugin_list,
    prepare_data,
    progress_bar,
    read_json,
    resolve_precision,
)
from .state import RunContext, RunResult, TrainState

__all__ = ["resolve_precision", "run"]


def run(recipe: Any, plugins: Any, *, resume: bool, overwrite: bool, allow_recipe_change: tuple[str, ...],
        init_from: str, prior_evaluation: dict[str, Any]) -> RunResult:
    cfg, tcfg = recipe.run, recipe.train
    dist = distributed.setup(cfg.device)
    log: Callable[[str], None] = (lambda m: print(m, flush=True)) if dist.is_main else (lambda m: None)
    precision = resolve_precision(tcfg.precision, dist.device)
    if precision == "fp16" and not dist.device.startswith("cuda"):
        raise RecipeError("train.precision = 'fp16' needs CUDA; use 'bf16' on CPU")
    if precision != tcfg.precision:
        log(f"norton: train.precision = 'auto' -> {precision} on {dist.device}")
    restore = apply_determinism(cfg)

    # -- the run directory: lock it, then decide between a fresh start and a resume ---------------------------------
    ckpt.check_run_name(cfg.name)
    run_dir = Path(cfg.output_dir) / cfg.name
    ckpt_root = run_dir / "checkpoints"
    lock = ckpt.RunLock(run_dir)
    try:
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        found = open_run_dir(run_dir, ckpt_root, resume, overwrite, dist, log)
        with Preemption() as preempt:
            return _train(recipe, plugins, dist, run_dir, ckpt_root, found, allow_recipe_change, init_from,
                          prior_evaluation, precision, log, preempt)
    finally:
        lock.release()
        restore()


def _train(recipe: Any, plugins: Any, dist: distributed.Dist, run_dir: Path, ckpt_root: Path,
           found: tuple[Path, dict[str, bytes]] | None, allow: tuple[str, ...], init_from: str,
           prior_evaluation: dict[str, Any], precision: str, log: Callable[[str], None],
           preempt: Preemption) -> RunResult:
    import torch

    cfg, tcfg, rcfg, ecfg = recipe.run, recipe.train, recipe.retrieval, recipe.evaluation
    resolved = recipe.resolved()
    device = dist.device

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
    store = dataio.open_store(paths.train, recipe.train.read_mode, recipe.train.check_finite)
    videos = dataio.sampleable_videos(store, log)

    # -- components: the same seed on every rank gives identical initial weights ----------------------------------
    torch.manual_seed(cfg.seed)
    model = recipe.build("model")
    check_tokenizer(model, store)
    loss_fn = recipe.build("loss", rank=dist.rank, world_size=dist.world_size)
    aligner = recipe.build("aligner", special_tokens=model.special_tokens())
    embed_aligner = recipe.build("retrieval.aligner", special_tokens=model.special_tokens())
    if found is None and init_from:
        load_init_weights(model, init_from, log)
    model.to(device)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn.to(device)
    params = list(model.trainable_parameters())
    if isinstance(loss_fn, torch.nn.Module):  # a learnable temperature must really be trained
        params += [p for p in loss_fn.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters (check model.freeze)")
    opt_cls = torch.optim.AdamW if tcfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=tcfg.lr, betas=tuple(tcfg.betas), eps=tcfg.eps, weight_decay=tcfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    autocast = autocast_factory(precision, device)
    # dropout streams differ per rank and do not reuse init draws; Python's and numpy's global generators (which
    # plugins may use) start from the seed too, so that they are part of the exact-resume state
    torch.manual_seed(cfg.seed + 1 + dist.rank)
    random.seed(cfg.seed + 1 + dist.rank)
    np.random.seed(cfg.seed + 1 + dist.rank)

    # -- resume: tensors, RNG streams, the epoch's batches and the cursor ------------------------------------------
    state = TrainState()
    metrics = MetricsLog(run_dir / "metrics.jsonl", dist.is_main)
    if found is not None:
        state = restore_state(found, model, loss_fn, optimizer, scaler, resolved, allow, dist, tcfg, log)
    ctx = RunContext(recipe=resolved, run_dir=run_dir, rank=dist.rank, world_size=dist.world_size,
                     step=state.step, epoch=state.epoch, model=model, optimizer=optimizer, device=device)
    if found is None and dist.is_main:  # a fresh start (or --resume before any checkpoint): no stale outputs
        metrics.truncate(0)
        (run_dir / "eval.json").unlink(missing_ok=True)
    evaluation = dict(prior_evaluation) | read_json(run_dir / "eval.json")

    def evaluate(label: str) -> None:
        if ecfg.tasks and dist.is_main:
            evaluation[label] = evaluate_model(model, recipe, paths, device, autocast, plugins)
            ckpt.replace_atomic(run_dir / "eval.json", json.dumps(
                {k: v for k, v in evaluation.items() if k not in prior_evaluation}, indent=1).encode())
            metrics.write({"event": "evaluation", "label": label, "step": state.step, "results": evaluation[label]})
        distributed.barrier(dist)

    def save() -> Path | None:
        return save_state(ckpt_root, state, model, loss_fn, optimizer, scaler, resolved, plugins, metrics, dist, tcfg, log)

    def finished() -> bool:
        return state.epoch > tcfg.epochs or (tcfg.max_steps > 0 and state.step >= tcfg.max_steps)

    if finished():
        log(f"norton: run already complete at step {state.step} ({run_dir})")
        if ecfg.after and "after" not in evaluation:
            evaluate("after")
        return _result(run_dir, state, True, found, {}, evaluation, dist, ecfg)

    if found is not None:
        metrics.truncate(state.metrics_offset)
        metrics.write({"event": "resume", "step": state.step, "from": found[0].name})
    if dist.is_main:
        ckpt.replace_atomic(run_dir / "recipe.json", json.dumps({**resolved, "source": recipe.source}, indent=1).encode())
        ckpt.replace_atomic(run_dir / "plugins.json", json.dumps(plugin_list(plugins), indent=1).encode())
    plugins.call("norton_run_start", run=ctx)
    if ecfg.before and state.step == 0 and "before" not in evaluation:
        evaluate("before")

    per_step = dist.world_size * tcfg.grad_accum
    last_metrics: dict[str, float] = {}
    model.train()
    while not finished():
        epoch = state.epoch
        ctx.epoch = epoch
        # -- 1. the epoch's batches: retrieved neighbourhoods from start_epoch on, random before ---------------------
        if state.batches is None:
            if rcfg.enabled and epoch >= rcfg.start_epoch:
                state.batches, stats = _retrieval(recipe, model, store, embed_aligner, videos, dist, autocast, epoch, log)
                metrics.write({"event": "retrieval", "step": state.step, **stats})
                plugins.call("norton_retrieval_round_end", run=ctx, epoch=epoch, stats=stats)
            else:
                state.batches = dataio.random_batches(videos, tcfg.videos_per_batch, cfg.seed, epoch)
            state.cursor = 0
        steps_in_epoch = len(state.batches) // per_step
        if steps_in_epoch == 0:
            raise DataError(f"epoch {epoch} has {len(state.batches)} batches of {tcfg.videos_per_batch} videos, fewer "
                            f"than one step needs ({per_step} = world_size x train.grad_accum)")
        plugins.call("norton_epoch_start", run=ctx, epoch=epoch)

        # -- 2. this rank's batches from the cursor on, laid out by DataLoader workers ------------------------------
        mine = [state.batches[s * per_step + dist.rank * tcfg.grad_accum + a]
                for s in range(state.cursor, steps_in_epoch) for a in range(tcfg.grad_accum)]
        loader = dataio.make_loader(dataio.BatchDataset(store, aligner, mine, cfg.seed, epoch, "train"),
                                    tcfg.num_workers, cfg.seed + epoch)
        batches = iter(loader)
        bar = progress_bar(steps_in_epoch, state.cursor, epoch, dist)
        epoch_sums: dict[str, float] = {}
        epoch_count = 0
        while state.cursor < steps_in_epoch and not finished():
            t0 = time.perf_counter()
            # -- 3. forward/backward over grad_accum batches; non-finite terms stop before any update ----------------
            sums, clips, bad_term = {}, 0, ""
            for _ in range(tcfg.grad_accum):
                batch = {k: (v.to(device, non_blocking=True) if hasattr(v, "to") else v) for k, v in next(batches).items()}
                clips += int(batch["caps"].shape[0])
                with autocast():
                    outputs = model(batch["caps"], batch["cmasks"], batch["vfeats"], batch["vmasks"])
                    terms = loss_fn(outputs, batch)
                for key, value in terms.items():
                    val = float(value.detach().float())
                    sums[key] = sums.get(key, 0.0) + val
                    if not math.isfinite(val) and not bad_term and (key == "loss" or key.endswith("_loss")):
                        bad_term = key
                if not bad_term:
                    scaled = terms["loss"] / tcfg.grad_accum
                    (scaler.scale(scaled) if scaler else scaled).backward()
            ok = _all_ranks_agree(not bad_term, dist, device)
            grad_norm = float("nan")
            if ok:
                distributed.all_reduce_mean_grads(params, dist)
                if scaler:
                    scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tcfg.clip_norm or float("inf")))
                # with fp16 an overflow is the scaler's business (it skips the step and lowers the scale)
                if not math.isfinite(grad_norm) and not scaler:
                    ok, bad_term = False, "gradient norm"
            if not ok:
                optimizer.zero_grad(set_to_none=True)
                handle_nonfinite(recipe, state, tcfg, bad_term or "a loss term on another rank", dist, epoch, ckpt_root,
                           metrics)
                state.cursor += 1
                continue
            # -- 4. the update ----------------------------------------------------------------------------------------
            lr = learning_rate(tcfg, state.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.cursor += 1
            state.consecutive_skips = 0
            ctx.step = state.step
            # -- 5. logging: every rank's terms averaged, so the log does not depend on the world size ---------------
            keys = sorted(sums)
            values = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
            values = distributed.all_reduce_tensor(values.to(device), dist).cpu() / per_step
            step_metrics = {k: float(v) for k, v in zip(keys, values, strict=True)}
            seconds = time.perf_counter() - t0
            step_metrics.update(lr=lr, grad_norm=grad_norm, clips_per_s=clips * dist.world_size / max(seconds, 1e-9))
            for k, v in step_metrics.items():
                epoch_sums[k] = epoch_sums.get(k, 0.0) + v
            epoch_count += 1
            last_metrics = step_metrics
            if state.step % tcfg.log_every == 0:
                metrics.write({"step": state.step, "epoch": epoch, **step_metrics, "time": time.time()})
            if bar is not None:
                bar.set_postfix(loss=f"{step_metrics.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}",
                                clips_s=f"{step_metrics['clips_per_s']:.1f}", refresh=False)
                bar.update(1)
            plugins.call("norton_step_end", run=ctx, step=state.step, metrics=step_metrics)
            fault_point("step")
            scheduled = bool(tcfg.checkpoint_every) and state.step % tcfg.checkpoint_every == 0
            if scheduled:
                save()
            # -- 7. preemption: SIGTERM on any rank -> every rank commits this step (once) and stops ---------------
            if not _all_ranks_agree(not preempt.requested, dist, device):
                if not scheduled:
                    save()
                raise Preempted(f"SIGTERM: stopped after step {state.step} with its checkpoint committed in "
                                f"{ckpt_root}; continue with --resume")
        if bar is not None:
            bar.close()
        del batches, loader
        # -- 6. end of epoch (or of max_steps): checkpoint, then the hooks -------------------------------------------
        if state.cursor >= steps_in_epoch:
            state.epoch, state.cursor, state.batches = epoch + 1, 0, None
        save()
        epoch_means = {k: v / max(epoch_count, 1) for k, v in epoch_sums.items()}
        metrics.write({"event": "epoch_end", "epoch": epoch, "step": state.step, **epoch_means})
        plugins.call("norton_epoch_end", run=ctx, epoch=epoch, metrics=epoch_means)

    if ecfg.after:
        evaluate("after")
    final = dict(evaluation.get("after", {}))
    plugins.call("norton_run_end", run=ctx, metrics=final)
    return _result(run_dir, state, True, found, last_metrics, evaluation, dist, ecfg)


# ------------------------------------------------------------------------------------------------------------------
# retrieval, numerical health, evaluation
# ------------------------------------------------------------------------------------------------------------------


def _retrieval(recipe: Any, model: Any, store: Any, aligner: Any, videos: np.ndarray, dist: distributed.Dist,
               autocast: Any, epoch: int, log: Callable[[str], None]) -> tuple[np.ndarray, dict[str, Any]]:
    cfg, tcfg, rcfg = recipe.run, recipe.train, recipe.retrieval

    def make_loader(chunks: list[list[int]]) -> Any:
        dataset = dataio.BatchDataset(store, aligner, chunks, cfg.seed, epoch, "embed")
        return dataio.make_loader(dataset, tcfg.num_workers, cfg.seed + epoch)

    batches, stats = retrieval_round(
        model=model, make_loader=make_loader, videos=videos,
        build_backend=lambda: recipe.build("retrieval.backend", seed=cfg.seed + epoch),
        per_batch=tcfg.videos_per_batch, num_cands=rcfg.num_cands, embed_per_batch=rcfg.embed_videos_per_batch,
        recall_sample=rcfg.recall_sample, seed=cfg.seed, epoch=epoch, dist=dist, autocast=autocast, log=log)
    log(f"norton: retrieval round for epoch {epoch}: {stats['videos']} videos -> {stats['batches']} batches in "
        f"{stats['seconds']:.1f}s ({stats['backend']}, neighbour recall vs exact {stats['recall']:.3f})")
    return batches, stats


def _all_ranks_agree(ok: bool, dist: distributed.Dist, device: str) -> bool:
    import torch

    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    return bool(distributed.all_reduce_tensor(flag, dist, "min").item())


def handle_nonfinite(recipe: Any, state: TrainState, tcfg: Any, term: str, dist: distributed.Dist, epoch: int,
               ckpt_root: Path, metrics: MetricsLog) -> None:
    """Stop (policy "error") or count a skipped step (policy "skip"); the optimizer never saw the bad values."""
    latest = ckpt_root / "latest"
    where = latest.read_text().strip() if latest.exists() else "none yet"
    message = (f"non-finite {term} at step {state.step + 1} (epoch {epoch}, batch {state.cursor}, rank {dist.rank}) "
               f"with loss {recipe.components['loss'].name!r}; no update was applied and the last checkpoint "
               f"({where}) is intact. Lower train.lr, use precision fp32, or set train.on_nonfinite = 'skip'")
    if tcfg.on_nonfinite == "error":
        raise TrainingError(message)
    state.consecutive_skips += 1
    state.skipped_steps += 1
    metrics.write({"event": "skipped_step", "step": state.step, "epoch": epoch, "term": term})
    if state.consecutive_skips > tcfg.max_consecutive_skips:
        raise TrainingError(f"{state.consecutive_skips} consecutive non-finite steps (train.max_consecutive_skips = "
                            f"{tcfg.max_consecutive_skips}); last: {message}")


def evaluate_model(model: Any, recipe: Any, paths: Any, device: str, autocast: Any, plugins: Any) -> dict[str, float]:
    """``{"<task>/<metric>": value}`` for the recipe's evaluation tasks (rank 0 only)."""
    from ..evaluation import run_evaluation

    ecfg = recipe.evaluation
    options = {task: recipe.components[f"evaluation.task_options.{task}"].config for task in ecfg.tasks}
    was_training = model.training
    model.eval()
    try:
        with autocast():
            return run_evaluation(model, ecfg.tasks, paths.eval_root, options=options, batch_size=ecfg.batch_size,
                                  device=device, progress=sys.stderr.isatty(), plugins=plugins)
    finally:
        model.train(was_training)


def _result(run_dir: Path, state: TrainState, complete: bool, found: Any, last: dict[str, float],
            evaluation: dict[str, Any], dist: distributed.Dist, ecfg: Any) -> RunResult:
    if dist.is_main and evaluation and ecfg.tasks:
        print_evaluation(evaluation)
    return RunResult(run_dir=run_dir, step=state.step, epoch=state.epoch if state.batches is not None else state.epoch - 1,
                     complete=complete, resumed_from=found[0] if found else None, metrics=last,
                     evaluation=evaluation)


def print_evaluation(evaluation: dict[str, Any]) -> None:
    """All result sets side by side (e.g. the untrained model, the pretraining stage, this run)."""
    from ..evaluation import format_table

    first = next(iter(evaluation.values()))
    print(format_table(first, evaluation), flush=True)
