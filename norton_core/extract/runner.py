"""``norton extract``: video files -> ``OUT/<id>.npy`` feature rows, with a report.

The pipeline: decoding (:mod:`norton_core.extract.decode`, in worker processes when ``workers > 0``) streams
pieces of frame chunks tagged with their video; the main process gathers chunks from any videos into batches of
exactly ``batch_size`` (the last one zero-padded, so every chunk is embedded in a batch of the same shape), turns
them into rows with the extractor, and writes a video's ``.npy`` as soon as its last chunk is embedded.

Restartable: every ``.npy`` is written atomically (staging name, fsync, rename), so an existing ``OUT/<id>.npy``
is complete and is skipped on a rerun; a kill leaves at most hidden staging files, removed by the next run.
Rows depend on their own chunk only, so a rerun writes the same bytes as an uninterrupted run. ``OUT/extraction.json``
records the extractor, its options and weights: a rerun into the same directory with other settings is refused
rather than mixing features of two extractors.

Dirty videos (missing, empty, unreadable, without a video stream, a decode error midway, shorter than one row) are
skipped with their reason in the report, never with a traceback.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import multiprocessing
import multiprocessing.connection as mp_connection
import os
import pickle
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import attrs
import numpy as np

from norton_core._util.faults import fault_point
from norton_core._util.files import replace_atomic
from norton_core.errors import DataError
from norton_core.extract.decode import REASONS, SkipVideo, iter_chunks
from norton_core.plugin.interfaces import DecodeSpec, FeatureExtractor

#: file suffixes taken as videos when a directory is listed
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".ts", ".3gp",
                            ".ogv", ".wmv"})
#: suffixes of list files (one video path per line, relative to the list's folder)
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
SETTINGS_FILE = "extraction.json"
#: chunks per piece sent from a decoding worker (bounds the memory a long video takes in flight)
PIECE_ROWS = 8


# ----------------------------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------------------------


def collect_videos(inputs: Sequence[str | Path]) -> list[Path]:
    """Videos named by ``inputs``: folders (their video files, recursively), list files (``.txt``/``.lst``: one
    path per line, ``#`` comments) and video files. Sorted by id; two videos with one id are an error."""
    videos: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            videos += [p for p in item.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
        elif item.suffix.lower() in LIST_SUFFIXES:
            if not item.is_file():
                raise DataError(f"{item}: no such list file")
            for lineno, line in enumerate(item.read_text(encoding="utf-8").splitlines(), 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    path = Path(line)
                    videos.append(path if path.is_absolute() else item.parent / path)
                    if not path.suffix:
                        raise DataError(f"{item}:{lineno}: {line!r} has no file suffix; list video files")
        else:
            videos.append(item)  # a missing file is reported per video (skipped), not fatal
    by_id: dict[str, Path] = {}
    for path in videos:
        other = by_id.setdefault(path.stem, path)
        if other != path:
            raise DataError(f"two videos have the id {path.stem!r}: {other} and {path}; the output is <id>.npy, "
                            "so ids must be unique")
    return [by_id[k] for k in sorted(by_id)]


def parse_shard(text: str | None, env: dict[str, str] | None = None) -> tuple[int, int]:
    """``--shard I/N`` (I counted from 0), else ``RANK``/``WORLD_SIZE`` under torchrun, else ``(0, 1)``."""
    env = dict(os.environ) if env is None else env
    if text is None:
        if "WORLD_SIZE" in env and "RANK" in env:
            return int(env["RANK"]), int(env["WORLD_SIZE"])
        return 0, 1
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise DataError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return i, n


# ----------------------------------------------------------------------------------------------------------------
# decoding events: ("rows", video, piece) / ("done", video, rows) / ("skip", video, (reason, detail))
# ----------------------------------------------------------------------------------------------------------------

Event = tuple[str, int, Any]


def _decode_inline(videos: list[tuple[int, Path]], spec: DecodeSpec) -> Iterator[Event]:
    for index, path in videos:
        yield from _decode_stream(index, path, spec)


def _decode_stream(index: int, path: Path, spec: DecodeSpec) -> Iterator[Event]:
    """One video's events; a skip after some pieces tells the consumer to drop those pieces."""
    rows = 0
    try:
        for piece in iter_chunks(path, spec, max_rows=PIECE_ROWS):
            rows += len(piece)
            yield ("rows", index, piece)
    except SkipVideo as skip:
        yield ("skip", index, (skip.reason, skip.detail))
        return
    yield ("done", index, rows)


def _worker(tasks: Connection, results: Connection, spec: DecodeSpec) -> None:
    """A decoding process: decodes the videos it is sent, one at a time, until it is sent ``None``. Events go
    through a pipe written synchronously (nothing is lost in a buffer if the process dies), and a full pipe
    blocks the decoder, which bounds the frames in flight."""
    while True:
        task = tasks.recv()
        if task is None:
            return
        index, path = task
        fault_point("extract_decode")
        for event in _decode_stream(index, Path(path), spec):
            results.send(event)


@attrs.define
class _DecodingProcess:
    proc: Any
    tasks: Connection
    results: Connection
    video: int | None = None


def _decode_workers(videos: list[tuple[int, Path]], spec: DecodeSpec, workers: int) -> Iterator[Event]:
    """Events from ``workers`` decoding processes, each sent one video at a time. A process that dies (a decoder
    crash) has its video skipped as a decode error, and a new process takes its place."""
    ctx = multiprocessing.get_context("spawn")
    todo = deque(videos)
    running: list[_DecodingProcess] = []

    def start() -> _DecodingProcess:
        task_read, task_write = ctx.Pipe(duplex=False)
        result_read, result_write = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(task_read, result_write, spec), daemon=True)
        proc.start()
        task_read.close()
        result_write.close()  # the process holds the only writing end: its death reads as end-of-file here
        worker = _DecodingProcess(proc, task_write, result_read)
        running.append(worker)
        return worker

    def assign(worker: _DecodingProcess) -> None:
        if todo:
            index, path = todo.popleft()
            worker.video = index
            worker.tasks.send((index, str(path)))
        else:
            worker.video = None
            worker.tasks.send(None)

    for _ in range(min(workers, len(videos))):
        assign(start())
    try:
        while any(w.video is not None for w in running):
            busy = {w.results: (w, w.video) for w in running if w.video is not None}
            for conn in mp_connection.wait(list(busy)):
                worker, video = busy[cast("Any", conn)]
                try:
                    kind, index, payload = worker.results.recv()
                except (EOFError, OSError, pickle.UnpicklingError):
                    worker.proc.join(timeout=10)
                    running.remove(worker)
                    yield ("skip", video, ("decode error", "the decoding process died (exit code "
                                                                  f"{worker.proc.exitcode}) while decoding it"))
                    assign(start())
                    continue
                yield (kind, index, payload)
                if kind in ("done", "skip"):
                    assign(worker)
    finally:
        for worker in running:
            if worker.video is not None and worker.proc.is_alive():  # stopped early: its video is not wanted
                worker.proc.kill()
            worker.proc.join(timeout=10)


# ----------------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------------


@attrs.define
class Report:
    """What ``extract_report.json`` holds."""

    extractor: str
    shard: str
    videos: int = 0
    extracted: int = 0
    already_done: int = 0
    skipped: dict[str, list[dict[str, str]]] = attrs.field(factory=dict)
    rows: int = 0
    video_seconds: float = 0.0
    elapsed_seconds: float = 0.0

    def skip(self, video: Path, reason: str, detail: str) -> None:
        self.skipped.setdefault(reason, []).append({"video": str(video), "detail": detail})

    def as_json(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["skipped_counts"] = {reason: len(self.skipped.get(reason, [])) for reason in REASONS}
        out["skipped_total"] = sum(out["skipped_counts"].values())
        return out


def settings_record(name: str, extractor: FeatureExtractor, config: Any, weights: Path | None) -> dict[str, Any]:
    """What ``OUT/extraction.json`` holds: the settings that decide the bytes of every row."""
    weights_id = None
    if weights is not None:
        weights = Path(weights)
        files = sorted(p for p in weights.rglob("*") if p.is_file()) if weights.is_dir() else [weights]
        digest = hashlib.sha256()
        for path in files:  # a model directory: every file's name and bytes
            digest.update(str(path.relative_to(weights)).encode() + b"\0" if weights.is_dir() else b"")
            with open(path, "rb") as fh:
                for block in iter(functools.partial(fh.read, 1 << 20), b""):
                    digest.update(block)
        weights_id = {"file": weights.name, "sha256": digest.hexdigest()}
    record = {"extractor": name, "options": attrs.asdict(config) if attrs.has(type(config)) else {},
              "weights": weights_id, "decode": attrs.asdict(extractor.decode), "output": attrs.asdict(extractor.output)}
    return json.loads(json.dumps(record))  # as it reads back from the file (tuples become lists)


def check_settings(out: Path, record: dict[str, Any]) -> None:
    """Refuse to add features of other settings to a directory; write the record on first use."""
    path = out / SETTINGS_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: unreadable ({exc}); delete it only if every .npy there came from this "
                            "extractor") from None
        if old != record:
            diff = sorted(k for k in record if old.get(k) != record[k])
            raise DataError(f"{out} holds features made with other settings ({', '.join(diff)} differ; see {path}); "
                            "write to another --out directory")
        return
    replace_atomic(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())


def npy_bytes(rows: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, rows, allow_pickle=False)
    return buf.getvalue()


def remove_stale_staging(out: Path, ids: set[str]) -> int:
    """Staging files of this shard's ids left by a killed run (other shards' live staging files are untouched)."""
    removed = 0
    for tmp in out.glob(".*.npy.tmp-*"):
        if tmp.name[1:].split(".npy.tmp-")[0] in ids:
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


class Progress:
    """A progress bar on a terminal; elsewhere (a log file, a cluster job) a line every ``every`` seconds with
    videos done, videos/s, seconds of video/s and the ETA, and always one when the last video is done."""

    def __init__(self, total: int, every: float, enabled: bool) -> None:
        self.total, self.every, self.enabled = total, every, enabled
        self.start = self.last = time.monotonic()
        self.done = 0
        self.seconds = 0.0
        self.bar = None
        if enabled and total and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="video", file=sys.stderr, dynamic_ncols=True)

    def video(self, seconds: float) -> None:
        self.done += 1
        self.seconds += seconds
        now = time.monotonic()
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.seconds / max(now - self.start, 1e-9):.1f} s of video/s", refresh=False)
            self.bar.update(1)
        elif self.enabled and (now - self.last >= self.every or self.done == self.total):
            self.last = now
            print(self.line(now), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def line(self, now: float) -> str:
        spent = max(now - self.start, 1e-9)
        rate = self.done / spent
        if rate > 0:
            eta = int((self.total - self.done) / rate)
            eta_text = f"{eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}"
        else:
            eta_text = "?"
        return (f"extract: {self.done}/{self.total} videos, {rate:.2f} videos/s, {self.seconds / spent:.1f} s of "
                f"video/s, ETA {eta_text}")


@attrs.define
class _Pending:
    """A video whose rows are being computed."""

    chunks: int = 0  # chunks received
    rows: list[tuple[int, np.ndarray]] = attrs.field(factory=list)  # (position, row) embedded so far
    total: int | None = None  # set when decoding finished


def run_extract(videos: Sequence[Path], out: Path, extractor: FeatureExtractor, *, name: str, settings: dict[str, Any],
                batch_size: int = 32, shard: tuple[int, int] = (0, 1), workers: int = 0, progress_every: float = 10.0,
                progress: bool = True) -> Report:
    """Extract this shard's share of ``videos`` into ``out``; returns the report (also written to ``out``)."""
    import torch

    started = time.monotonic()
    index, count = shard
    mine = list(videos)[index::count]
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings)
    report = Report(extractor=name, shard=f"{index}/{count}", videos=len(mine))
    remove_stale_staging(out, {p.stem for p in mine})
    todo: list[tuple[int, Path]] = []
    for i, path in enumerate(mine):
        if (out / f"{path.stem}.npy").is_file():
            report.already_done += 1
        else:
            todo.append((i, path))
    spec, dtype = extractor.decode, np.dtype(extractor.output.dtype)
    meter = Progress(len(todo), progress_every, progress)
    device = torch.device(getattr(extractor, "device", "cpu"))
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=device).view(1, 1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=device).view(1, 1, 3, 1, 1)
    normalise = spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0)
    pending: dict[int, _Pending] = {}
    batch: list[tuple[int, int, np.ndarray]] = []  # (video, position, chunk)

    def finish(video: int) -> None:
        state = pending.pop(video)
        with np.errstate(over="ignore"):  # an overflow becomes inf, reported just below
            rows = np.stack([row for _, row in sorted(state.rows, key=lambda item: item[0])]).astype(dtype)
        path = mine[video]
        if not np.isfinite(rows).all():  # NaN from the model, or values past the storage dtype's range
            bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
            report.skip(path, "non-finite rows", f"{path}: rows {bad[:5].tolist()} are not finite as {dtype.name}")
            meter.video(0.0)
            return
        replace_atomic(out / f"{path.stem}.npy", npy_bytes(rows))
        fault_point("extract_video_written")
        report.extracted += 1
        report.rows += len(rows)
        seconds = len(rows) / spec.rows_per_second
        report.video_seconds += seconds
        meter.video(seconds)

    def flush() -> None:
        if not batch:
            return
        chunks = np.zeros((batch_size, *batch[0][2].shape), dtype=np.uint8)
        for slot, (_, _, chunk) in enumerate(batch):
            chunks[slot] = chunk
        # uint8 goes to the device (a quarter of the float bytes), then becomes (B, F, 3, H, W) floats there
        pixels = torch.from_numpy(chunks).to(device).permute(0, 1, 4, 2, 3).float().div_(255.0)
        if normalise:
            pixels = (pixels - mean) / std
        with torch.inference_mode():
            embedded = extractor.embed(pixels)
        rows = (embedded.detach().float().cpu().numpy() if hasattr(embedded, "detach")
                else np.asarray(embedded, np.float32))
        if rows.shape != (batch_size, extractor.output.width):
            raise DataError(f"feature extractor {name!r} returned rows of shape {rows.shape} for {batch_size} chunks; "
                            f"expected ({batch_size}, {extractor.output.width})")
        fault_point("extract_batch")
        done = []
        for slot, (video, position, _) in enumerate(batch):
            state = pending[video]
            state.rows.append((position, rows[slot]))
            if state.total is not None and len(state.rows) == state.total:
                done.append(video)
        batch.clear()
        for video in done:
            finish(video)

    events = _decode_workers(todo, spec, workers) if workers > 0 and todo else _decode_inline(todo, spec)
    for kind, video, payload in events:
        state = pending.setdefault(video, _Pending())
        if kind == "rows":
            for chunk in payload:
                batch.append((video, state.chunks, chunk))
                state.chunks += 1
                if len(batch) == batch_size:
                    flush()
        elif kind == "skip":
            reason, detail = payload
            report.skip(mine[video], reason, detail)
            pending.pop(video, None)
            batch[:] = [item for item in batch if item[0] != video]
            meter.video(0.0)
        else:  # done
            state.total = payload
            if len(state.rows) == state.total:
                finish(video)
    flush()
    meter.close()
    report.elapsed_seconds = round(time.monotonic() - started, 3)
    report.video_seconds = round(report.video_seconds, 3)
    replace_atomic(out / report_name(shard), (json.dumps(report.as_json(), indent=2) + "\n").encode())
    return report


def report_name(shard: tuple[int, int]) -> str:
    """``extract_report.json``, or ``extract_report.shard-I-of-N.json`` when the list is shared out."""
    index, count = shard
    return "extract_report.json" if count == 1 else f"extract_report.shard-{index}-of-{count}.json"
