"""Run directories and checkpoints: an atomic commit protocol, validation on load, retention and the run lock.

Layout (the run-directory contract in the README)::

    <run_dir>/recipe.json  plugins.json  metrics.jsonl  .lock
    <run_dir>/checkpoints/step-<N>/{model,optimizer,rng[,loss]}.safetensors state.json batches.npy manifest.json
    <run_dir>/checkpoints/latest            # text: the newest committed "step-<N>"

Commit: every file is written into ``checkpoints/.staging-step-<N>-<pid>-<rand>/`` and fsynced, then
``manifest.json`` (size + sha256 of each file) last, then the directory is renamed to ``step-<N>`` and
``latest`` is replaced (tmp + ``os.replace``); only then are old checkpoints purged. A checkpoint is valid iff its
manifest exists and every file matches it, so a kill at any point leaves ``latest`` or the scan resolving to a
complete checkpoint. Nothing is ever unpickled: tensors are safetensors, the rest JSON and ``.npy`` loaded with
``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError
from ..faults import fault_point
from ..fsutil import fsync_dir, replace_atomic, write_durable

FORMAT_VERSION = 1
STEP_DIR = re.compile(r"^step-(\d+)$")
RUN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


# ----------------------------------------------------------------------------------------------------------------
# small file-system helpers
# ----------------------------------------------------------------------------------------------------------------


def _remove_tree(path: Path) -> None:
    """Delete a directory we created; a symlink is unlinked, never followed."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)  # rmtree refuses to follow symlinks inside (avoids_symlink_attacks on Linux)


# ----------------------------------------------------------------------------------------------------------------
# tensors <-> bytes
# ----------------------------------------------------------------------------------------------------------------


def tensors_to_bytes(tensors: Mapping[str, Any]) -> bytes:
    from safetensors.torch import save

    seen: dict[int, str] = {}
    out = {}
    for key, value in tensors.items():
        value = value.detach().cpu().contiguous()
        # safetensors refuses shared storage (tied weights): give each name its own copy
        ptr = value.data_ptr()
        if value.numel() and ptr in seen:
            value = value.clone()
        seen[ptr] = key
        out[key] = value
    return save(out)


def bytes_to_tensors(data: bytes, source: str = "checkpoint tensors") -> dict[str, Any]:
    """Tensors of a safetensors payload; anything else (a pickle renamed, a file replaced and re-hashed) is a
    CheckpointError naming ``source``, never a SafetensorError traceback."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(data)
    except SafetensorError as exc:
        hint = " (it is a pickle: convert VideoCLIP weights with `norton convert-videoclip`)" \
            if data[:1] == b"\x80" or data[:2] == b"PK" else ""
        raise CheckpointError(f"{source}: not a readable safetensors file ({exc}){hint}") from None


def optimizer_to_tensors(optimizer: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An optimizer's state dict as flat tensors ``state.<param>.<key>`` plus JSON param groups."""
    import torch

    sd = optimizer.state_dict()
    tensors = {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(value)
            tensors[f"state.{idx}.{key}"] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def optimizer_from_tensors(optimizer: Any, tensors: Mapping[str, Any], groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    fixed = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    optimizer.load_state_dict({"state": state, "param_groups": fixed})


# ----------------------------------------------------------------------------------------------------------------
# the run lock
# ----------------------------------------------------------------------------------------------------------------


#: lock descriptors this process holds; forked children (DataLoader workers) close their copies
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    # A forked child shares the lock's open file description: if it outlived a SIGKILLed parent (a DataLoader
    # worker notices its parent died only after a few seconds), the run would stay locked. Closing (never
    # unlocking, which would release the parent's lock too) drops the child's reference.
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``, held for the whole run. The kernel drops it when the process
    dies (even by SIGKILL), so it never goes stale; forked children do not inherit it."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CheckpointError(
                f"run directory {self.path.parent} is locked by {holder}; wait for that run to end or choose "
                "another run.name"
            ) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {stamp}\n".encode(), 0)
        self.fd = fd
        _HELD.add(fd)

    def release(self) -> None:
        if self.fd is not None:
            _HELD.discard(self.fd)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# ----------------------------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------------------------


def save_checkpoint(root: Path, step: int, files: Mapping[str, bytes], keep_last: int,
                    log: Any = print) -> Path:
    """Commit ``files`` (name -> bytes) as ``root/step-<step>`` and point ``latest`` at it; then purge old ones.

    ``manifest.json`` is generated here. Returns the committed directory.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    staging = root / f".staging-step-{step}-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION, "step": step, "files": {}}
    try:
        for name, data in files.items():
            write_durable(staging / name, data)
            manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            fault_point(f"ckpt_{name.split('.')[0]}")
        write_durable(staging / "manifest.json", json.dumps(manifest, indent=1).encode())
        fault_point("ckpt_manifest")
        fsync_dir(staging)
    except OSError as exc:  # disk full, quota, I/O error: nothing was renamed, so the previous checkpoint stands
        _remove_tree(staging)
        latest = root / "latest"
        previous = read_pointer(latest) if latest.exists() else "none"
        code = errno.errorcode.get(exc.errno or 0, "OSError")
        raise CheckpointError(f"saving checkpoint step-{step} failed: {code} ({exc.strerror or exc}) writing "
                              f"{exc.filename or staging}; the latest checkpoint ({previous}) is intact and no "
                              "older checkpoint was removed. Free space and continue with --resume") from exc
    fault_point("ckpt_before_rename")
    if final.exists() or final.is_symlink():
        # a checkpoint of this step already exists (e.g. an invalid leftover): move it aside, never merge into it
        aside = root / f".replaced-step-{step}-{secrets.token_hex(4)}"
        os.rename(final, aside)
        _remove_tree(aside)
    os.rename(staging, final)
    fsync_dir(root)
    fault_point("ckpt_after_rename")
    replace_atomic(root / "latest", f"{final.name}\n".encode())
    fault_point("ckpt_after_latest")
    purge(root, keep_last, keep=final, log=log)
    return final


def purge(root: Path, keep_last: int, keep: Path, log: Any = print) -> None:
    """Remove committed checkpoints beyond the newest ``keep_last``; never ``keep``. Only our own ``step-<N>``
    names directly under ``root`` are touched; a failed delete is reported, not raised."""
    steps = sorted(committed_steps(root), reverse=True)
    for _, path in steps[keep_last:]:
        if path == keep:
            continue
        try:
            # rename first: a kill mid-delete leaves a hidden leftover, never a half-deleted step-<N>
            doomed = root / f".purge-{path.name}-{secrets.token_hex(4)}"
            if path.is_symlink():
                path.unlink()
                continue
            os.rename(path, doomed)
            fault_point("ckpt_purge")
            _remove_tree(doomed)
        except OSError as exc:
            log(f"norton: warning: could not remove old checkpoint {path}: {exc}")


def clean_leftovers(root: Path, log: Any = print) -> list[str]:
    """Remove staging/purge leftovers of killed runs (hidden names only); report what was removed."""
    removed = []
    if not root.is_dir():
        return removed
    for entry in sorted(root.iterdir()):
        if entry.name.startswith((".staging-", ".purge-", ".replaced-", ".latest.tmp")):
            _remove_tree(entry)
            removed.append(entry.name)
    if removed:
        log(f"norton: removed {len(removed)} leftover(s) of an interrupted checkpoint write: {', '.join(removed)}")
    return removed


# ----------------------------------------------------------------------------------------------------------------
# finding and loading
# ----------------------------------------------------------------------------------------------------------------


def committed_steps(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    out = []
    for entry in root.iterdir():
        match = STEP_DIR.match(entry.name)
        if match:
            out.append((int(match.group(1)), entry))
    return sorted(out)


def read_checkpoint(path: Path, verify: bool = True) -> dict[str, bytes]:
    """All files of a committed checkpoint, checked against its manifest. Raises CheckpointError naming the file,
    what was expected and what was found."""
    manifest_path = path / "manifest.json"
    if path.is_symlink():
        raise CheckpointError(f"{path}: is a symbolic link; checkpoints are plain directories")
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no manifest.json (an incomplete checkpoint)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{manifest_path}: checkpoint format {manifest.get('format_version')!r} is not "
                              f"supported (this norton writes format {FORMAT_VERSION})")
    out = {}
    for name, meta in manifest.get("files", {}).items():
        file = path / name
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{file}: missing or unreadable ({exc.strerror}) in checkpoint step "
                                  f"{manifest.get('step')}") from None
        if len(data) != meta["size"]:
            raise CheckpointError(f"{file}: expected {meta['size']} bytes, found {len(data)} "
                                  f"(checkpoint step {manifest.get('step')})")
        if verify and hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise CheckpointError(f"{file}: sha256 differs from the manifest (expected {meta['sha256'][:16]}..., "
                                  f"checkpoint step {manifest.get('step')}): the file is corrupt")
        out[name] = data
    return out


def read_pointer(pointer: Path) -> str:
    """The text of ``latest``, whatever bytes it holds (non-UTF-8 garbage reads as replacement characters)."""
    try:
        return pointer.read_bytes().decode("utf-8", errors="replace").strip()
    except OSError:
        return ""


def find_latest(root: Path, log: Any = print) -> tuple[Path, dict[str, bytes]] | None:
    """The newest valid checkpoint: ``latest`` if it resolves to a valid one, else a scan newest-first. Invalid
    ones are reported and left in place (never deleted automatically)."""
    candidates: list[Path] = []
    pointer = root / "latest"
    if pointer.is_file():
        name = read_pointer(pointer)
        if STEP_DIR.match(name):
            candidates.append(root / name)
        else:
            log(f"norton: warning: {pointer} does not name a checkpoint ({name[:40]!r}); scanning for the newest")
    candidates += [p for _, p in reversed(committed_steps(root)) if p not in candidates]
    for path in candidates:
        try:
            return path, read_checkpoint(path)
        except CheckpointError as exc:
            log(f"norton: warning: skipping checkpoint {path.name}: {exc}")
    return None


def load_npy(data: bytes) -> np.ndarray:
    """A ``.npy`` payload, refusing object arrays (no pickle)."""
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise CheckpointError(f"refusing a .npy that needs pickle: {exc}") from None


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# recipes across resumes
# ----------------------------------------------------------------------------------------------------------------


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


#: keys that may differ between a run and its resume without permission (where the run is, not what it does)
FREE_KEYS = ("source", "run.output_dir", "run.cache_dir", "run.init_from", "run.pretrain_recipe", "run.threads",
             "train.num_workers", "train.log_every", "train.read_mode", "train.check_finite", "evaluation", "logging")


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


def check_run_name(name: str) -> None:
    if not RUN_NAME.match(name) or name in (".", ".."):
        raise CheckpointError(f"run.name {name!r}: use letters, digits, '.', '_' and '-' only")
