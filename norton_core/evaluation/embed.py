"""Batched, no-grad encoding of evaluation clips and captions with the shared token layout.

Identical inputs are encoded once: within a call always, and across the tasks of one
:func:`~norton_core.evaluation.run_evaluation` call through :func:`shared_cache` (YouCook2's clip and
video-paragraph tasks share every caption and clip). The cache lives only for that call, so a model whose weights
change between calls (before/after training) is never served stale vectors.

Imports torch: evaluators import this module inside ``evaluate`` so the CLI starts without torch.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from norton_core.data.layout import build_text_seq, build_video_seq
from norton_core.errors import NortonError
from norton_core.plugin.interfaces import Model

#: a clip to encode: (per-second features (T, 512), start second, end second)
Span = tuple[np.ndarray, int, int]

_CACHE: contextvars.ContextVar[dict[Any, np.ndarray] | None] = contextvars.ContextVar("norton_eval_cache",
                                                                                     default=None)


@contextlib.contextmanager
def shared_cache() -> Iterator[None]:
    """Share pooled embeddings between the encode calls inside the block (one model, fixed weights)."""
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


@contextlib.contextmanager
def inference(model: Model) -> Iterator[None]:
    """``model.eval()`` and ``torch.no_grad()`` for the block, then the model's previous train/eval mode."""
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = bool(module.training) if module is not None else False
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if module is not None:
            module.train(was_training)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, leave=False, dynamic_ncols=True)


def _lookup(keys: list[Any]) -> tuple[dict[Any, np.ndarray], list[int]]:
    """Vectors already known for ``keys`` (from the shared cache) and the positions of the first occurrence of
    every key still to encode."""
    cache = _CACHE.get()
    known = {k: cache[k] for k in keys if cache is not None and k in cache}
    todo, seen = [], set(known)
    for i, k in enumerate(keys):
        if k not in seen:
            seen.add(k)
            todo.append(i)
    return known, todo


def _store(known: dict[Any, np.ndarray], keys: list[Any], todo: list[int], vectors: np.ndarray) -> np.ndarray:
    cache = _CACHE.get()
    for row, i in enumerate(todo):
        known[keys[i]] = vectors[row]
        if cache is not None:
            cache[keys[i]] = vectors[row]
    if not keys:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([known[k] for k in keys]).astype(np.float32, copy=False)


class NonFiniteEmbeddings(NortonError):
    """The model produced NaN or inf embeddings: every score computed from them would be meaningless (a NaN
    weight ranks at exactly chance). :func:`~norton_core.evaluation.run_evaluation` adds the task's name."""

    def __init__(self, kind: str, bad: int, total: int) -> None:
        self.kind, self.bad, self.total = kind, bad, total
        super().__init__(f"{kind}: {bad} of {total} embeddings hold NaN or inf: the model's weights (or its "
                         "inputs) are not finite; nothing was scored")


def _check_finite(vectors: np.ndarray, kind: str) -> None:
    """Refuse ``vectors`` (``(N, ...)``) when any row holds a non-finite value, counting the rows."""
    if vectors.size and not np.isfinite(vectors).all():
        rows = vectors.reshape(len(vectors), -1)
        raise NonFiniteEmbeddings(kind, int((~np.isfinite(rows)).any(axis=1).sum()), len(vectors))


def encode_texts(model: Model, texts: Sequence[str], text_len: int, *, batch_size: int = 256, device: str = "cpu",
                 progress: bool = False, desc: str = "captions", trim: bool = True) -> np.ndarray:
    """Pooled caption embeddings ``(N, d)`` float32, captions laid out by ``build_text_seq`` at ``text_len``.

    With ``trim`` (the default) captions are batched by length and each batch is cut after its longest caption's
    final SEP: trailing padding is masked out, so a masked encoder gives the same embeddings (to float rounding)
    at a fraction of the cost (evaluation captions are ~10 tokens of a 64-token budget).
    """
    keys: list[Any] = [("text", id(model), text_len, t) for t in texts]
    known, todo = _lookup(keys)
    tokens = model.tokenize([texts[i] for i in todo]) if todo else []
    special = model.special_tokens()
    laid = [build_text_seq(t, special, text_len) for t in tokens]
    lengths = np.array([int(m.sum()) for _, m in laid], dtype=np.int64)
    order = np.argsort(lengths, kind="stable") if trim else np.arange(len(laid))
    vectors: np.ndarray | None = None
    with inference(model), _progress(len(laid), desc, progress) as bar:
        for lo in range(0, len(laid), batch_size):
            idx = order[lo:lo + batch_size]
            width = int(lengths[idx].max()) if trim else text_len
            caps = torch.from_numpy(np.stack([laid[i][0][:width] for i in idx])).to(device)
            cmasks = torch.from_numpy(np.stack([laid[i][1][:width] for i in idx])).to(device)
            pooled = model.forward_text(caps, cmasks)[0].float().cpu().numpy()
            if vectors is None:
                vectors = np.zeros((len(laid), pooled.shape[1]), dtype=np.float32)
            vectors[idx] = pooled
            bar.update(len(idx))
    if vectors is not None:
        _check_finite(vectors, desc)
    return _store(known, keys, todo, vectors if vectors is not None else np.zeros((0, 0), np.float32))


def encode_clips(model: Model, spans: Sequence[Span], max_video_len: int, *, batch_size: int = 256,
                 device: str = "cpu", progress: bool = False, desc: str = "clips",
                 tokens: bool = False, attend_cls: bool = True) -> np.ndarray:
    """Clip embeddings of ``features[start:end]`` (first ``max_video_len`` seconds) laid out by ``build_video_seq``.

    :param attend_cls: False masks the video [CLS] token out of the encoder's attention (the reference does so for
        YouCook2 with background kept); the model's ``forward_video`` must then take an ``attend_cls`` keyword.
    :returns: pooled ``(N, d)`` float32, or with ``tokens=True`` the per-second outputs ``(N, max_video_len, d)``
        (the video encoder's outputs without its CLS and SEP; padded seconds hold whatever the encoder gives).
        Per-second outputs are neither deduplicated nor cached.
    """
    laid = [build_video_seq(f, s, e, max_video_len) for f, s, e in spans]
    if not attend_cls:
        _check_attend_cls(model)
    if tokens:
        return _encode_video(model, laid, max_video_len, batch_size, device, progress, desc, True, attend_cls)
    keys: list[Any] = [("clip", id(model), max_video_len, attend_cls, int(m.sum()),
                        hashlib.blake2b(np.ascontiguousarray(v, dtype=np.float32).tobytes(), digest_size=16).digest())
                       for v, m in laid]
    known, todo = _lookup(keys)
    vectors = _encode_video(model, [laid[i] for i in todo], max_video_len, batch_size, device, progress, desc,
                            False, attend_cls)
    return _store(known, keys, todo, vectors)


def _check_attend_cls(model: Model) -> None:
    try:
        params = inspect.signature(model.forward_video).parameters
    except (TypeError, ValueError):  # a builtin or C-implemented callable: let the call itself decide
        return
    if "attend_cls" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise NortonError(f"model {getattr(model, 'name', type(model).__name__)!r}: forward_video takes no "
                          f"attend_cls keyword, which masking the video [CLS] token out of attention needs (the "
                          f"reference's background-kept protocol); add it to the model, or set bg_attend_cls = true "
                          f"in [evaluation.task_options.youcook2-video] to let windows attend to [CLS]")


def _encode_video(model: Model, laid: list[tuple[np.ndarray, np.ndarray]], max_video_len: int, batch_size: int,
                  device: str, progress: bool, desc: str, tokens: bool, attend_cls: bool) -> np.ndarray:
    out: list[np.ndarray] = []
    with inference(model), _progress(len(laid), desc, progress) as bar:
        for lo in range(0, len(laid), batch_size):
            chunk = laid[lo:lo + batch_size]
            vfeats = torch.from_numpy(np.stack([v for v, _ in chunk]).astype(np.float32, copy=False)).to(device)
            vmasks = torch.from_numpy(np.stack([m for _, m in chunk])).to(device)
            if attend_cls:
                pooled, outputs, _ = model.forward_video(vfeats, vmasks)
            else:
                pooled, outputs, _ = model.forward_video(vfeats, vmasks, attend_cls=False)  # type: ignore[call-arg]
            chosen = (outputs[:, 1:1 + max_video_len] if tokens else pooled).float().cpu().numpy()
            # per-second outputs are checked where the video has seconds; padded ones are never read
            seconds = vmasks[:, :max_video_len, None].cpu().numpy().astype(bool) if tokens else True
            _check_finite(np.where(seconds, chosen, 0.0), desc)
            out.append(chosen)
            bar.update(len(chunk))
    if out:
        return np.concatenate(out)
    return np.zeros((0, max_video_len, 0) if tokens else (0, 0), dtype=np.float32)
