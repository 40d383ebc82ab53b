"""Run set-up helpers: determinism, data preparation, weight initialisation and precision.

Split out of :mod:`.loop` so that the loop reads top to bottom; nothing here holds training state.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from norton_core.engine import checkpoint as ckpt
from norton_core.engine import distributed, state_files
from norton_core.errors import CheckpointError, DataError

DEMO_HINT = "to try norton without the dataset, run the laptop demo: norton-run recipes/how2_demo.toml"

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


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


