"""Checkpoint content: what a step's checkpoint holds, and putting a run back exactly where it was.

:mod:`.checkpoint` commits and validates files and :mod:`.state_files` turns tensors and arrays into their bytes;
this module decides which files (model, optimizer, loss, every rank's RNG streams, the epoch's batches, the cursor
and the recipe) and restores them, refusing a resume whose recipe changed in keys the user did not allow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from norton_core.engine import checkpoint as ckpt
from norton_core.engine import distributed, state_files
from norton_core.engine.records import jsonable
from norton_core.engine.setup import plugin_list
from norton_core.engine.state import TrainState, host_rng_state, set_host_rng_state
from norton_core.errors import CheckpointError

if TYPE_CHECKING:
    from norton_core.engine.setup import Run


def open_run_dir(run_dir: Path, ckpt_root: Path, resume: bool, overwrite: bool, dist: distributed.Dist,
                  log: Callable[[str], None], train: Any = None) -> tuple[Path, dict[str, bytes]] | None:
    """Rank 0 decides; every rank then reads the chosen checkpoint (the run directory is on a shared disk).
    Without ``resume``, a run that ``train`` (the recipe's ``[train]``) says is complete is reported, not refused."""
    name = b""
    if dist.is_main:
        ckpt.recover(ckpt_root, log)
        existing = (run_dir / "recipe.json").exists() or bool(ckpt.committed_steps(ckpt_root))
        found = None
        if existing and overwrite:
            for item in ("checkpoints", "metrics.jsonl", "recipe.json", "plugins.json", "eval.json", "tensorboard",
                         "wandb"):
                if (run_dir / item).exists():
                    ckpt._remove_tree(run_dir / item)
            log(f"norton: --overwrite: removed the previous run in {run_dir}")
        elif existing:
            found = ckpt.find_latest(ckpt_root, log, set_aside=resume, check=in_range(train))
            # a complete run is reported, not refused: the same command can be run twice (both stages of a demo)
            if not resume and not (found is not None and _complete(found, train)):
                raise CheckpointError(f"{run_dir} already holds a run; pass --resume to continue it, --overwrite to "
                                      "discard it, or set run.name to start another")
            if found is None:
                log(f"norton: --resume: no valid checkpoint in {ckpt_root}; starting from the beginning")
        if found is not None:
            log(f"norton: {run_dir} holds a complete run ({found[0].name})" if _complete(found, train) else
                f"norton: resuming from {found[0]}")
            name = found[0].name.encode()
    name = distributed.broadcast_bytes(name, dist)
    distributed.barrier(dist)
    if not name:
        return None
    if dist.is_main:
        return found
    path = ckpt_root / name.decode()
    return path, ckpt.read_checkpoint(path)


def _bounds(train: Any, meta: dict[str, Any]) -> tuple[int, int]:
    """(epochs, max_steps) a checkpoint of this run may have reached: the larger of the current recipe's and the
    recipe the checkpoint was written with (a change of either needs ``--allow-recipe-change``, checked on
    restore). ``max_steps`` 0: no step limit but the epochs'."""
    own = meta.get("recipe", {}).get("train", {}) if isinstance(meta.get("recipe"), dict) else {}
    own = own if isinstance(own, dict) else {}
    epochs = [int(v) for v in (getattr(train, "epochs", None), own.get("epochs")) if ckpt.non_negative_int(v)]
    limits = [int(v) for v in (getattr(train, "max_steps", None), own.get("max_steps")) if ckpt.non_negative_int(v)]
    return max(epochs, default=0), (0 if 0 in limits or not limits else max(limits))


def in_range(train: Any) -> Callable[[Path, dict[str, bytes]], None] | None:
    """The resume's check of a checkpoint found by :func:`checkpoint.find_latest` against ``train`` (the recipe's
    ``[train]``): its epoch is at most one past the last epoch (the next one, once the last has ended) and its
    step at most ``max_steps``; otherwise it is invalid, and the resume falls back to an older checkpoint. (A run
    bounded by epochs alone has its step checked against its epochs' steps on restore, once the data is known.)"""
    if train is None:
        return None

    def check(path: Path, files: dict[str, bytes]) -> None:
        if "state.json" not in files:
            raise CheckpointError(f"{path}: no state.json (a weights-only checkpoint cannot be resumed)")
        meta = json.loads(files["state.json"])  # its counters were checked by read_checkpoint
        if "epoch" not in meta:
            raise CheckpointError(f"{path / 'state.json'}: no epoch")
        epochs, max_steps = _bounds(train, meta)
        if meta["epoch"] > epochs + 1:
            raise CheckpointError(f"{path / 'state.json'}: epoch {meta['epoch']} is beyond this run's {epochs} "
                                  "epochs")
        if max_steps and meta["step"] > max_steps:
            raise CheckpointError(f"{path / 'state.json'}: step {meta['step']} is beyond this run's train.max_steps "
                                  f"= {max_steps}")

    return check


def check_planned_steps(run: Run, path: Path, meta: dict[str, Any], batches: np.ndarray | None) -> None:
    """On restore, with the data known: the checkpoint's step is within the steps this run takes (its epochs'
    steps, cut at ``max_steps``; an epoch's steps as the data gives them or as the checkpoint's own batch plan
    does, whichever is more)."""
    from norton_core.engine.progress import planned_steps, steps_per_epoch

    epochs, max_steps = _bounds(run.tcfg, meta)
    per_epoch = steps_per_epoch(len(run.videos), run.tcfg.videos_per_batch, run.per_step)
    if batches is not None:
        per_epoch = max(per_epoch, len(batches) // run.per_step)
    total = planned_steps({"epochs": epochs, "max_steps": max_steps}, per_epoch)
    if meta["step"] > total:
        raise CheckpointError(f"{path / 'state.json'}: step {meta['step']} is beyond the {total} steps this run takes "
                              f"({epochs} epochs x {per_epoch} steps); it is not a checkpoint of this run: move "
                              f"{path.name} out of {path.parent} and resume again")


def _complete(found: tuple[Path, dict[str, bytes]], train: Any) -> bool:
    """Whether a checkpoint ends the run as ``train`` (the current recipe's) plans it: its last epoch or
    ``max_steps``."""
    if train is None:
        return False
    meta = json.loads(found[1]["state.json"])
    return int(meta["epoch"]) > train.epochs or (train.max_steps > 0 and int(meta["step"]) >= train.max_steps)


def save_state(run: Run) -> Path | None:
    """Gather every rank's RNG streams; rank 0 writes and commits the checkpoint; all ranks wait for it."""
    import base64

    import torch

    from norton_core.engine.state import torch_rng_state

    state, scaler, dist, tcfg = run.state, run.scaler, run.dist, run.tcfg
    rng = {"host": host_rng_state(),
           "torch": {k: base64.b64encode(v.numpy().tobytes()).decode() for k, v in torch_rng_state(dist.device).items()}}
    blobs = distributed.gather_bytes(json.dumps(rng).encode(), dist)
    path = None
    if dist.is_main:
        state.metrics_offset = run.metrics.offset()
        state.scaler = scaler.state_dict() if scaler is not None else None
        opt_tensors, groups = state_files.optimizer_to_tensors(run.optimizer)
        files = {
            "model.safetensors": state_files.tensors_to_bytes(run.model.state_dict()),
            "optimizer.safetensors": state_files.tensors_to_bytes(opt_tensors),
            "rng.json": json.dumps([json.loads(b) for b in blobs]).encode(),
        }
        if isinstance(run.loss_fn, torch.nn.Module) and run.loss_fn.state_dict():
            files["loss.safetensors"] = state_files.tensors_to_bytes(run.loss_fn.state_dict())
        if state.batches is not None:
            files["batches.npy"] = state_files.npy_bytes(np.asarray(state.batches, dtype=np.int64))
        meta = {"format_version": ckpt.FORMAT_VERSION, **state.to_json(), "world_size": dist.world_size,
                "grad_accum": tcfg.grad_accum, "optimizer_groups": groups, "recipe": run.resolved,
                "plugins": plugin_list(run.plugins)}
        files["state.json"] = json.dumps(meta, indent=1, default=jsonable).encode()
        path = ckpt.save_checkpoint(run.ckpt_root, state.step, files, tcfg.keep_last, run.log)
        update_best(run.ckpt_root, state, files)
    distributed.barrier(dist)
    return path


def restore_state(run: Run, found: tuple[Path, dict[str, bytes]]) -> TrainState:
    import base64

    import torch

    model, loss_fn, optimizer, scaler, dist, tcfg = run.model, run.loss_fn, run.optimizer, run.scaler, run.dist, run.tcfg
    path, files = found
    meta = json.loads(files["state.json"])
    changes, problems = recipe_changes(meta["recipe"], run.resolved, run.allow)
    if problems:
        keys = ",".join(p.split(":")[0] for p in problems)
        raise CheckpointError(f"{path}: the recipe differs from the checkpoint's in {keys}; pass "
                              f"--allow-recipe-change {keys} to accept the changes, or start a new run",
                              problems=[f"{path}: recipe changed: {p}" for p in problems])
    if meta["world_size"] != dist.world_size:
        raise CheckpointError(f"{path}: checkpoint world_size={meta['world_size']}, current={dist.world_size}; "
                              "resume with the same number of processes")

    def tensors(name: str) -> dict[str, Any]:
        return state_files.bytes_to_tensors(files[name], str(path / name))

    try:
        model.load_state_dict(tensors("model.safetensors"))
        if "loss.safetensors" in files:
            cast("torch.nn.Module", loss_fn).load_state_dict(tensors("loss.safetensors"))  # saved from one
        scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]  # the recipe's split
        state_files.optimizer_from_tensors(optimizer, tensors("optimizer.safetensors"), meta["optimizer_groups"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: does not fit this model/optimizer: {exc}") from None
    for group, scale in zip(optimizer.param_groups, scales, strict=True):  # hyper-parameters: from the recipe
        group.update(betas=tuple(tcfg.betas), eps=tcfg.eps, weight_decay=tcfg.weight_decay, lr_scale=scale)
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    rng = json.loads(files["rng.json"])[dist.rank]
    set_host_rng_state(rng["host"])
    from norton_core.engine.state import set_torch_rng_state

    set_torch_rng_state({k: torch.frombuffer(bytearray(base64.b64decode(v)), dtype=torch.uint8)
                         for k, v in rng["torch"].items()}, dist.device)
    batches = state_files.load_npy(files["batches.npy"]) if meta.get("has_batches") else None
    check_planned_steps(run, path, meta, batches)
    state = TrainState.from_json(meta, batches)
    if changes:
        state.recipe_changes = [*state.recipe_changes, {"step": state.step, "changes": changes}]
        run.log(f"norton: allowed recipe changes: {', '.join(c['key'] for c in changes)}")
    run.log(f"norton: resumed at step {state.step}, epoch {state.epoch}, batch cursor {state.cursor}")
    if dist.is_main:
        reconcile_best(run.ckpt_root, state, run.log)
    return state


# ------------------------------------------------------------------------------------------------------------------
# the best checkpoint (see .validation)
# ------------------------------------------------------------------------------------------------------------------


def best_step(root: Path) -> int | None:
    """The step ``best/`` holds according to its manifest, or None (missing or unreadable)."""
    try:
        return int(json.loads((root / ckpt.BEST / "manifest.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def update_best(root: Path, state: TrainState, files: dict[str, bytes]) -> None:
    """Right after ``step-<N>`` is committed: when the state's best record names step N and ``best/`` does not
    hold it yet, commit ``best/`` from the same files (a re-save of step N leaves it alone)."""
    if state.best is None or state.best["step"] != state.step or best_step(root) == state.step:
        return
    ckpt.save_best(root, state.step, files, state.best)


def reconcile_best(root: Path, state: TrainState, log: Callable[[str], None]) -> None:
    """On resume: a kill between committing ``step-<N>`` and ``best/`` leaves ``best/`` one selection behind the
    resumed state; rebuild it from ``step-<N>``. A ``best/`` that fails its manifest is set aside, never deleted.
    A ``best/`` newer than the state (a resume from an older checkpoint) is kept: training replaces it when it
    gets there again."""
    want = state.best
    if want is None:
        return
    have = best_step(root)
    if have is not None:
        try:
            ckpt.read_checkpoint(root / ckpt.BEST)
            if have >= want["step"]:
                return
        except CheckpointError as exc:
            ckpt.quarantine(root / ckpt.BEST, log, str(exc))
    source = root / f"step-{want['step']}"
    try:
        files = ckpt.read_checkpoint(source)
    except CheckpointError as exc:
        log(f"norton: warning: the best checkpoint (step {want['step']}, {want['metric']} {want['value']:.6g}) "
            f"cannot be rebuilt: {exc}")
        return
    ckpt.save_best(root, want["step"], files, want)
    log(f"norton: rebuilt the best checkpoint from {source.name} (its save had been interrupted)")


# recipes across resumes: which keys may differ freely, and which need `--allow-recipe-change`


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


#: keys that may differ between a run and its resume without permission (where the run is, not what it does)
FREE_KEYS = ("source", "run.output_dir", "run.cache_dir", "run.init_from", "run.pretrain_recipe", "run.threads",
             "train.num_workers", "train.log_every", "train.read_mode", "train.check_finite",
             "train.check_chunks", "train.validate", "evaluation", "logging")


def recipe_changes(old: dict[str, Any], new: dict[str, Any], allowed: Iterable[str]) -> tuple[list[dict], list[str]]:
    """(changes that are allowed, problems for those that are not). A key is allowed when it or a parent table
    is listed."""
    allowed = tuple(allowed)
    flat_old, flat_new = flatten(old), flatten(new)
    changes, problems = [], []
    for key in sorted(set(flat_old) | set(flat_new)):
        a, b = flat_old.get(key, "<absent>"), flat_new.get(key, "<absent>")
        if a == b:
            continue
        if _covered(key, FREE_KEYS):
            continue
        if _covered(key, allowed):
            changes.append({"key": key, "old": a, "new": b})
        else:
            problems.append(f"{key}: {a!r} -> {b!r}")
    return changes, problems


def _covered(key: str, names: tuple[str, ...]) -> bool:
    return any(key == n or key.startswith(n + ".") for n in names)
