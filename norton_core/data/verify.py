"""``norton verify DIR``: the full content check of a prepared store.

Opening a store checks sizes, headers and offsets (cheap); this also reads every byte: each file's sha256 and,
block by block, the manifest's chunk hashes, so a flipped byte is located to a row range and the videos in it.
It also scans the features and caption times for NaN/inf.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from norton_core.data import manifest as mf
from norton_core.data.store import ShardStore, _Shard, locate_bytes, videos_in_rows
from norton_core.errors import DataError


def _check_hashes(shard: _Shard, role: str, entry: dict[str, Any], chunk_bytes: int) -> list[str]:
    path = shard.paths[role]
    chunks = entry.get("chunk_sha256") or []
    whole = hashlib.sha256()
    problems = []
    with open(path, "rb") as fh:
        c = 0
        while True:
            block = fh.read(chunk_bytes)
            if not block:
                break
            whole.update(block)
            if c < len(chunks) and hashlib.sha256(block).hexdigest() != chunks[c]:
                a = c * chunk_bytes
                problems.append(
                    f"{path}: content hash mismatch in bytes [{a}, {a + len(block)}): "
                    f"{locate_bytes(shard, role, a, a + len(block))}"
                )
            c += 1
    if "sha256" in entry and whole.hexdigest() != entry["sha256"] and not problems:
        problems.append(f"{path}: sha256 {whole.hexdigest()} differs from the manifest's {entry['sha256']}")
    return problems


def _check_values(shard: _Shard, block_rows: int = 1 << 16) -> list[str]:
    problems = []
    for role, starts_role in (("video_data", "video_starts"), ("times_data", "times_starts")):
        rows = shard.shapes[role][0]
        for r0 in range(0, rows, block_rows):
            block = shard.rows(role, r0, min(rows, r0 + block_rows), "mmap")
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                r = r0 + int(np.flatnonzero(bad)[0])
                problems.append(
                    f"{shard.paths[role]}: non-finite values in row {r} "
                    f"({videos_in_rows(shard, starts_role, r, r + 1)}); {int(bad.sum())} such rows in this block"
                )
                break
    shard.close()
    return problems


def verify_store(path: str | Path, progress: bool = True) -> dict[str, Any]:
    """Check everything; returns a summary, raises :class:`DataError` listing the problems (first bad file
    first)."""
    from tqdm import tqdm

    store = ShardStore.open(path, "mmap")
    manifest = store.manifest
    chunk_bytes = manifest["chunk_bytes"]
    problems: list[str] = []
    total = sum(f["bytes"] for s in manifest["shards"] for f in s["files"].values())
    hashed = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc="verify", file=sys.stderr, disable=not progress) as bar:
        for shard, entry in zip(store._shards, manifest["shards"], strict=True):
            for role in mf.ROLES:
                f = entry["files"][role]
                if "sha256" in f:
                    problems += _check_hashes(shard, role, f, chunk_bytes)
                    hashed += 1
                bar.update(f["bytes"])
            problems += _check_values(shard)
    store.close()
    if problems:
        raise DataError(f"{problems[0]} ({len(problems)} problem(s) in {path})", problems=problems)
    files = 6 * len(manifest["shards"])
    return {"videos": len(store), "shards": len(manifest["shards"]), "files": files, "hashed_files": hashed,
            "bytes": total}
