"""The shard-set manifest: what a prepared store promises about its files.

``manifest.json`` sits in the store directory and is written last (atomically), so its presence means every shard
it lists is complete. Layout (format version 1)::

    {"format": "norton-shards", "format_version": 1, "split": "train", "feature_dim": 512,
     "tokenizer": "...", "vocab_hash": "...", "max_text_len": 32, "max_text_chars": 96,
     "chunk_bytes": 4194304, "data_dir": ".", "num_videos": N, "skipped": {kind: count},
     "shards": [{"index": k, "num_videos": n, "video_ids": [...], "feature_rows": R, "caption_rows": C,
                 "files": {role: {"name", "dtype", "shape", "bytes", "sha256", "chunk_sha256": [...]}},
                 "unsampleable": {"no_feature_rows": [j, ...], "no_captions": [j, ...]}}],
     "unsampleable": {"no_feature_rows": count, "no_captions": count}}

``unsampleable`` (optional; adopted MMPT directories) lists, by index within the shard, the videos an aligner
cannot sample: no feature rows, or no caption with tokens. They stay in the store (their ids and offsets are
part of the shard files) and are never sampled. Stores we prepare skip such videos instead.

Roles and their MMPT file names (``<prefix>`` is ``captions.<tokenizer>.`` for stores we write):

=================  =============================================  ===========  ==============
role               file                                           dtype        shape
=================  =============================================  ===========  ==============
``video_starts``   ``{split}_{k}_starts.npy``                     ``<i8``      (n+1,)
``video_data``     ``{split}_{k}_data.npy``                       ``<f2``      (sum T, 512)
                                                                  (``<f4`` in
                                                                  adopted MMPT
                                                                  shards: read
                                                                  as ``<f2``)
``times_starts``   ``<prefix>{split}_{k}.startends_starts.npy``   ``<i8``      (n+1,)
``times_data``     ``<prefix>{split}_{k}.startends_data.npy``     ``<f4``      (sum n_caps, 2)
``tokens_starts``  ``<prefix>{split}_{k}.caps_ids_starts.npy``    ``<i8``      (n+1,)
``tokens_data``    ``<prefix>{split}_{k}.caps_ids_data.npy``      ``<i4``      (sum n_caps, L)
=================  =============================================  ===========  ==============
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from norton_core.errors import DataError

FORMAT = "norton-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_CHUNK_BYTES = 4 << 20

ROLES: dict[str, str] = {
    "video_starts": "<i8",
    "video_data": "<f2",
    "times_starts": "<i8",
    "times_data": "<f4",
    "tokens_starts": "<i8",
    "tokens_data": "<i4",
}
#: dtypes a file of each role may have on disk; reads always return ``ROLES``'s (float32 features of adopted MMPT
#: shards are converted to float16 on read, as MMPT's own feature extractor stores them)
DISK_DTYPES: dict[str, tuple[str, ...]] = {**{role: (dtype,) for role, dtype in ROLES.items()},
                                           "video_data": ("<f2", "<f4")}
#: reasons a video is recorded as unsampleable
UNSAMPLEABLE = ("no_feature_rows", "no_captions")
#: (starts role, data role) pairs that form one MMPT ShardedTensor
PAIRS = (("video_starts", "video_data"), ("times_starts", "times_data"), ("tokens_starts", "tokens_data"))


def caption_prefix(tokenizer: str) -> str:
    return f"captions.{tokenizer.replace('/', '_')}."


def shard_file_names(split: str, k: int, prefix: str) -> dict[str, str]:
    """The MMPT file names of shard ``k``."""
    return {
        "video_starts": f"{split}_{k}_starts.npy",
        "video_data": f"{split}_{k}_data.npy",
        "times_starts": f"{prefix}{split}_{k}.startends_starts.npy",
        "times_data": f"{prefix}{split}_{k}.startends_data.npy",
        "tokens_starts": f"{prefix}{split}_{k}.caps_ids_starts.npy",
        "tokens_data": f"{prefix}{split}_{k}.caps_ids_data.npy",
    }


def dumps(manifest: dict[str, Any]) -> bytes:
    """Deterministic bytes (a rerun of a preparation writes an identical file)."""
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def load(store_dir: Path) -> tuple[dict[str, Any], bytes]:
    """Read and structurally check ``store_dir/manifest.json``; returns the dict and the raw bytes."""
    path = Path(store_dir) / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        hint = ""
        if Path(store_dir).is_dir() and any(Path(store_dir).glob("*_meta.pkl")):
            hint = f"; it looks like an MMPT shard directory: run `norton prepare mmpt {store_dir} --split train`"
        raise DataError(f"{path}: no shard manifest (not a prepared store{hint})") from None
    try:
        manifest = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    check_structure(manifest, path)
    return manifest, raw


def _need(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise DataError(f"{path}: {what}")


def check_structure(m: Any, path: Path) -> None:
    """Check types and required keys of a manifest (the file checks are the reader's)."""
    _need(isinstance(m, dict), path, "manifest is not a JSON object")
    _need(m.get("format") == FORMAT, path, f"format is {m.get('format')!r}, expected {FORMAT!r}")
    version = m.get("format_version")
    _need(
        version == FORMAT_VERSION,
        path,
        f"shard format version {version!r} is not supported (this norton reads version {FORMAT_VERSION})",
    )
    for key, typ in (
        ("split", str),
        ("feature_dim", int),
        ("tokenizer", str),
        ("vocab_hash", str),
        ("chunk_bytes", int),
        ("num_videos", int),
        ("shards", list),
    ):
        _need(isinstance(m.get(key), typ), path, f"key {key!r} missing or not a {typ.__name__}")
    total = 0
    for i, shard in enumerate(m["shards"]):
        where = f"shards[{i}]"
        _need(isinstance(shard, dict), path, f"{where} is not an object")
        ids = shard.get("video_ids")
        _need(isinstance(ids, list) and all(isinstance(v, str) for v in ids), path, f"{where}.video_ids invalid")
        _need(shard.get("num_videos") == len(ids), path, f"{where}.num_videos != len(video_ids)")
        files = shard.get("files")
        _need(isinstance(files, dict) and set(files) == set(ROLES), path, f"{where}.files must hold {sorted(ROLES)}")
        for role, entry in files.items():
            ok = (
                isinstance(entry, dict)
                and isinstance(entry.get("name"), str)
                and isinstance(entry.get("dtype"), str)
                and isinstance(entry.get("shape"), list)
                and isinstance(entry.get("bytes"), int)
            )
            _need(ok, path, f"{where}.files.{role} lacks name/dtype/shape/bytes")
            name = entry["name"]
            _need("/" not in name and "\\" not in name and name not in ("", ".", ".."), path, f"bad file name {name!r}")
        unsampleable = shard.get("unsampleable", {})
        _need(isinstance(unsampleable, dict) and set(unsampleable) <= set(UNSAMPLEABLE)
              and all(isinstance(v, list) and all(type(j) is int and 0 <= j < len(ids) for j in v)
                      for v in unsampleable.values()),
              path, f"{where}.unsampleable must map {list(UNSAMPLEABLE)} to lists of indices within the shard")
        total += len(ids)
    _need(total == m["num_videos"], path, f"num_videos is {m['num_videos']} but the shards list {total} videos")
