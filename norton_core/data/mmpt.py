"""``norton prepare mmpt``: adopt an existing MMPT/VideoCLIP shard directory (docs/data_formats.md) in place.

The directory's ``{split}_meta.pkl`` is read with :func:`norton_core._util.safe_pickle.load_plain` (no class is ever looked
up, so a crafted pickle cannot run code, and one whose shared sub-lists describe more values than its bytes could
hold is refused before it is built), the shard files are checked and hashed, and a manifest pointing back at them
(``data_dir``) is written to a new store directory; no data is copied.

Released shard directories are not perfectly clean, and the reference only fails when it samples a bad video, so
adoption does not fail for the whole store either: a video with no feature rows, or with no caption that has
tokens, is recorded in the manifest (``unsampleable``), counted on stderr and never sampled. Float32 feature
shards are accepted and read as float16 (what MMPT's extractor writes); adoption checks their values fit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from norton_core._util.bounded import read_bounded
from norton_core._util.files import replace_atomic
from norton_core._util.safe_pickle import load_plain
from norton_core.data import manifest as mf
from norton_core.data.npyfile import hash_file, read_header
from norton_core.data.writer import locked_output
from norton_core.errors import DataError

#: the largest ``{split}_meta.pkl`` read (HowTo100M's 1.2M video ids take a few tens of MB)
MAX_META_BYTES = 1024**3


def load_meta(path: Path) -> dict[int, list[str]]:
    """``{shard_index: [video_id, ...]}`` from an MMPT ``{split}_meta.pkl``, safely."""
    if not path.exists():
        raise DataError(f"{path}: MMPT meta file is missing")
    raw = read_bounded(path, MAX_META_BYTES, "an MMPT meta file", DataError)
    # {shard: [id, ...]} is two containers deep; an honest pickle.dump spends at least a byte per value
    meta = load_plain(raw, source=str(path), max_items=len(raw), max_depth=2)
    ok = isinstance(meta, dict) and all(
        type(k) is int and isinstance(v, list) and all(isinstance(x, str) for x in v) for k, v in meta.items()
    )
    if not ok:
        raise DataError(f"{path}: expected a dict {{shard_index: [video_id, ...]}}")
    return meta


#: the largest finite float16
_F16_MAX = float(np.finfo(np.float16).max)


def _offsets(path: Path, n: int) -> np.ndarray | None:
    """A starts array if it is well formed for ``n`` videos, else None (the store's open check names the
    problem)."""
    try:
        starts = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        return None
    if starts.shape != (n + 1,) or starts.dtype.kind != "i" or n and (starts[0] != 0 or (np.diff(starts) < 0).any()):
        return None
    return np.asarray(starts, dtype=np.int64)


def _unsampleable(src: Path, files: dict[str, dict], n: int, block: int = 1 << 20) -> dict[str, list[int]]:
    """Indices (within the shard) of the videos with no feature rows, and of those with no caption with tokens."""
    video = _offsets(src / files["video_starts"]["name"], n)
    times = _offsets(src / files["tokens_starts"]["name"], n)
    out: dict[str, list[int]] = {}
    if video is not None:
        out["no_feature_rows"] = np.flatnonzero(np.diff(video) == 0).tolist()
    if times is not None and n:
        tokens = np.load(src / files["tokens_data"]["name"], mmap_mode="r", allow_pickle=False)
        if tokens.ndim == 2 and tokens.shape[0] == times[-1] and tokens.shape[1] >= 1:
            has = np.empty(tokens.shape[0], dtype=bool)  # a caption has tokens iff its first id is not padding
            for a in range(0, tokens.shape[0], block):
                has[a : a + block] = tokens[a : a + block, 0] != -1
            with_tokens = np.concatenate([[0], np.cumsum(has, dtype=np.int64)])
            out["no_captions"] = np.flatnonzero(with_tokens[times[1:]] == with_tokens[times[:-1]]).tolist()
    return {reason: idx for reason, idx in out.items() if idx}


def _float32_peak(path: Path, block: int = 1 << 16) -> float:
    """The largest finite |value| of a float32 feature file (it must fit float16 to be read as float16)."""
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    peak = 0.0
    for a in range(0, data.shape[0], block):
        chunk = np.abs(np.asarray(data[a : a + block]))
        finite = chunk[np.isfinite(chunk)]
        if finite.size:
            peak = max(peak, float(finite.max()))
    return peak


def _find_prefix(src: Path, split: str, k: int) -> str:
    suffix = f"{split}_{k}.startends_starts.npy"
    found = sorted(p.name[: -len(suffix)] for p in src.glob(f"*{suffix}"))
    if len(found) != 1:
        raise DataError(
            f"{src}: expected one caption file set *{suffix} for shard {k}, found {len(found)}"
            + (f" (prefixes {found}); pass --prefix" if found else "")
        )
    return found[0]


def import_mmpt(
    src: str | Path,
    split: str,
    out_dir: str | Path | None = None,
    *,
    tokenizer: str = "bert-base-uncased",
    prefix: str | None = None,
    hash_files: bool = True,
    chunk_bytes: int = mf.DEFAULT_CHUNK_BYTES,
    progress: bool = True,
) -> Path:
    """Write a manifest for the MMPT shards of ``split`` in ``src``; returns the new store directory (default
    ``src/norton_<split>``)."""
    from norton_core._util.text_encoders import load_tokenizer, vocab_hash
    from norton_core.data.store import ShardStore

    src = Path(src)
    out = Path(out_dir) if out_dir is not None else src / f"norton_{split}"
    meta = load_meta(src / f"{split}_meta.pkl")
    vhash = vocab_hash(load_tokenizer(tokenizer))
    shards = []
    feature_dim, text_len = None, None
    float32_files: list[tuple[str, float]] = []
    for k in sorted(meta):
        names = mf.shard_file_names(split, k, prefix if prefix is not None else _find_prefix(src, split, k))
        files = {}
        for role, name in names.items():
            path = src / name
            dtype, shape, _, _ = read_header(path)
            files[role] = {"name": name, "dtype": dtype.str, "shape": list(shape), "bytes": path.stat().st_size}
            if hash_files:
                if progress:
                    print(f"hashing {path}", file=sys.stderr)
                files[role]["sha256"], files[role]["chunk_sha256"] = hash_file(path, chunk_bytes)
        vd, td = files["video_data"]["shape"], files["tokens_data"]["shape"]
        feature_dim = vd[-1] if feature_dim is None else feature_dim
        text_len = td[-1] if text_len is None else text_len
        if files["video_data"]["dtype"] == "<f4":
            peak = _float32_peak(src / names["video_data"])
            if peak > _F16_MAX:
                raise DataError(f"{src / names['video_data']}: float32 features up to {peak:g} do not fit float16 "
                                f"(largest {_F16_MAX:g}), which norton reads features as; rescale or L2-normalise them")
            float32_files.append((names["video_data"], peak))
        shard = {
            "index": k, "num_videos": len(meta[k]), "video_ids": meta[k], "feature_rows": vd[0],
            "caption_rows": files["times_data"]["shape"][0], "files": files,
        }
        unsampleable = _unsampleable(src, files, len(meta[k]))
        if unsampleable:
            shard["unsampleable"] = unsampleable
        shards.append(shard)
    counts = {reason: sum(len(s.get("unsampleable", {}).get(reason, [])) for s in shards) for reason in mf.UNSAMPLEABLE}
    manifest = {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION, "split": split, "feature_dim": feature_dim or 512,
        "tokenizer": tokenizer, "vocab_hash": vhash, "max_text_len": text_len or 32, "max_text_chars": 96,
        "chunk_bytes": chunk_bytes, "data_dir": os.path.relpath(src.resolve(), out.resolve()),
        "num_videos": sum(len(v) for v in meta.values()), "skipped": {}, "source": "mmpt", "shards": shards,
        "unsampleable": counts,
    }
    with locked_output(out):  # one prepare per --out: a second one is refused, never interleaved
        replace_atomic(out / mf.MANIFEST, mf.dumps(manifest))
        try:
            ShardStore.open(out).close()  # the same checks as any later open, now, while the user is watching
        except DataError:
            (out / mf.MANIFEST).unlink()
            raise
    _report(split, shards, counts, float32_files)
    return out


def _report(split: str, shards: list[dict], counts: dict[str, int], float32_files: list[tuple[str, float]]) -> None:
    """What adoption accepted that a clean store would not have: always on stderr."""
    if any(counts.values()):
        examples = [s["video_ids"][j] for s in shards for j in sorted({j for v in s.get("unsampleable", {}).values()
                                                                      for j in v})][:3]
        print(f"norton: {split}: {counts['no_feature_rows']} video(s) with no feature rows and "
              f"{counts['no_captions']} with no caption tokens are recorded in the manifest and never sampled "
              f"(e.g. {', '.join(examples)})", file=sys.stderr)
    if float32_files:
        names = ", ".join(name for name, _ in float32_files[:3]) + (", ..." if len(float32_files) > 3 else "")
        peak = max(p for _, p in float32_files)
        print(f"norton: {split}: {len(float32_files)} float32 feature shard(s) ({names}) are read as float16, as "
              f"MMPT's extractor writes them (largest |value| {peak:.4g})", file=sys.stderr)
