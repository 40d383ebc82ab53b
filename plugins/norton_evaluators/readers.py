"""Readers of the public evaluation formats (docs/data_formats.md) and the skip accounting they share.

A malformed file (not the documented layout) raises :class:`~norton_core.errors.DataError` naming the file, the
record and what was expected. An item that is well-formed but cannot be evaluated (a missing or unusable feature
file, an empty segment, a segment past the end of the video) is counted under a ``skipped_*`` metric and logged
with examples, never dropped silently.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from norton_core import DataError, read_json

log = logging.getLogger("norton.evaluation")

FEATURE_DIM = 512


class Skips:
    """Counts of items that could not be evaluated, by reason, with a few examples each."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, example: str) -> None:
        self.counts[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 3:
            shown.append(example)

    def metrics(self, reasons: tuple[str, ...]) -> dict[str, float]:
        """``skipped_<reason>`` for every documented reason (zeros included, so tables keep their shape)."""
        for reason in self.counts:
            if reason not in reasons:
                reasons = (*reasons, reason)
        return {f"skipped_{r}": float(self.counts[r]) for r in reasons}

    def report(self) -> None:
        for reason, count in sorted(self.counts.items()):
            log.warning("%s: skipped %d item(s): %s (e.g. %s)", self.task, count, reason.replace("_", " "),
                        "; ".join(self.examples[reason]))


class FeatureDir:
    """``<video_id>.npy`` files of one directory, loaded once each and checked (2-D, 512 wide, finite).

    ``features`` is the directory relative to the dataset directory ``root`` (``features`` by default; users'
    copies are often named like ``youcook_validation_feature_fps30_512``), or an absolute path. A directory that
    does not exist is an error, not a run in which every video is "missing".
    """

    def __init__(self, root: Path, skips: Skips, features: str = "features", task: str = "") -> None:
        self.dir = root / features
        self.skips = skips
        self._cache: dict[str, np.ndarray | None] = {}
        if not self.dir.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir() and "feature" in p.name) \
                if root.is_dir() else []
            hint = f"; {root} holds {', '.join(found)}" if found else ""
            where = f"[evaluation.task_options.{task}] " if task else ""
            raise DataError(f"{self.dir}: feature directory not found (expected <video_id>.npy files){hint}; "
                            f"set {where}features = \"DIR\" (relative to {root}, or absolute)")

    def get(self, video_id: str) -> np.ndarray | None:
        """The ``(T, 512)`` float32 features, or None (counted under ``skipped_<reason>``) when unusable."""
        if video_id not in self._cache:
            self._cache[video_id] = self._load(video_id)
        return self._cache[video_id]

    def _load(self, video_id: str) -> np.ndarray | None:
        path = self.dir / f"{video_id}.npy"
        if not path.is_file():
            self.skips.add("missing_features", f"{video_id}: no {path}")
            return None
        try:
            feats = np.load(path, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError) as exc:
            self.skips.add("bad_features", f"{path}: unreadable ({exc})")
            return None
        if feats.ndim != 2 or feats.shape[1] != FEATURE_DIM or feats.dtype.kind != "f":
            self.skips.add("bad_features", f"{path}: expected a (T, {FEATURE_DIM}) float array, got "
                                           f"{feats.dtype} {feats.shape}")
            return None
        feats = np.asarray(feats, dtype=np.float32)
        if not np.isfinite(feats).all():
            self.skips.add("bad_features", f"{path}: non-finite values")
            return None
        if len(feats) == 0:
            self.skips.add("bad_features", f"{path}: no rows")
            return None
        return feats


#: the largest annotation file read (the released YouCook2, HTM-Align and COIN files are a few MB to tens of MB)
MAX_ANNOTATION_BYTES = 512 * 1024 * 1024


class Gallery:
    """The candidate videos of a retrieval or choice task: each video's whole-feature span once, however many
    queries name it (a video listed twice is one candidate, not two)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.spans: list[tuple[np.ndarray, int, int]] = []

    def add(self, video: str, features: np.ndarray) -> int:
        """The candidate number of ``video``, added on first sight."""
        if video not in self.index:
            self.index[video] = len(self.spans)
            self.spans.append((features, 0, len(features)))
        return self.index[video]


def read_annotations(path: Path) -> Any:
    """An evaluation set's JSON annotation file; missing, oversized or invalid is one :class:`DataError` line."""
    if not path.is_file():
        raise DataError(f"{path}: evaluation file not found (expected the public layout, see docs/data_formats.md)")
    return read_json(path, MAX_ANNOTATION_BYTES, "an evaluation annotation file", DataError)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------------------------------------------
# YouCook2
# ----------------------------------------------------------------------------------------------------------------


@attrs.frozen
class Segment:
    id: int
    start: float
    end: float
    sentence: str
    #: position in the video's ``annotations`` list (the ``k`` of the reference's ``<video>_<k>`` clip names)
    position: int = 0


def read_youcook2(path: Path, subset: str | None) -> dict[str, list[Segment]]:
    """``{video_id: segments sorted by id}`` for the videos of ``subset`` (None: every video) in the official
    YouCook2 layout."""
    data = read_annotations(path)
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise DataError(f"{path}: expected an object with a \"database\" object (YouCook2 layout), "
                        f"got {type(data).__name__}{' without it' if isinstance(data, dict) else ''}")
    videos: dict[str, list[Segment]] = {}
    for vid, entry in database.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("annotations"), list):
            raise DataError(f"{path}: database[{vid!r}]: expected an object with an \"annotations\" list")
        if subset is not None and entry.get("subset") != subset:
            continue
        segments = []
        for k, ann in enumerate(entry["annotations"]):
            where = f"{path}: database[{vid!r}].annotations[{k}]"
            if not isinstance(ann, dict):
                raise DataError(f"{where}: expected an object, got {type(ann).__name__}")
            seg, sentence, ann_id = ann.get("segment"), ann.get("sentence"), ann.get("id", k)
            if not (isinstance(seg, list) and len(seg) == 2 and all(_number(s) for s in seg)):
                raise DataError(f"{where}: \"segment\" must be [start_s, end_s] numbers, got {seg!r}")
            if not isinstance(sentence, str):
                raise DataError(f"{where}: \"sentence\" must be a string, got {sentence!r}")
            if not isinstance(ann_id, int) or isinstance(ann_id, bool):
                raise DataError(f"{where}: \"id\" must be an integer, got {ann_id!r}")
            segments.append(Segment(ann_id, float(seg[0]), float(seg[1]), sentence, k))
        videos[str(vid)] = sorted(segments, key=lambda s: s.id)
    return videos


def segment_rows(segment: Segment, length: int) -> tuple[int, int] | str:
    """Feature rows ``[start, end)`` of a segment (seconds = rows, outward to whole seconds, cut at the video's end),
    or the skip reason: ``empty_segment`` (end <= start) or ``segment_past_end`` (starts at or after the end)."""
    start, end = int(math.floor(segment.start)), int(math.ceil(segment.end))
    if segment.end <= segment.start or (start < 0 and end <= 0):
        return "empty_segment"
    start = max(start, 0)
    if start >= length:
        return "segment_past_end"
    return start, min(end, length)


#: bounds for ``youcook_val.pkl`` (3,350 records of a few fields each in the released file)
CLIP_PICKLE_MAX_ITEMS = 2_000_000
CLIP_PICKLE_MAX_DEPTH = 8
#: the most clips a clip list may name (YouCook2 has ~14,000 annotated segments in all its splits), and the
#: largest clip-list file read (the released pickle is well under a megabyte)
MAX_CLIPS = 100_000
MAX_CLIP_LIST_BYTES = 64 * 1024 * 1024


def read_clip_selection(path: Path) -> list[tuple[str, int]]:
    """The clips to score, as ``(video_id, k)`` in file order: clip ``k`` is position ``k`` of the video's
    ``annotations`` list. Two layouts:

    - ``*.pkl``: the reference's ``youcook_val.pkl``, a list of records ``{"id": "<video>_<k>", ...}``. It is read
      with an unpickler that admits only dicts, lists, tuples, strings and numbers and refuses anything else
      before building any object, so a crafted file runs nothing.
    - anything else: a text file with one ``<video>_<k>`` per line (blank lines and ``#`` comments ignored).
    """
    from norton_core import read_bounded

    if not path.exists():
        raise DataError(f"{path}: clip list not found (expected youcook_val.pkl or a text file of <video>_<k> lines)")
    raw = read_bounded(path, MAX_CLIP_LIST_BYTES, "a clip list", DataError)
    if path.suffix == ".pkl":
        from norton_core import load_plain

        data = load_plain(raw, source=str(path), max_items=CLIP_PICKLE_MAX_ITEMS, max_depth=CLIP_PICKLE_MAX_DEPTH)
        if not isinstance(data, (list, tuple)):
            raise DataError(f"{path}: expected a list of records {{\"id\": \"<video>_<k>\", ...}}, got "
                            f"{type(data).__name__}")
        names = []
        for i, rec in enumerate(data):
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                raise DataError(f"{path}: record {i}: expected a dict with a string \"id\" (\"<video>_<k>\"), got "
                                f"{_short(rec)}")
            names.append((f"record {i}", rec["id"]))
    else:
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not a UTF-8 text clip list ({exc})") from None
        names = [(f"line {n}", line.strip()) for n, line in enumerate(lines, start=1)
                 if line.strip() and not line.lstrip().startswith("#")]
    if len(names) > MAX_CLIPS:
        raise DataError(f"{path}: names {len(names)} clips, more than the {MAX_CLIPS} a clip list may hold")
    out = []
    first: dict[str, str] = {}
    for where, name in names:
        video, sep, k = name.rpartition("_")
        if not sep or not video or not k.isdigit():
            raise DataError(f"{path}: {where}: expected a clip name <video>_<k> (k = the annotation's position), "
                            f"got {name!r}")
        if name in first:  # each clip is scored once: a repeat would weigh it twice (or blow up the evaluation)
            raise DataError(f"{path}: {where}: clip {name!r} is listed again (first at {first[name]})")
        first[name] = where
        out.append((video, int(k)))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------------------------------------------
# HTM-Align
# ----------------------------------------------------------------------------------------------------------------


@attrs.frozen
class AlignSentence:
    alignable: bool
    start: float
    end: float
    text: str


def read_htm_align(path: Path) -> dict[str, list[AlignSentence]]:
    """``{video_id: sentences in file order}`` from ``htm_align.json``."""
    data = read_annotations(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{video_id: [[alignable, start, end, text], ...]}}, "
                        f"got {type(data).__name__}")
    out: dict[str, list[AlignSentence]] = {}
    for vid, rows in data.items():
        if not isinstance(rows, list):
            raise DataError(f"{path}: [{vid!r}]: expected a list of [alignable, start, end, text], got "
                            f"{type(rows).__name__}")
        sentences = []
        for k, row in enumerate(rows):
            ok = (isinstance(row, list) and len(row) == 4 and row[0] in (0, 1) and not isinstance(row[0], float)
                  and _number(row[1]) and _number(row[2]) and isinstance(row[3], str))
            if not ok:
                raise DataError(f"{path}: [{vid!r}][{k}]: expected [alignable (0 or 1), start_s, end_s, \"text\"], "
                                f"got {row!r}")
            sentences.append(AlignSentence(bool(row[0]), float(row[1]), float(row[2]), row[3]))
        out[str(vid)] = sentences
    return out


# ----------------------------------------------------------------------------------------------------------------
# MSR-VTT
# ----------------------------------------------------------------------------------------------------------------

MSRVTT_HEADER = ("key", "vid_key", "video_id", "sentence")


def read_msrvtt(path: Path) -> list[tuple[str, str]]:
    """``[(video_id, sentence), ...]`` in file order from ``MSRVTT_JSFUSION_test.csv``."""
    if not path.is_file():
        raise DataError(f"{path}: evaluation file not found (expected the JSFusion 1k-A test CSV)")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:4]) != MSRVTT_HEADER:
            raise DataError(f"{path}: line 1: expected the header {','.join(MSRVTT_HEADER)}, got "
                            f"{','.join(header) if header else 'an empty file'}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 4:
                raise DataError(f"{path}: line {line}: expected 4 fields ({','.join(MSRVTT_HEADER)}), got {len(row)}")
            rows.append((row[2].strip(), row[3]))
    return rows
