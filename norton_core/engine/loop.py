"""The training loop, top to bottom: set-up, resume, epochs of (retrieved or random) batches, checkpoints, and
the evaluation at the end. Read :func:`run` and :func:`_train` first; the helpers below them are small and take
the run's parts (:class:`~norton_core.engine.setup.Run`), in the order a step uses them: the
forward pass and the loss terms' checks, the update and its learning-rate schedule.

One optimizer step consumes ``world_size x grad_accum`` batches of V videos (C clips each): rank r takes batches
``step*W*A + r*A + a``, so W ranks with A accumulation steps compute exactly what one process accumulating W*A
batches computes. Gradients are averaged over all of them.

Loss terms stay on the device during a step: the host waits for the device once per step, when it learns whether
every rank's loss terms and the gradient norm are finite; the logged values come back in the same transfer.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from norton_core._util.faults import fault_point
from norton_core.engine import checkpoint as ckpt
from norton_core.engine import distributed, liveness
from norton_core.engine import loader as dataio
from norton_core.engine.chance import ChanceCount, ChanceWatch, chance_levels_of
from norton_core.engine.preempt import Preemption
from norton_core.engine.progress import Progress, planned_steps, steps_per_epoch
from norton_core.engine.resume import open_run_dir, save_state
from norton_core.engine.setup import Run, apply_determinism, assemble, plugin_list, resolve_precision
from norton_core.engine.state import RunResult, with_precision
from norton_core.engine.validation import validate
from norton_core.errors import DataError, PluginError, Preempted, RecipeError, TrainingError
from norton_core.recipe.tables import TrainConfig
from norton_core.retrieval.round import describe_recall, retrieval_round

__all__ = ["resolve_precision", "run"]


def run(recipe: Any, plugins: Any, *, resume: bool, overwrite: bool, allow_recipe_change: tuple[str, ...],
        init_from: str, prior_evaluation: dict[str, Any], prior_precision: dict[str, str] | None = None) -> RunResult:
    cfg, tcfg = recipe.run, recipe.train
    dist = distributed.setup(cfg.device)
    log = (lambda m: print(m, flush=True)) if dist.is_main else (lambda m: None)
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
    peers = liveness.watch(dist, log)  # heartbeats (to name a dead rank); under torchrun, stop when it dies
    try:
        with liveness.peer_failures(dist, peers):  # a dead rank: one line naming it, not a gloo traceback
            if dist.is_main:
                run_dir.mkdir(parents=True, exist_ok=True)
                lock.acquire()
            found = open_run_dir(run_dir, ckpt_root, resume, overwrite, dist, log, tcfg)
            with Preemption() as preempt:
                # data, components, optimizer and (when resuming) their checkpointed state, gathered in one object
                parts = assemble(recipe, plugins, dist=dist, log=log, preempt=preempt, precision=precision,
                                 run_dir=run_dir, ckpt_root=ckpt_root, found=found, allow=allow_recipe_change,
                                 init_from=init_from, prior_evaluation=prior_evaluation)
                parts.trained_in.update(prior_precision or {})
                try:
                    return _train(parts)
                finally:
                    parts.metrics.close()
    finally:
        lock.release()
        restore()


def _train(run: Run) -> RunResult:
    state, tcfg, ecfg, plugins = run.state, run.tcfg, run.recipe.evaluation, run.plugins
    if run.finished():
        run.log(f"norton: run already complete at step {state.step} ({run.run_dir})")
        if ecfg.after and "after" not in run.evaluation:
            evaluate(run, "after")
        return _result(run, {})
    progress = _start(run)
    watch = _chance_watch(run, progress.total)

    last_metrics: dict[str, float] = {}
    run.model.train()
    while not run.finished():
        epoch = run.ctx.epoch = state.epoch
        # -- 1. the epoch's batches: retrieved neighbourhoods from start_epoch on, random before ---------------------
        steps_in_epoch = _plan_epoch(run, epoch)
        plugins.epoch_start(run=run.ctx, epoch=epoch)
        progress.epoch(epoch)

        # -- 2. this rank's batches from the cursor on, laid out by DataLoader workers ------------------------------
        batches = iter(_epoch_loader(run, epoch, steps_in_epoch))
        epoch_sums: dict[str, float] = {}
        epoch_count = 0
        while state.cursor < steps_in_epoch and not run.finished():
            t0 = time.perf_counter()
            # -- 3. forward/backward over grad_accum batches; the terms stay on the device ---------------------------
            try:
                sums, per_batch, sizes = _forward_backward(run, batches)
            except _WorkerLost as exc:  # preempted and a worker died of the signal anyway: still the step boundary
                save_state(run)
                raise Preempted(f"SIGTERM: stopped after step {state.step} with its checkpoint committed in "
                                f"{run.ckpt_root} (a DataLoader worker died: {exc}); continue with --resume") from None
            # -- 4. numerical health, agreed by every rank: a non-finite term or gradient stops before any update ----
            bad_term, grad_norm, values = _check_step(run, sums, per_batch)
            if bad_term:
                run.optimizer.zero_grad(set_to_none=True)
                handle_nonfinite(run, bad_term, epoch)
                state.cursor += 1
                continue
            # -- 5. the update ----------------------------------------------------------------------------------------
            lr = _update(run)
            # -- 6. logging: every rank's terms averaged, so the log does not depend on the world size ---------------
            step_metrics = {**values, "lr": lr, "grad_norm": grad_norm,
                            "clips_per_s": sum(sizes) * run.dist.world_size / max(time.perf_counter() - t0, 1e-9)}
            for k, v in step_metrics.items():
                epoch_sums[k] = epoch_sums.get(k, 0.0) + v
            epoch_count += 1
            last_metrics = step_metrics
            if state.step % tcfg.log_every == 0:
                run.metrics.write({"step": state.step, "epoch": epoch, **step_metrics, "time": time.time()})
            if watch is not None:
                _watch_step(run, watch, values["loss"], sizes)
            progress.step(state.step, epoch, step_metrics, note=watch.marker() if watch is not None else "")
            plugins.step_end(run=run.ctx, step=state.step, metrics=step_metrics)
            fault_point("step")
            scheduled = bool(tcfg.checkpoint_every) and state.step % tcfg.checkpoint_every == 0
            if scheduled:
                validate(run)
                save_state(run)
            # -- 7. preemption: SIGTERM on any rank -> every rank commits this step (once) and stops ---------------
            if not _all_ranks_agree(not run.preempt.requested, run.dist):
                if not scheduled:
                    save_state(run)
                raise Preempted(f"SIGTERM: stopped after step {state.step} with its checkpoint committed in "
                                f"{run.ckpt_root}; continue with --resume")
        del batches  # stops the epoch's DataLoader workers
        # -- 8. end of epoch (or of max_steps): checkpoint, then the hooks -------------------------------------------
        if state.cursor >= steps_in_epoch:
            state.epoch, state.cursor, state.batches = epoch + 1, 0, None
        validate(run)
        save_state(run)
        epoch_means = {k: v / max(epoch_count, 1) for k, v in epoch_sums.items()}
        run.metrics.write({"event": "epoch_end", "epoch": epoch, "step": state.step, **epoch_means})
        plugins.epoch_end(run=run.ctx, epoch=epoch, metrics=epoch_means)

    progress.close()
    if watch is not None:
        run.metrics.write(watch.record("end", state.step, watch.count.loss))
    if ecfg.after:
        evaluate(run, "after")
    plugins.run_end(run=run.ctx, metrics=dict(run.evaluation.get("after", {})))
    return _result(run, last_metrics)


# ------------------------------------------------------------------------------------------------------------------
# the steps of the loop
# ------------------------------------------------------------------------------------------------------------------


def _start(run: Run) -> Progress:
    """Record what runs (recipe, plugins), say how long it is, tell the hooks, and evaluate the untrained model if
    asked. Returns the progress report of the steps to come."""
    state, tcfg = run.state, run.tcfg
    per_epoch = steps_per_epoch(len(run.videos), tcfg.videos_per_batch, run.per_step)
    total = planned_steps(tcfg, per_epoch)
    if run.found is not None:
        run.metrics.truncate(state.metrics_offset)
        run.metrics.write({"event": "resume", "step": state.step, "from": run.found[0].name})
    run.metrics.start()
    state.precision = with_precision(state.precision, run.precision)
    run.metrics.write({"event": "start", "step": state.step, "total_steps": total, "steps_per_epoch": per_epoch,
                       "epochs": tcfg.epochs, "world_size": run.dist.world_size, "precision": run.precision})
    cut = f", stopping at train.max_steps = {tcfg.max_steps}" if tcfg.max_steps and tcfg.max_steps < \
        tcfg.epochs * per_epoch else ""
    plan = f"{total} steps ({tcfg.epochs} epoch{'s' * (tcfg.epochs != 1)} x {per_epoch} steps{cut})"
    run.log(f"norton: continuing run {run.cfg.name} at step {state.step} of {plan}" if run.found is not None else
            f"norton: starting run {run.cfg.name} in {run.run_dir}: {plan}")
    if run.dist.is_main:
        recipe_json = {**run.resolved, "source": run.recipe.source}
        ckpt.replace_atomic(run.run_dir / "recipe.json", json.dumps(recipe_json, indent=1).encode())
        ckpt.replace_atomic(run.run_dir / "plugins.json", json.dumps(plugin_list(run.plugins), indent=1).encode())
    run.plugins.run_start(run=run.ctx)
    if run.recipe.evaluation.before and state.step == 0 and "before" not in run.evaluation:
        evaluate(run, "before")
    return Progress(total, state.step, tcfg.epochs, tcfg.log_every, run.log, enabled=run.dist.is_main)


def _chance_watch(run: Run, total_steps: int) -> ChanceWatch | None:
    """The watch over a loss stuck at chance, or None: switched off (``logging.chance_tolerance = 0``), or a loss
    that declares no chance value (said once, so that nobody takes the silence for a run that learns)."""
    lcfg = run.recipe.logging
    if lcfg.chance_tolerance == 0:
        return None
    clips = run.tcfg.videos_per_batch * run.aligner.clips_per_video
    if chance_levels_of(run.loss_fn, clips).get("loss", 0.0) <= 0:
        run.log(f"norton: loss {run.recipe.components['loss'].name!r} declares no chance value "
                "(Loss.chance_levels), so this run is not watched for a loss stuck at chance")
        return None
    return ChanceWatch(lcfg.chance_tolerance, lcfg.chance_share, ChanceCount.from_json(run.state.chance), run.log,
                       total_steps, run.tcfg.warmup_updates)


def _watch_step(run: Run, watch: ChanceWatch, loss: float, sizes: list[int]) -> None:
    """Count the step against the mean chance value of this rank's batches (the same on every rank unless short
    batches are kept); the count is part of the checkpointed state."""
    chance = sum(chance_levels_of(run.loss_fn, n).get("loss", 0.0) for n in sizes) / len(sizes)
    rcfg = run.recipe.retrieval
    retrieved = rcfg.enabled and run.state.epoch >= rcfg.start_epoch
    record = watch.observe(run.state.step, loss, chance, retrieved)
    run.state.chance = watch.count.to_json()
    if record is not None:
        run.metrics.write(record)


def _plan_epoch(run: Run, epoch: int) -> int:
    """The epoch's batches (kept in the state, so a resume reuses them); returns the epoch's optimizer steps."""
    state, rcfg, tcfg = run.state, run.recipe.retrieval, run.tcfg
    if state.batches is None:
        if rcfg.enabled and epoch >= rcfg.start_epoch:
            state.batches, stats = _retrieval(run, epoch)
            run.metrics.write({"event": "retrieval", "step": state.step, **stats})
            run.plugins.retrieval_round_end(run=run.ctx, epoch=epoch, stats=stats)
        else:
            state.batches = dataio.random_batches(run.videos, tcfg.videos_per_batch, run.cfg.seed, epoch)
        state.cursor = 0
    steps_in_epoch = len(state.batches) // run.per_step
    if steps_in_epoch == 0:
        raise DataError(f"epoch {epoch} has {len(state.batches)} batches of {tcfg.videos_per_batch} videos, "
                        f"fewer than one step needs ({run.per_step} = world_size x train.grad_accum)")
    return steps_in_epoch


def _epoch_loader(run: Run, epoch: int, steps_in_epoch: int) -> Any:
    state, accum, seed = run.state, run.tcfg.grad_accum, run.cfg.seed
    if state.batches is None:
        raise RuntimeError("the epoch's batches are planned before its loader is made")
    mine = [state.batches[s * run.per_step + run.dist.rank * accum + a]
            for s in range(state.cursor, steps_in_epoch) for a in range(accum)]
    dataset = dataio.BatchDataset(run.store, run.aligner, mine, seed, epoch, "train")
    return dataio.make_loader(dataset, run.tcfg.num_workers, seed + epoch, pin_memory=run.device.startswith("cuda"))


def _forward_backward(run: Run, batches: Any) -> tuple[dict[str, Any], list[dict[str, Any]], list[int]]:
    """Forward and backward over ``grad_accum`` batches. Returns each term's float64 sum over the batches, each
    batch's terms (to name the first non-finite one) and each batch's clips; nothing here waits for the device.

    A batch with a non-finite loss is still backpropagated: its gradients are dropped with the whole step, and
    checking it before the backward would cost a device synchronisation per batch."""
    sums: dict[str, Any] = {}
    per_batch: list[dict[str, Any]] = []
    sizes: list[int] = []
    for a in range(run.tcfg.grad_accum):
        try:
            raw = next(batches)
        except RuntimeError as exc:  # torch reports a dead DataLoader worker as RuntimeError
            if a == 0 and run.preempt.requested:
                raise _WorkerLost(str(exc).strip()) from exc
            raise
        batch = {k: (v.to(run.device, non_blocking=True) if hasattr(v, "to") else v) for k, v in raw.items()}
        sizes.append(int(batch["caps"].shape[0]))
        # under torchrun, DDP averages the gradients during the step's last backward (not during accumulation)
        last = a == run.tcfg.grad_accum - 1
        with contextlib.nullcontext() if run.parallel is None or last else run.parallel.no_sync():
            # the model sees the whole batch; the loss runs under autocast only if it says so (Loss.autocast)
            _, raw_terms = forward_and_loss(run.parallel or run.model, run.loss_fn, batch, run.autocast)
            terms = loss_terms(raw_terms, run.recipe, run.plugins)
            # float32 values summed in float64: the same numbers Python floats gave when each term was read per batch
            values = {key: value.detach().float().reshape(()).double() for key, value in terms.items()}
            for key, value in values.items():
                sums[key] = sums[key] + value if key in sums else value
            per_batch.append(values)
            scaled = terms["loss"] / run.tcfg.grad_accum
            (run.scaler.scale(scaled) if run.scaler else scaled).backward()
    return sums, per_batch, sizes


class _WorkerLost(Exception):
    """A DataLoader worker died while SIGTERM was pending, before this step read anything: workers ignore the
    job's SIGTERM, but one can die of it in the moment between its start and that set-up."""


def _is_loss_term(key: str) -> bool:
    return key == "loss" or key.endswith("_loss")


def _check_step(run: Run, sums: dict[str, Any], per_batch: list[dict[str, Any]]) -> tuple[str, float, dict[str, float]]:
    """Average the gradients over ranks, clip them, and find out (in one transfer from the device) whether every
    rank's loss terms and the gradient norm are finite. Returns (the non-finite term or "", gradient norm, the
    step's terms averaged over every rank's batches)."""
    import torch

    dist, scaler = run.dist, run.scaler
    keys = sorted(sums)
    # a sum is non-finite exactly when one of its batches' values is (float64 sums of float32 values cannot overflow)
    loss_ok = torch.isfinite(torch.stack([sums[k] for k in keys if _is_loss_term(k)])).all()
    # the model's gradients were averaged by DDP; a loss's learnable parameters are averaged here
    distributed.all_reduce_mean_grads(run.loss_params if run.parallel is not None else run.params, dist)
    if scaler is not None:
        # fp16: unscaling commits the scaler to this step, so the ranks agree on the loss terms first (a second sync)
        if not _all_ranks_agree(bool(loss_ok), dist):
            return _first_nonfinite(per_batch), float("nan"), {}
        scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, run.tcfg.clip_norm or float("inf"))
    # with fp16 an overflow is the scaler's business (it skips the step and lowers the scale)
    grad_ok = torch.isfinite(grad_norm) | (scaler is not None)
    flags = distributed.all_reduce_tensor(torch.stack([loss_ok, grad_ok]).to(torch.int32), dist, "min")
    totals = distributed.all_reduce_tensor(torch.stack([sums[k] for k in keys]), dist)
    host = torch.cat([flags.double(), grad_norm.detach().double().reshape(1), totals]).cpu()  # the step's one sync
    if not host[0]:
        return _first_nonfinite(per_batch), float("nan"), {}
    if not host[1]:
        return "gradient norm", float("nan"), {}
    means = host[3:] / run.per_step
    return "", float(host[2]), {k: float(v) for k, v in zip(keys, means, strict=True)}


def _first_nonfinite(per_batch: list[dict[str, Any]]) -> str:
    """This rank's first non-finite loss term in batch order (read only on the rare unhealthy step)."""
    for values in per_batch:
        for key, value in values.items():
            if _is_loss_term(key) and not math.isfinite(float(value)):
                return key
    return "a loss term on another rank"


def _update(run: Run) -> float:
    """The optimizer step at the schedule's learning rate; returns that rate."""
    state, optimizer = run.state, run.optimizer
    lr = learning_rate(run.tcfg, state.step)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    if run.scaler:
        run.scaler.step(optimizer)
        run.scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.cursor += 1
    state.consecutive_skips = 0
    run.ctx.step = state.step
    return lr


def _all_ranks_agree(ok: bool, dist: distributed.Dist) -> bool:
    if not dist.enabled:
        return ok
    import torch

    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=dist.device)
    return bool(distributed.all_reduce_tensor(flag, dist, "min").item())

# ------------------------------------------------------------------------------------------------------------------
# the forward pass and what a loss returns
#
# The model runs under the recipe's autocast. A loss runs inside that region only when it declares
# ``autocast = True``; otherwise (the default, :class:`norton_core.Loss`) it runs outside it on float32 copies of the
# model's reduced-precision outputs, so a plugin loss never computes its softmaxes in bf16 without saying so.
# ------------------------------------------------------------------------------------------------------------------


def loss_runs_under_autocast(loss_fn: Any) -> bool:
    return bool(getattr(loss_fn, "autocast", False))


def forward_batch(model: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The model's ``forward_batch`` (every batch key), or the four layout tensors for a model without one."""
    method = getattr(model, "forward_batch", None)
    if method is not None:
        return method(batch)
    return model(batch["caps"], batch["cmasks"], batch["vfeats"], batch["vmasks"])


def as_float32(outputs: Mapping[str, Any]) -> dict[str, Any]:
    """Reduced-precision floating tensors as float32; everything else (masks, ids, float32) as it is."""
    import torch

    return {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dtype != torch.float32
                else v) for k, v in outputs.items()}


def forward_and_loss(model: Any, loss_fn: Any, batch: Mapping[str, Any],
                     autocast: Callable[[], Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(outputs, terms)`` of one micro-batch."""
    with autocast():
        outputs = forward_batch(model, batch)
        if loss_runs_under_autocast(loss_fn):
            return outputs, loss_fn(outputs, batch)
    return outputs, loss_fn(as_float32(outputs), batch)


def loss_terms(terms: Any, recipe: Any, plugins: Any) -> dict[str, Any]:
    """A loss's output, which must be a dict holding the scalar ``"loss"`` to optimise."""
    if isinstance(terms, dict) and "loss" in terms:
        return terms
    name = recipe.components["loss"].name
    provider = ""
    try:
        provider = f" from {plugins.registry.get('loss', name).provider}"
    except (AttributeError, KeyError, PluginError):
        pass
    got = f"a dict with keys {sorted(map(str, terms))}" if isinstance(terms, dict) else f"a {type(terms).__name__}"
    raise PluginError(f"loss {name!r}{provider} returned {got}; a loss must return a dict with the scalar tensor "
                      "'loss' to optimise (other '*_loss' terms are logged)")


# ------------------------------------------------------------------------------------------------------------------
# the learning-rate schedule: linear warm-up, then polynomial decay (fairseq's ``polynomial_decay``); a pure function
# of the step, so a resume needs nothing but the step counter
# ------------------------------------------------------------------------------------------------------------------


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """The lr for the update that follows ``step`` completed updates (step 0 = the first update)."""
    if cfg.warmup_updates > 0 and step < cfg.warmup_updates:
        # fairseq warms up from lr/warmup (not exactly 0) so that the very first update moves the weights
        return cfg.lr * (step + 1) / cfg.warmup_updates
    if step >= cfg.total_updates:
        return cfg.end_lr
    span = max(1, cfg.total_updates - cfg.warmup_updates)
    remaining = 1.0 - (step - cfg.warmup_updates) / span
    return (cfg.lr - cfg.end_lr) * remaining ** cfg.power + cfg.end_lr



# ------------------------------------------------------------------------------------------------------------------
# retrieval, numerical health, evaluation
# ------------------------------------------------------------------------------------------------------------------


def _retrieval(run: Run, epoch: int) -> tuple[Any, dict[str, Any]]:
    rcfg = run.recipe.retrieval
    batches, stats = retrieval_round(run, epoch)
    run.log(f"norton: retrieval round for epoch {epoch}: {stats['videos']} videos -> {stats['batches']} batches in "
            f"{stats['seconds']:.1f}s ({stats['backend']}, neighbour recall vs exact "
            f"{describe_recall(stats, rcfg.recall_sample)})"
            + (f"; {stats['short_batches']} short batches kept" if stats.get("short_batches") else ""))
    return batches, stats


def handle_nonfinite(run: Run, term: str, epoch: int) -> None:
    """Stop (policy "error") or count a skipped step (policy "skip"); the optimizer never saw the bad values."""
    state, tcfg = run.state, run.tcfg
    where = ckpt.read_latest(run.ckpt_root) or "none yet"
    # under "skip" the advice cannot be to set "skip"
    advice = ("Lower train.lr, use precision fp32, or set train.on_nonfinite = 'skip'" if tcfg.on_nonfinite == "error"
              else "Lower train.lr or use precision fp32")
    message = (f"non-finite {term} at step {state.step + 1} (epoch {epoch}, batch {state.cursor}, rank {run.dist.rank}) "
               f"with loss {run.recipe.components['loss'].name!r}; no update was applied and the last checkpoint "
               f"({where}) is intact. {advice}")
    if tcfg.on_nonfinite == "error":
        raise TrainingError(message)
    state.consecutive_skips += 1
    state.skipped_steps += 1
    run.metrics.write({"event": "skipped_step", "step": state.step, "epoch": epoch, "term": term})
    if state.consecutive_skips > tcfg.max_consecutive_skips:
        raise TrainingError(f"{state.consecutive_skips} consecutive non-finite steps (train.max_consecutive_skips = "
                            f"{tcfg.max_consecutive_skips}); last: {message}")


def evaluate(run: Run, label: str) -> None:
    """Evaluate on rank 0 and record the results under ``label`` (eval.json and metrics.jsonl); all ranks wait."""
    if run.recipe.evaluation.tasks and run.dist.is_main:
        run.evaluation[label] = evaluate_model(run)
        mine = {k: v for k, v in run.evaluation.items() if k not in run.prior_evaluation}
        ckpt.replace_atomic(run.run_dir / "eval.json", json.dumps(mine, indent=1).encode())
        run.metrics.write({"event": "evaluation", "label": label, "step": run.state.step,
                           "results": run.evaluation[label]})
        write_evaluation_records(run, label)
    distributed.barrier(run.dist)


def write_evaluation_records(run: Run, label: str) -> None:
    """One JSON record per task of the ``label`` evaluation in ``<run>/evaluations/`` (model ``<run name>
    <label>``), as ``norton evaluate`` writes them: ``norton compare`` merges them with other models' records."""
    from norton_core.evaluation.records import task_records, write_records
    from norton_core.evaluation.runner import task_key
    from norton_core.evaluation.suite import is_generated
    from norton_core.recipe.options import to_dict

    ecfg, results = run.recipe.evaluation, run.evaluation[label]
    evaluated = {key.partition("/")[0] for key in results}
    tasks = {task_key(t): t for t in ecfg.tasks if task_key(t) in evaluated}
    options = {t: to_dict(run.recipe.components[f"evaluation.task_options.{t}"].config) for t in tasks.values()}
    eval_root = run.paths.eval_root or Path()
    provenance = {"target": str(run.run_dir), "checkpoint": f"{label} evaluation of the run at step {run.state.step}",
                  "recipe": str(run.run_dir / "recipe.json"), "eval_root": str(eval_root),
                  "generated": is_generated(eval_root), "precision": ecfg.precision, "batch_size": ecfg.batch_size}
    write_records(run.run_dir / "evaluations", task_records(f"{run.cfg.name} {label}", results, tasks, provenance,
                                                            options))


def evaluate_model(run: Run) -> dict[str, float]:
    """``{"<task>/<metric>": value}`` for the recipe's evaluation tasks (rank 0 only)."""
    from norton_core.evaluation import run_evaluation

    ecfg, model = run.recipe.evaluation, run.model
    tasks = list(ecfg.tasks)
    options = {task: run.recipe.components[f"evaluation.task_options.{task}"].config for task in tasks}
    eval_root = run.paths.eval_root or Path()
    if ecfg.suite:  # the suite's tasks run where their datasets are; the others are named, never dropped silently
        from norton_core.evaluation.suite import present_tasks, suite_tasks

        suite = [t for t in tasks if t in suite_tasks(ecfg.suite)]
        selection = present_tasks(suite, eval_root, {t: options[t] for t in suite}, plugins=run.plugins)
        if selection.missing:
            run.log(selection.missing_line())
        tasks = [t for t in tasks if t not in selection.missing]
        options = {t: options[t] for t in tasks}
    was_training = model.training
    model.eval()
    try:  # at evaluation.precision (fp32 by default), not the training autocast: the numbers norton evaluate gives
        # assemble refused evaluation tasks without evaluation sets: eval_root is set whenever a task is asked for
        return run_evaluation(model, tasks, eval_root, options=options, batch_size=ecfg.batch_size,
                              device=run.device, progress=sys.stderr.isatty(), plugins=run.plugins,
                              precision=ecfg.precision)
    finally:
        model.train(was_training)


def _result(run: Run, last: dict[str, float]) -> RunResult:
    state, evaluation = run.state, run.evaluation
    if run.dist.is_main and evaluation and run.recipe.evaluation.tasks:
        print_evaluation(evaluation, run.cfg.name, bool(run.cfg.init_from or run.prior_evaluation),
                         {**run.trained_in, "after": state.precision})
    lcfg = run.recipe.logging
    if run.state.chance is not None and lcfg.chance_tolerance > 0:  # also when a complete run is run again
        watch = ChanceWatch(lcfg.chance_tolerance, lcfg.chance_share, ChanceCount.from_json(run.state.chance), run.log)
        if watch.ended_at_chance():
            run.log(watch.end_warning(run.cfg.name))
    return RunResult(run_dir=run.run_dir, step=state.step,
                     epoch=state.epoch if state.batches is not None else state.epoch - 1, complete=True,
                     resumed_from=run.found[0] if run.found else None, metrics=last, evaluation=evaluation,
                     precision=state.precision)


def print_evaluation(evaluation: dict[str, Any], run_name: str = "run", initialised: bool = False,
                     trained_in: Mapping[str, str] | None = None) -> None:
    """All result sets side by side (e.g. the untrained model, the pretraining stage, this run), columns named by
    what they are (and the training precision, when not fp32), with the chance level of each row; counters that
    stayed zero are left out."""
    from norton_core.evaluation import render_report
    from norton_core.runs import column_labels

    first = next(iter(evaluation.values()))
    print(render_report(column_labels(evaluation, run_name, initialised, trained_in), order=list(first)), flush=True)
