"""Retrieval rounds (VideoCLIP's retrieval-augmented training): embed every training video, index the vectors with the recipe's
backend plugin, and turn each random query video's neighbourhood into one batch of hard negatives.

Unlike the reference, which indexed and searched each rank's share separately, every rank embeds its share,
the vectors are gathered so that one index covers every video, rank 0 computes the batches once and broadcasts
them. The round's output (the batches) is saved in every checkpoint of the epoch, so a resume reuses it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from norton_core._util.faults import fault_point
from norton_core.engine import distributed
from norton_core.errors import PluginError, TrainingError
from norton_core.retrieval.batches import neighbour_batches
from norton_core.retrieval.search import exact_knn

if TYPE_CHECKING:
    from norton_core.engine.setup import Run

#: the timed phases of rank 0's part of a round (:func:`plan_batches`), logged with the round's statistics
PHASES = ("index_seconds", "search_seconds", "batching_seconds", "recall_seconds")


def embed_videos(model: Any, loader: Any, device: str, autocast: Any, count: int) -> tuple[np.ndarray, np.ndarray]:
    """One vector per video: the mean over its clips of (pooled_video + pooled_text) / 2 (float32).

    ``loader`` yields collated batches with ``video_index`` and ``store_index``, ``count`` videos in all. Returns
    (vectors, store indices). The vectors fill one (count, d) matrix as they come: a list concatenated at the
    end would hold every vector twice.
    """
    import torch

    matrix = np.zeros((0, 0), dtype=np.float32)
    ids: list[np.ndarray] = []
    filled = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in loader:
            with autocast():
                out = model(*(batch[k].to(device, non_blocking=True) for k in ("caps", "cmasks", "vfeats", "vmasks")))
            h = ((out["pooled_video"].float() + out["pooled_text"].float()) / 2).cpu()
            index = batch["video_index"]
            n = int(batch["store_index"].shape[0])
            sums = torch.zeros((n, h.shape[1]), dtype=torch.float32).index_add_(0, index, h)
            counts = torch.bincount(index, minlength=n).clamp(min=1).unsqueeze(1).float()
            if not ids:
                matrix = np.empty((count, h.shape[1]), dtype=np.float32)
            if filled + n > count:
                raise RuntimeError(f"retrieval round: the loader yielded more than the {count} videos it was given")
            matrix[filled:filled + n] = (sums / counts).numpy()
            filled += n
            ids.append(batch["store_index"].numpy())
            fault_point("retrieval_embed")
    model.train(was_training)
    if not ids:
        return matrix, np.zeros(0, dtype=np.int64)
    return matrix[:filled], np.concatenate(ids)


def check_results(result: Any, queries: int, k: int, n: int, backend: Any) -> np.ndarray:
    """Validate a backend's search output at the plugin boundary (shape, dtype, id range)."""
    who = f"retrieval backend {getattr(backend, 'name', type(backend).__name__)!r}"
    if not isinstance(result, np.ndarray) or result.shape != (queries, k):
        shape = getattr(result, "shape", type(result).__name__)
        raise PluginError(f"{who}: search() returned {shape}, expected an int64 array of shape ({queries}, {k})")
    if not np.issubdtype(result.dtype, np.integer):
        raise PluginError(f"{who}: search() returned dtype {result.dtype}, expected int64 ids")
    bad = (result < -1) | (result >= n)
    if bad.any():
        raise PluginError(f"{who}: search() returned id {int(result[bad][0])} outside -1..{n - 1}")
    return result.astype(np.int64)


def reference_shares(n: int, shares: int) -> list[np.ndarray]:
    """The reference's fixed split of the videos over ranks: torch's ``DistributedSampler(shuffle=True, seed=0)``
    whose ``set_epoch`` is never called, i.e. one seed-0 permutation, padded to a multiple of the share count and
    dealt out by rank, the same every epoch (padding repeats are dropped, as the reference's pool skips them)."""
    import torch

    generator = torch.Generator()
    generator.manual_seed(0)
    order = torch.randperm(n, generator=generator).tolist()
    total = -(-n // shares) * shares
    order += order[: total - n]
    return [np.asarray(list(dict.fromkeys(order[r:total:shares])), dtype=np.int64) for r in range(shares)]


def per_share_batches(matrix: np.ndarray, build_backend: Callable[[], Any], per_batch: int, num_cands: int,
                      shares: int, keep_short: bool, seed: int,
                      epoch: int) -> tuple[np.ndarray, Any, np.ndarray, float, tuple[np.ndarray, np.ndarray]]:
    """``retrieval.index = "per_rank"``: each share is indexed and searched on its own, so neighbours are only ever
    found inside it; share r gives floor(N_r / V) batches, concatenated in share order (the reference's sync).
    Returns (positions into ``matrix``, -1 padded; the last share's backend and vectors, for the recall check;
    the share of search slots filled; the last share's (queries, answers), positions in that share)."""
    rows, slots, backend, vectors = [], [], None, matrix[:0]
    searched = (np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.int64))
    for r, members in enumerate(reference_shares(len(matrix), shares)):
        if not len(members):
            continue
        vectors = matrix[members]
        backend = build_backend()
        backend.build(vectors, np.arange(len(members), dtype=np.int64))
        rng = random.Random(f"{seed}:{epoch}:retrieval:{r}")
        queries = np.asarray(rng.sample(range(len(members)), len(members) // per_batch), dtype=np.int64)
        k = min(num_cands, len(members))
        found = check_results(backend.search(queries, k), len(queries), k, len(members), backend)
        local = neighbour_batches(found, queries, per_batch, len(members), rng, keep_short)
        rows.append(np.where(local >= 0, members[np.maximum(local, 0)], -1))
        slots.append((found >= 0).ravel())
        searched = (queries, found)
    positions = np.concatenate(rows) if rows else np.zeros((0, per_batch), dtype=np.int64)
    filled = float(np.concatenate(slots).mean()) if slots and sum(map(len, slots)) else 0.0
    return positions, backend, vectors, filled, searched


def neighbour_recall(backend: Any, vectors: np.ndarray, k: int, sample: int, rng: random.Random,
                     metric: str = "l2",
                     searched: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float]:
    """Share of the true k nearest neighbours (exact search) that the backend returns, over sampled queries, and
    its standard error over those queries (the spread of the per-query shares / sqrt(queries); nan for fewer than
    two). (nan, nan) when ``sample`` is 0.

    ``searched`` = (query positions, the backend's (Q, >= k) answers) of the round's own search, a uniform sample
    of the videos already: the recall's queries are drawn from it, so the lists checked are the ones the round
    used and the backend is not searched again (0.3 s at 1.1M, where one query's cell holds 60k videos). Other
    random videos are searched when it holds fewer than ``sample`` queries."""
    n = len(vectors)
    if sample <= 0 or n == 0:
        return float("nan"), float("nan")
    k = min(k, n)
    if searched is None or np.shape(searched[1])[1:] < (k,):  # none, or shorter lists than the recall's k
        searched = (np.zeros(0, dtype=np.int64), np.zeros((0, k), dtype=np.int64))
    queries, got = np.asarray(searched[0], dtype=np.int64), np.asarray(searched[1], dtype=np.int64)[:, :k]
    if len(queries) >= sample:
        pick = np.asarray(sorted(rng.sample(range(len(queries)), sample)), dtype=np.int64)
        queries, got = queries[pick], got[pick]
    else:
        others = np.setdiff1d(np.arange(n), queries)
        extra = np.asarray(sorted(rng.sample(others.tolist(), min(sample - len(queries), len(others)))),
                           dtype=np.int64)
        more = check_results(backend.search(extra, k), len(extra), k, n, backend) if len(extra) else got[:0]
        queries, got = np.concatenate([queries, extra]), np.concatenate([got, more])
    truth = exact_knn(vectors, vectors[queries], k, metric)
    shares = np.asarray([len(set(g[g >= 0].tolist()) & set(t[t >= 0].tolist())) / k
                         for g, t in zip(got, truth, strict=True)])
    se = float(shares.std(ddof=1) / np.sqrt(len(shares))) if len(shares) > 1 else float("nan")
    return float(shares.mean()), se


def describe_recall(stats: dict[str, Any], sample: int) -> str:
    """The round's recall for its log line: ``0.283 +- 0.021 over 64 queries`` (``off`` when not measured)."""
    value, se = stats.get("recall", float("nan")), stats.get("recall_se", float("nan"))
    if sample <= 0 or not np.isfinite(value):
        return "off"
    spread = f" +- {se:.3f}" if np.isfinite(se) else ""
    return f"{value:.3f}{spread} over {min(sample, int(stats.get('videos', sample)))} queries"


#: store indices named in the error for non-finite embeddings
_SHOWN = 8
#: rows whose sum is taken at once by :func:`non_finite_rows` (a 3 MB block at d = 768, read from the cache)
_FINITE_ROWS = 1024


def non_finite_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows of a float32 matrix holding NaN or an infinity. One summed block at a time (a sum is finite when every
    entry is, except in the rare case of a finite overflow, which the exact check of that block then clears): one
    read of the matrix, 0.15 s at 1.1M x 768, instead of a full-size boolean temporary."""
    import torch

    bad = []
    for a in range(0, len(vectors), _FINITE_ROWS):
        block = vectors[a:a + _FINITE_ROWS]
        if not torch.isfinite(torch.from_numpy(block).sum()):
            bad.append(a + np.flatnonzero(~np.isfinite(block).all(axis=1)))
    return np.concatenate(bad) if bad else np.zeros(0, dtype=np.int64)


def check_finite(vectors: np.ndarray, ids: np.ndarray, dist: distributed.Dist) -> None:
    """Every rank checks its own videos' vectors and all ranks raise the same error if any rank found one that is
    not finite: an index would put a NaN vector in an arbitrary cell (faiss's k-means and nearest centroid compare
    NaN distances as false), and the round would go on with batches that mean nothing."""
    bad = np.sort(ids[non_finite_rows(vectors)].astype(np.int64))
    # a fixed-size record per rank (count, then up to 8 store indices): the same collective on every rank
    record = np.full(1 + _SHOWN, -1, dtype=np.int64)
    record[0], record[1:1 + min(len(bad), _SHOWN)] = len(bad), bad[:_SHOWN]
    records = np.stack(distributed.all_gather_rows(record[None], dist)).reshape(-1, 1 + _SHOWN)
    count = int(records[:, 0].sum())
    if count:
        shown = np.sort(records[:, 1:][records[:, 1:] >= 0])[:_SHOWN]
        listed = ", ".join(str(int(i)) for i in shown) + (", ..." if count > len(shown) else "")
        raise TrainingError(f"retrieval round: {count} video embedding(s) are not finite (NaN or inf; store indices "
                            f"{listed}): the model's outputs overflowed or are NaN (a diverged model, or fp16, which "
                            "overflows where bf16 and fp32 do not)")


def retrieval_round(run: Run, epoch: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Run one round for ``epoch`` and return the epoch's batches ((n, V) store indices, identical on every rank; -1
    pads a short batch when ``retrieval.short_batches = "keep"``) and stats.

    The videos are laid out by the recipe's ``[retrieval.aligner]`` and indexed by its ``[retrieval.backend]``.
    ``retrieval.index = "per_rank"`` reproduces the reference (see :func:`per_share_batches`), its videos split over
    ``retrieval.index_shares`` ranks (0 = the world size).
    """
    from norton_core.engine import loader

    cfg, tcfg, rcfg, dist = run.cfg, run.tcfg, run.recipe.retrieval, run.dist
    model, videos, seed = run.model, run.videos, cfg.seed
    per_batch, num_cands, recall_sample = tcfg.videos_per_batch, rcfg.num_cands, rcfg.recall_sample
    index_scope, shares, keep_short = rcfg.index, rcfg.index_shares, rcfg.short_batches == "keep"

    def make_loader(chunks: list[list[int]]) -> Any:
        dataset = loader.BatchDataset(run.store, run.embed_aligner, chunks, seed, epoch, "embed")
        return loader.make_loader(dataset, tcfg.num_workers, seed + epoch, pin_memory=run.device.startswith("cuda"))

    def build_backend() -> Any:
        return run.recipe.build("retrieval.backend", seed=seed + epoch)

    t0 = time.perf_counter()
    # 1. each rank embeds a strided share: every video exactly once across ranks
    share = videos[dist.rank::dist.world_size]
    step = rcfg.embed_videos_per_batch
    chunks = [share[i:i + step].tolist() for i in range(0, len(share), step)]
    vectors, ids = embed_videos(model, make_loader(chunks), dist.device, run.autocast, len(share))
    if len(share) and vectors.shape[0] != len(share):
        raise RuntimeError(f"retrieval round: embedded {vectors.shape[0]} of {len(share)} videos on rank {dist.rank}")
    check_finite(vectors, ids, dist)
    dims = distributed.broadcast_array(np.asarray([vectors.shape[1] if len(share) else 0]), dist)
    if not len(share):
        vectors = np.zeros((0, int(dims[0])), dtype=np.float32)
    all_vectors = distributed.all_gather_rows(np.asarray(vectors, dtype=np.float32), dist)
    del vectors
    all_ids = distributed.all_gather_rows(ids.astype(np.int64), dist)
    embedded = [len(i) for i in all_ids]
    t_embed = time.perf_counter() - t0

    batches = None
    stats: dict[str, Any] = {"videos": int(sum(embedded)), "embedded_per_rank": embedded, "epoch": epoch}
    if dist.is_main:
        # 2. one index over every video, addressed by position in the store-sorted order
        store_ids, matrix = gathered_matrix(all_vectors, all_ids)
        del all_vectors  # the matrix holds them now (or is the only part itself)
        if len(store_ids) != len(videos):
            raise RuntimeError("retrieval round: the gathered video set does not cover each video exactly once")
        if index_scope == "per_rank":
            positions, backend, share_vectors, filled, searched = per_share_batches(
                matrix, build_backend, per_batch, num_cands, shares or dist.world_size, keep_short, seed, epoch)
            fault_point("retrieval_index")
            batches = np.where(positions >= 0, store_ids[np.maximum(positions, 0)], -1)
            metric = getattr(getattr(backend, "config", None), "metric", "l2")
            recall, recall_se = neighbour_recall(
                backend, share_vectors, min(num_cands, len(share_vectors)), recall_sample,
                random.Random(f"{seed}:{epoch}:recall"), metric,
                searched) if backend is not None else (0.0, float("nan"))
            stats.update(recall=recall, recall_se=recall_se, filled=filled,
                         backend=getattr(backend, "name", type(backend).__name__))
        else:
            batches, planned = plan_batches(matrix, store_ids, build_backend(), per_batch=per_batch,
                                            num_cands=num_cands, recall_sample=recall_sample, seed=seed, epoch=epoch,
                                            keep_short=keep_short)
            stats.update(planned)
        stats["short_batches"] = int((batches < 0).any(axis=1).sum())
    batches = distributed.broadcast_array(batches, dist)
    # every rank's hooks see the same statistics
    shared = ("recall", "recall_se", "filled", "short_batches", *PHASES)
    summary = np.asarray([stats.get(key, 0.0) for key in shared], dtype=np.float64)
    summary = distributed.broadcast_array(summary if dist.is_main else None, dist, np.dtype(np.float64))
    name = distributed.broadcast_bytes(str(stats.get("backend", "")).encode() if dist.is_main else None, dist)
    fault_point("retrieval_batches")
    stats.update({key: float(v) for key, v in zip(shared, summary, strict=True)})
    stats.update(batches=int(len(batches)), backend=name.decode(), short_batches=int(stats["short_batches"]),
                 seconds=time.perf_counter() - t0, embed_seconds=t_embed)
    return batches, stats


def gathered_matrix(parts: list[np.ndarray], part_ids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's vectors as one (N, d) matrix in store-index order, and the sorted store indices. A single part
    already in order is returned as it is; otherwise each part is copied once into its rows."""
    store_ids = np.concatenate(part_ids)
    order = np.argsort(store_ids, kind="stable")
    store_ids = store_ids[order]
    if len(np.unique(store_ids)) != len(store_ids):
        raise RuntimeError("retrieval round: the gathered video set does not cover each video exactly once")
    if len(parts) == 1 and np.array_equal(order, np.arange(len(order))):
        return store_ids, parts[0]
    dim = max((p.shape[1] for p in parts if p.ndim == 2), default=0)
    matrix = np.empty((len(store_ids), dim), dtype=np.float32)
    for part, ids in zip(parts, part_ids, strict=True):
        matrix[np.searchsorted(store_ids, ids)] = part
    return store_ids, matrix


def plan_batches(matrix: np.ndarray, store_ids: np.ndarray, backend: Any, *, per_batch: int, num_cands: int,
                 recall_sample: int, seed: int, epoch: int, keep_short: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Rank 0's part of a round: index the (N, d) vectors, search N/V random query videos' neighbourhoods, turn each
    into one batch of store indices (-1 pads a short one with ``keep_short``), and measure the backend's recall
    against exact search on a sample."""
    times = [time.perf_counter()]
    backend.build(matrix, np.arange(len(matrix), dtype=np.int64))
    fault_point("retrieval_index")
    times.append(time.perf_counter())
    # N/V random queries; each neighbourhood becomes one batch
    rng = random.Random(f"{seed}:{epoch}:retrieval")
    n = len(matrix)
    queries = np.asarray(rng.sample(range(n), n // per_batch), dtype=np.int64)
    k = min(num_cands, n)
    found = check_results(backend.search(queries, k), len(queries), k, n, backend)
    times.append(time.perf_counter())
    positions = neighbour_batches(found, queries, per_batch, n, rng, keep_short)
    batches = np.where(positions >= 0, store_ids[np.maximum(positions, 0)], -1)
    times.append(time.perf_counter())
    metric = getattr(getattr(backend, "config", None), "metric", "l2")
    recall, recall_se = neighbour_recall(backend, matrix, k, recall_sample, random.Random(f"{seed}:{epoch}:recall"),
                                         metric, (queries, found))
    times.append(time.perf_counter())
    phases = dict(zip(PHASES, np.diff(times).tolist(), strict=True))
    return batches, {"batches": int(len(batches)), "recall": recall, "recall_se": recall_se,
                     "filled": float((found >= 0).mean()) if found.size else 0.0,
                     "backend": getattr(backend, "name", type(backend).__name__), **phases}
