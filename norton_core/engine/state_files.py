"""A run's state as checkpoint file bytes, and back: tensors as safetensors (tied weights copied apart), an
optimizer's state as flat tensors plus JSON parameter groups, arrays as ``.npy`` without pickle.

:mod:`.checkpoint` commits these bytes to disk and checks them; :mod:`.resume` decides which files a step holds.
Nothing here unpickles: a payload of the wrong kind is a :class:`~norton_core.errors.CheckpointError`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from norton_core.errors import CheckpointError


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
