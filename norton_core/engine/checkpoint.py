"""Run directories and checkpoints: an atomic commit protocol, validation on load, retention and the run lock.

Layout (the run-directory contract in the README)::

    <run_dir>/recipe.json  plugins.json  metrics.jsonl  .lock
    <run_dir>/checkpoints/step-<N>/{model,optimizer,rng[,loss]}.safetensors state.json batches.npy manifest.json
    <run_dir>/checkpoints/best/     # the same files for the step with the lowest validation loss + selection.json
    <run_dir>/checkpoints/latest    # text: the newest committed "step-<N>"
    <run_dir>/checkpoints/step-<N>.corrupt-<n>/   # an invalid checkpoint set aside on resume (never deleted)

Commit: every file is written into ``checkpoints/.staging-<name>-<pid>-<rand>/`` and fsynced, then
``manifest.json`` (size + sha256 of each file) last, then the directory is renamed to its name and ``latest`` is
replaced (tmp + ``os.replace``); only then are old checkpoints purged. A checkpoint is valid iff its manifest
exists and every file matches it. A kill at any point leaves at least one complete copy of the newest committed
step (under its name, or under a hidden name that :func:`recover` puts back before anything is removed).
Nothing is ever unpickled: tensors are safetensors, the rest JSON and ``.npy`` loaded with ``allow_pickle=False``
(:mod:`.state_files` makes and reads those bytes).

Public for readers of run directories (``norton evaluate``): :func:`list_checkpoints`, :func:`read_checkpoint`,
:func:`read_checkpoint_file`, :func:`find_latest` and :class:`CheckpointInfo`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

import attrs

from norton_core._util.bounded import read_bounded
from norton_core._util.dir_lock import DirectoryLock
from norton_core._util.faults import fault_point
from norton_core._util.files import fsync_dir, replace_atomic, write_durable
from norton_core.errors import CheckpointError

FORMAT_VERSION = 1
STEP_DIR = re.compile(r"^step-(\d+)$")
RUN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
BEST = "best"
SELECTION = "selection.json"
#: the largest manifest.json read (it lists a handful of files)
MAX_MANIFEST_BYTES = 1024 * 1024
#: the largest weights file read outside a checkpoint (converted weights); its type is checked before reading
MAX_WEIGHTS_BYTES = 256 * 1024**3


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
# the run lock
# ----------------------------------------------------------------------------------------------------------------


class RunLock(DirectoryLock):
    """An exclusive ``flock`` on ``<run_dir>/.lock``, held for the whole run. The kernel drops it when the process
    dies (even by SIGKILL), so it never goes stale; forked children do not inherit it."""

    error = CheckpointError

    def __init__(self, run_dir: Path) -> None:
        super().__init__(run_dir, "run directory", "wait for that run to end or choose another run.name")


# ----------------------------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------------------------


def save_checkpoint(root: Path, step: int, files: Mapping[str, bytes], keep_last: int,
                    log: Any = print) -> Path:
    """Commit ``files`` (name -> bytes) as ``root/step-<step>`` and point ``latest`` at it; then purge old ones.

    ``manifest.json`` is generated here. Returns the committed directory.
    """
    final = commit_dir(root, f"step-{step}", files, {"step": step}, points="ckpt")
    replace_atomic(root / "latest", f"{final.name}\n".encode())
    fault_point("ckpt_after_latest")
    purge(root, keep_last, keep=final, log=log)
    return final


def save_best(root: Path, step: int, files: Mapping[str, bytes], selection: Mapping[str, Any]) -> Path:
    """Commit ``root/best``: the files of step ``step``'s checkpoint plus ``selection.json`` (which metric chose it),
    all listed in its manifest. ``best`` is never purged by ``keep_last``."""
    files = {**files, SELECTION: json.dumps(dict(selection), indent=1).encode()}
    return commit_dir(root, BEST, files, {"step": step}, points="best")


def commit_dir(root: Path, name: str, files: Mapping[str, bytes], meta: Mapping[str, Any], points: str) -> Path:
    """Write ``files`` plus a manifest into a staging directory, then make it ``root/<name>``.

    Re-saving an existing ``name`` takes two renames (a directory cannot be replaced by one): the old one moves to
    ``.replaced-<name>-<rand>``, then the staging directory becomes ``<name>``. A kill between them leaves two
    complete copies under hidden names, and :func:`recover` puts the newer one back before anything is removed,
    so a complete checkpoint of the step exists at every instant.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    staging = root / f".staging-{name}-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION, **meta, "files": {}}
    try:
        for file, data in files.items():
            write_durable(staging / file, data)
            manifest["files"][file] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            fault_point(f"{points}_{file.split('.')[0]}")
        write_durable(staging / "manifest.json", json.dumps(manifest, indent=1).encode())
        fault_point(f"{points}_manifest")
        fsync_dir(staging)
    except OSError as exc:  # disk full, quota, I/O error: nothing was renamed, so the previous checkpoint stands
        _remove_tree(staging)
        previous = read_latest(root) or "none"
        code = errno.errorcode.get(exc.errno or 0, "OSError")
        raise CheckpointError(f"saving checkpoint {name} failed: {code} ({exc.strerror or exc}) writing "
                              f"{exc.filename or staging}; the latest checkpoint ({previous}) is intact and no "
                              "older checkpoint was removed. Free space and continue with --resume") from exc
    fault_point(f"{points}_before_rename")
    aside = None
    if final.exists() or final.is_symlink():
        aside = root / f".replaced-{name}-{secrets.token_hex(4)}"
        os.rename(final, aside)
        fsync_dir(root)
        fault_point(f"{points}_replace_aside")  # no <name> now: the old copy is aside, the new one staged
    os.rename(staging, final)
    fsync_dir(root)
    if aside is not None:
        fault_point(f"{points}_replace_renamed")  # the new <name> is in place; the old copy is still aside
        _remove_tree(aside)
    fault_point(f"{points}_after_rename")
    return final


def purge(root: Path, keep_last: int, keep: Path, log: Any = print) -> None:
    """Remove committed checkpoints older than ``keep`` (the one just saved) beyond the newest ``keep_last`` in
    all; never ``keep``. Only our own ``step-<N>`` names directly under ``root`` are touched (``best`` and
    ``*.corrupt-<n>`` never), and of those only checkpoints whose manifest holds the step their name says. Never
    removed, and said once: a checkpoint newer than ``keep`` (a run that continued from an older checkpoint must
    not destroy later work) and a directory that holds another step than its name (a stale copy is not part of
    this run's sequence). A failed delete is reported, not raised."""
    kept = named_step(keep)
    older = []
    for step, path in committed_steps(root):
        if path == keep:
            continue
        if not path.is_symlink() and _manifest_step(path) != step:
            _say_once(path, f"norton: warning: keeping {path.name} out of retention: its manifest does not hold "
                            f"step {step}", log)
        elif kept is not None and step > kept:
            _say_once(path, f"norton: warning: keeping {path.name}: it is newer than {keep.name}, the checkpoint "
                            "just saved; retention never removes a newer checkpoint", log)
        else:
            older.append((step, path))
    for _, path in sorted(older, reverse=True)[max(keep_last - 1, 0):]:
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


#: the directories retention has already warned about in this process
_SAID: set[Path] = set()


def _say_once(path: Path, message: str, log: Any) -> None:
    if path not in _SAID:
        _SAID.add(path)
        log(message)


def _manifest_step(path: Path) -> Any:
    """The step a checkpoint's manifest holds, or None when it cannot be read."""
    try:
        manifest = json.loads(read_bounded(path / "manifest.json", MAX_MANIFEST_BYTES, "a checkpoint manifest",
                                           CheckpointError))
    except (OSError, ValueError, CheckpointError):
        return None
    return manifest.get("step") if isinstance(manifest, dict) else None


# ----------------------------------------------------------------------------------------------------------------
# recovering from an interrupted write
# ----------------------------------------------------------------------------------------------------------------

_LEFTOVER = re.compile(r"^\.(staging|replaced)-(step-\d+|best)-")


def _complete(path: Path) -> str:
    """``"ok"``, ``"incomplete"`` (no readable manifest: a write was cut short) or ``"corrupt"`` (a manifest whose
    files do not match it)."""
    try:
        json.loads(read_bounded(path / "manifest.json", MAX_MANIFEST_BYTES, "a checkpoint manifest", CheckpointError))
    except (CheckpointError, ValueError, RecursionError):
        return "incomplete"
    try:
        read_checkpoint(path)
    except CheckpointError:
        return "corrupt"
    return "ok"


def quarantine(path: Path, log: Any = print, why: str = "") -> Path:
    """Move an invalid checkpoint aside as ``<name>.corrupt-<n>`` (kept for inspection, never deleted by norton)."""
    n = 1
    while (path.parent / f"{path.name.lstrip('.')}.corrupt-{n}").exists():
        n += 1
    target = path.parent / f"{path.name.lstrip('.')}.corrupt-{n}"
    os.rename(path, target)
    fsync_dir(path.parent)
    log(f"norton: warning: moved the invalid checkpoint {path.name} aside to {target}{f': {why}' if why else ''}; "
        "norton never deletes it, inspect or remove it yourself")
    return target


def recover(root: Path, log: Any = print) -> list[str]:
    """Finish or undo an interrupted checkpoint write; returns what was done, one line each.

    For each checkpoint name (``step-<N>``, ``best``) with hidden leftovers, the copy kept under the final name is,
    in order of preference: the final directory if it is complete, else a complete staging copy (written in full,
    only its rename was missing), else the copy renamed aside by a re-save. The others are removed only when a
    complete copy is in place (they are superseded) or when they are incomplete; a copy whose manifest exists but
    does not match its files is moved aside as ``*.corrupt-<n>``. Purge leftovers (already superseded) and
    temporary ``latest`` files are removed.
    """
    done: list[str] = []
    if not root.is_dir():
        return done
    slots: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        match = _LEFTOVER.match(entry.name)
        if match:
            slots.setdefault(match.group(2), []).append(entry)
        elif entry.name.startswith((".purge-", ".latest.tmp")):
            _remove_tree(entry)
            done.append(f"removed {entry.name}")
    for name, leftovers in slots.items():
        final = root / name
        status = {p: _complete(p) for p in leftovers}
        if final.exists() and not final.is_symlink() and _complete(final) != "ok":
            if any(s == "ok" for s in status.values()):
                quarantine(final, log, "a complete copy of it was left by an interrupted save")
        if not final.exists():
            # a complete staging copy holds newer content than a copy a re-save had moved aside
            order = sorted(leftovers, key=lambda p: not p.name.startswith(".staging-"))
            winner = next((p for p in order if status[p] == "ok"), None)
            if winner is not None:
                os.rename(winner, final)
                fsync_dir(root)
                leftovers = [p for p in leftovers if p != winner]
                done.append(f"restored {name} from {winner.name}")
        for p in leftovers:
            if status[p] == "corrupt":
                quarantine(p, log, "it does not match its manifest")
            else:  # superseded by the complete copy now in place, or cut short before its manifest
                _remove_tree(p)
                done.append(f"removed {p.name}")
    if done:
        log(f"norton: recovered from an interrupted checkpoint write: {'; '.join(done)}")
    return done



# ----------------------------------------------------------------------------------------------------------------
# finding and loading (public: ``norton evaluate`` reads checkpoints through these)
# ----------------------------------------------------------------------------------------------------------------


def committed_steps(root: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-<N>`` directory under ``root``, oldest first (validity is not checked)."""
    if not root.is_dir():
        return []
    out = []
    for entry in root.iterdir():
        match = STEP_DIR.match(entry.name)
        if match:
            out.append((int(match.group(1)), entry))
    return sorted(out)


@attrs.frozen
class CheckpointInfo:
    """One committed checkpoint of a run, as :func:`list_checkpoints` reports it.

    :ivar label: ``"step-<N>"``, or ``"best"`` for the checkpoint kept by validation loss.
    :ivar step: the optimizer step it holds.
    :ivar path: its directory; read it with :func:`read_checkpoint`.
    :ivar selection: for ``best``, its ``selection.json`` (``{"metric", "value", "step", "split"}``); else None.
    :ivar latest: True for the checkpoint a resume would continue from.
    """

    label: str
    step: int
    path: Path
    selection: dict[str, Any] | None = None
    latest: bool = False


def list_checkpoints(root: Path) -> list[CheckpointInfo]:
    """The committed checkpoints in a run's ``checkpoints/`` directory: every ``step-<N>`` oldest first, then
    ``best`` if there is one. Only names and manifests are read (cheap); :func:`read_checkpoint` verifies the
    content. Invalid ones (no manifest, e.g. set aside as ``*.corrupt-<n>``, or a manifest holding another step
    than the name says) are left out."""
    out: list[CheckpointInfo] = []
    steps = [(s, p) for s, p in committed_steps(root) if not p.is_symlink() and _manifest_step(p) == s]
    newest = steps[-1][1] if steps else None
    for step, path in steps:
        out.append(CheckpointInfo(path.name, step, path, None, path == newest))
    best = root / BEST
    if (best / "manifest.json").is_file() and not best.is_symlink():
        try:
            manifest = json.loads((best / "manifest.json").read_text())
            selection = json.loads((best / SELECTION).read_text())
            out.append(CheckpointInfo(BEST, int(manifest["step"]), best, selection, False))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # read_checkpoint(best) names what is wrong when it is asked for
    return out


def read_pointer(pointer: Path) -> str:
    """The text of ``latest``, whatever bytes it holds (non-UTF-8 garbage reads as replacement characters)."""
    try:
        return read_bounded(pointer, 4096, "a checkpoint pointer", CheckpointError).decode(
            "utf-8", errors="replace").strip()
    except CheckpointError:  # missing, a FIFO, a device, or longer than any step name: names no checkpoint
        return ""


def read_latest(root: Path) -> str | None:
    """The name ``latest`` holds, or None when it is missing or not a ``step-<N>`` name (even non-UTF-8 bytes)."""
    name = read_pointer(root / "latest")
    return name if STEP_DIR.match(name) else None


def _manifest_of(path: Path) -> dict[str, Any]:
    manifest_path = path / "manifest.json"
    if path.is_symlink():
        raise CheckpointError(f"{path}: is a symbolic link; checkpoints are plain directories")
    if not manifest_path.exists():
        raise CheckpointError(f"{path}: no manifest.json (an incomplete checkpoint)")
    try:
        manifest = json.loads(read_bounded(manifest_path, MAX_MANIFEST_BYTES, "a checkpoint manifest", CheckpointError))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        raise CheckpointError(f"{manifest_path}: checkpoint format {version!r} is not "
                              f"supported (this norton writes format {FORMAT_VERSION})")
    if not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{manifest_path}: no file list")
    return manifest


def _check_bytes(file: Path, data: bytes, meta: Any, step: Any, verify: bool) -> None:
    if not isinstance(meta, dict) or not isinstance(meta.get("size"), int) or not isinstance(meta.get("sha256"), str):
        raise CheckpointError(f"{file}: the manifest's entry is malformed (checkpoint step {step})")
    if len(data) != meta["size"]:
        raise CheckpointError(f"{file}: expected {meta['size']} bytes, found {len(data)} (checkpoint step {step})")
    if verify and hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise CheckpointError(f"{file}: sha256 differs from the manifest (expected {meta['sha256'][:16]}..., "
                              f"checkpoint step {step}): the file is corrupt")


def _read_listed(file: Path, meta: Any, step: Any) -> bytes:
    """A file the manifest lists, read no further than the size it records: a FIFO, a device or a file grown
    past its size is refused before it is read whole."""
    size = meta.get("size") if isinstance(meta, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise CheckpointError(f"{file}: the manifest's entry is malformed (checkpoint step {step})")
    if not (file.exists() or file.is_symlink()):
        raise CheckpointError(f"{file}: missing in checkpoint step {step}")
    return read_bounded(file, size, "a checkpoint file (the size its manifest records)", CheckpointError)


def read_checkpoint(path: Path, verify: bool = True) -> dict[str, bytes]:
    """All files of a committed checkpoint (``step-<N>`` or ``best``), checked against its manifest: sizes always,
    sha256 when ``verify``. Raises CheckpointError naming the file, what was expected and what was found."""
    manifest = _manifest_of(path)
    out = {}
    for name, meta in manifest["files"].items():
        file = path / name
        if "/" in name or name in ("", ".", ".."):
            raise CheckpointError(f"{path / 'manifest.json'}: bad file name {name!r}")
        data = _read_listed(file, meta, manifest.get("step"))
        _check_bytes(file, data, meta, manifest.get("step"), verify)
        out[name] = data
    check_metadata(path, manifest, out)
    return out


#: ``state.json`` counters that are non-negative integers
_COUNTERS = ("step", "epoch", "cursor", "consecutive_skips", "skipped_steps", "metrics_offset")


def non_negative_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def named_step(path: Path) -> int | None:
    """The step a checkpoint directory's name says it holds (``step-<N>``, or a hidden copy of one left by an
    interrupted save); None for ``best`` and other names."""
    match = STEP_DIR.match(path.name)
    if match:
        return int(match.group(1))
    leftover = _LEFTOVER.match(path.name)
    match = STEP_DIR.match(leftover.group(2)) if leftover else None
    return int(match.group(1)) if match else None


def check_metadata(path: Path, manifest: Mapping[str, Any], files: Mapping[str, bytes]) -> None:
    """The step a checkpoint holds is said three times: by its directory's name, its manifest and its
    ``state.json``. All must agree (a copy under another name, ``cp -r step-6 step-100``, does not), and the
    counters of ``state.json`` must be non-negative integers with ``epoch >= 1``. Raises CheckpointError with the
    first disagreement; a checkpoint without ``state.json`` (weights only) is checked by name and manifest alone."""
    step = manifest.get("step")
    if not non_negative_int(step):
        raise CheckpointError(f"{path / 'manifest.json'}: step {step!r} is not a non-negative integer")
    named = named_step(path)
    if named is not None and named != step:
        raise CheckpointError(f"{path}: its name says step {named} but its manifest holds step {step} (a copy of "
                              f"another checkpoint under a new name?)")
    if "state.json" not in files:
        return
    state_file = path / "state.json"
    try:
        state = json.loads(files["state.json"])
    except ValueError as exc:
        raise CheckpointError(f"{state_file}: not JSON ({exc})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_file}: expected a JSON object, got {type(state).__name__}")
    for key in _COUNTERS:
        if key in state and not non_negative_int(state[key]):
            raise CheckpointError(f"{state_file}: {key} {state[key]!r} is not a non-negative integer")
    if state.get("step") != step:
        raise CheckpointError(f"{state_file}: holds step {state.get('step', '(none)')} but its manifest says step "
                              f"{step}")
    if state.get("epoch", 1) < 1:
        raise CheckpointError(f"{state_file}: epoch 0; epochs count from 1")
    validated = state.get("validated_step", -1)
    if not isinstance(validated, int) or isinstance(validated, bool) or not -1 <= validated <= step:
        raise CheckpointError(f"{state_file}: validated_step {validated!r} is not a step from -1 to {step}")


def read_checkpoint_file(file: Path) -> bytes:
    """One file of a checkpoint directory, checked against the directory's manifest (size and sha256). A file
    outside any checkpoint (no ``manifest.json`` beside it, e.g. converted weights) is returned unchecked."""
    file = Path(file)
    if not (file.parent / "manifest.json").is_file():
        return read_bounded(file, MAX_WEIGHTS_BYTES, "a weights file", CheckpointError)
    manifest = _manifest_of(file.parent)
    if file.name not in manifest["files"]:
        raise CheckpointError(f"{file}: not listed in {file.parent / 'manifest.json'}")
    data = _read_listed(file, manifest["files"][file.name], manifest.get("step"))
    _check_bytes(file, data, manifest["files"][file.name], manifest.get("step"), True)
    return data


def find_latest(root: Path, log: Any = print, set_aside: bool = False,
                check: Callable[[Path, dict[str, bytes]], None] | None = None) -> tuple[Path, dict[str, bytes]] | None:
    """The newest complete checkpoint (by step; ``latest`` only breaks no ties: a kill between a rename and the
    pointer update leaves it one behind). Invalid ones (see :func:`read_checkpoint` and :func:`check_metadata`;
    ``check`` may refuse more, raising CheckpointError) are reported and skipped; with ``set_aside`` (the run's
    own resume) they are moved aside as ``step-<N>.corrupt-<n>`` so that a later save of that step cannot overwrite
    the evidence, and norton never deletes them."""
    pointer = read_latest(root)
    if pointer is None and (root / "latest").is_file():
        text = read_pointer(root / "latest")
        log(f"norton: warning: {root / 'latest'} does not name a checkpoint ({text[:40]!r}); scanning for the newest")
    for _, path in reversed(committed_steps(root)):
        try:
            files = read_checkpoint(path)
            if check is not None:
                check(path, files)
        except CheckpointError as exc:
            log(f"norton: warning: skipping checkpoint {path.name}: {exc}")
            if set_aside and not path.is_symlink():
                quarantine(path, log)
            continue
        if set_aside and pointer != path.name:
            if pointer:
                log(f"norton: {root / 'latest'} names {pointer}, but {path.name} is the newest complete checkpoint")
            replace_atomic(root / "latest", f"{path.name}\n".encode())
        return path, files
    return None


def check_run_name(name: str) -> None:
    if not RUN_NAME.match(name) or name in (".", ".."):
        raise CheckpointError(f"run.name {name!r}: use letters, digits, '.', '_' and '-' only")
