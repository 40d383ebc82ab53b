"""Subtitles (``.srt``, WebVTT ``.vtt`` as YouTube serves them) -> the ``captions.json`` layout that
``norton prepare how2`` reads: ``{"<video_id>": {"start": [...], "end": [...], "text": [...]}}``.

YouTube's automatic captions roll: each cue shows the previous line again above the new one, and short
"transition" cues repeat a line alone. Keeping every cue would repeat each spoken line two or three times, so the
lines a cue carries over from the previous cue are dropped (the longest run of its first lines equal to the last
lines of the previous cue); a cue with nothing new, or a line identical to the caption just kept, extends that
caption's end instead of repeating it. A kept line takes the time span of the cue where it first appears. Inline
markup (``<c>``, timing tags such as ``<00:00:01.500>``, ``<i>``) and HTML entities are removed.

The video id is the file name without ``.vtt``/``.srt`` and without a language tag before it
(``abc123.en.vtt``, ``abc123.en-US.srt`` and ``abc123.vtt`` all give ``abc123``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from norton_core.errors import DataError

SUBTITLE_SUFFIXES = frozenset({".vtt", ".srt"})
_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[.,](\d{1,3})")
_ARROW = re.compile(rf"^\s*({_TIME.pattern})\s*-->\s*({_TIME.pattern})")
_TAG = re.compile(r"<[^>]*>")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


@attrs.define
class Cue:
    start: float
    end: float
    lines: list[str]


def _seconds(match: re.Match[str], offset: int) -> float:
    hours, minutes, seconds, millis = (match.group(offset + i) for i in range(4))
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000.0


def _clean(line: str) -> str:
    return " ".join(html.unescape(_TAG.sub("", line)).split())


def parse_cues(text: str, source: str = "subtitles") -> list[Cue]:
    """Every cue of an SRT or WebVTT text, in file order, with cleaned non-empty lines.

    A timing line opens a cue and an empty line closes it (a line of spaces does not: YouTube puts one inside its
    cues). Lines outside cues (the WEBVTT header, NOTE/STYLE blocks, SRT's cue numbers) are ignored; an SRT number
    left inside the previous cue by a separator line of spaces is recognised as one. A timing line that cannot be
    read is an error naming the file and line."""
    cues: list[Cue] = []
    current: Cue | None = None
    raw_lines: list[str] = []

    def close() -> None:
        if current is not None:
            if raw_lines and raw_lines[-1].strip().isdigit():
                raw_lines.pop()
            current.lines = [line for line in map(_clean, raw_lines) if line]
            if current.lines and current.end > current.start:
                cues.append(current)

    lines = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff").split("\n")
    for lineno, row in enumerate(lines, 1):
        if "-->" in row:
            match = _ARROW.match(row)
            if match is None:
                raise DataError(f"{source}:{lineno}: unreadable cue timing {row.strip()!r} (expected "
                                "HH:MM:SS.mmm --> HH:MM:SS.mmm)")
            close()
            current, raw_lines = Cue(_seconds(match, 2), _seconds(match, 7), []), []
        elif row == "":
            close()
            current, raw_lines = None, []
        elif current is not None:
            raw_lines.append(row)
    close()
    return cues


def deduplicate(cues: Sequence[Cue]) -> dict[str, list[Any]]:
    """Rolling auto-caption lines once each: ``{"start", "end", "text"}`` lists (see the module docstring)."""
    start: list[float] = []
    end: list[float] = []
    text: list[str] = []
    previous: list[str] = []
    for cue in sorted(cues, key=lambda c: c.start):
        carried = max((k for k in range(1, min(len(previous), len(cue.lines)) + 1)
                       if cue.lines[:k] == previous[-k:]), default=0)
        previous = cue.lines
        if carried == len(cue.lines) and text:  # nothing new (a repeat, or a transition cue): the line goes on
            end[-1] = max(end[-1], round(cue.end, 3))
            continue
        for line in cue.lines[carried:]:
            if text and text[-1] == line:
                end[-1] = max(end[-1], round(cue.end, 3))
                continue
            start.append(round(cue.start, 3))
            end.append(round(cue.end, 3))
            text.append(line)
    return {"start": start, "end": end, "text": text}


def video_id(path: Path) -> str:
    """``abc123.en.vtt`` -> ``abc123`` (see the module docstring)."""
    stem = path.name[: -len(path.suffix)]
    head, dot, tail = stem.rpartition(".")
    return head if dot and head and _LANGUAGE.match(tail) else stem


def collect_subtitles(inputs: Iterable[str | Path]) -> list[Path]:
    """Subtitle files named by ``inputs`` (files, or folders searched recursively), sorted."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += [p for p in item.rglob("*") if p.suffix.lower() in SUBTITLE_SUFFIXES and p.is_file()]
        elif item.is_file():
            found.append(item)
        else:
            raise DataError(f"{item}: no such subtitle file or folder")
    return sorted(found)


def captions_from_subtitles(paths: Sequence[Path]) -> dict[str, dict[str, list[Any]]]:
    """``captions.json`` content for ``paths``; two files for one video id (say two languages) are an error."""
    captions: dict[str, dict[str, list[Any]]] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        vid = video_id(path)
        if vid in origin:
            raise DataError(f"two subtitle files for the video {vid!r}: {origin[vid]} and {path}; keep one language")
        origin[vid] = path
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: unreadable subtitles ({exc})") from None
        captions[vid] = deduplicate(parse_cues(text, source=str(path)))
    return captions
