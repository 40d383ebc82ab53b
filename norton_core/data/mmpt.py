"""``norton prepare mmpt``: adopt an existing MMPT/VideoCLIP shard directory (docs/data_formats.md) in place.

The directory's ``{split}_meta.pkl`` is read with :func:`norton_core.safe_pickle.load_plain` (no class is ever looked
up, so a crafted pickle cannot run code, and one whose shared sub-lists describe more values than its bytes could
hold is refused before it is built), the shard files are checked and hashed, and a manifest pointing back at them
(``data_dir``) is written to a new store directory; no data is copied.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import DataError
from ..fsutil import replace_atomic
from ..safe_pickle import load_plain
from . import manifest as mf
from .npyfile import hash_file, read_header


def load_meta(path: Path) -> dict[int, list[str]]:
    """``{shard_index: [video_id, ...]}`` from an MMPT ``{split}_meta.pkl``, safely."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: MMPT meta file is missing") from None
    # {shard: [id, ...]} is two containers deep; an honest pickle.dump spends at least a byte per value
    meta = load_plain(raw, source=str(path), max_items=len(raw), max_depth=2)
    ok = isinstance(meta, dict) and all(
        type(k) is int and isinstance(v, list) and all(isinstance(x, str) for x in v) for k, v in meta.items()
    )
    if not ok:
        raise DataError(f"{path}: expected a dict {{shard_index: [video_id, ...]}}")
    return meta


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
    from ..textenc import load_tokenizer, vocab_hash
    from .store import ShardStore

    src = Path(src)
    out = Path(out_dir) if out_dir is not None else src / f"norton_{split}"
    meta = load_meta(src / f"{split}_meta.pkl")
    vhash = vocab_hash(load_tokenizer(tokenizer))
    shards = []
    feature_dim, text_len = None, None
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
        shards.append({
            "index": k, "num_videos": len(meta[k]), "video_ids": meta[k], "feature_rows": vd[0],
            "caption_rows": files["times_data"]["shape"][0], "files": files,
        })
    manifest = {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION, "split": split, "feature_dim": feature_dim or 512,
        "tokenizer": tokenizer, "vocab_hash": vhash, "max_text_len": text_len or 32, "max_text_chars": 96,
        "chunk_bytes": chunk_bytes, "data_dir": os.path.relpath(src.resolve(), out.resolve()),
        "num_videos": sum(len(v) for v in meta.values()), "skipped": {}, "source": "mmpt", "shards": shards,
    }
    out.mkdir(parents=True, exist_ok=True)
    replace_atomic(out / mf.MANIFEST, mf.dumps(manifest))
    try:
        ShardStore.open(out).close()  # the same checks as any later open, now, while the user is watching
    except DataError:
        (out / mf.MANIFEST).unlink()
        raise
    return out
