"""Where each video's captions sit in a How2 ``captions.json``, found in one streaming pass.

The file is one JSON object keyed by video id, often several GB: it is read in chunks and only the wanted keys'
byte spans are kept (one value is decoded at a time, then dropped), so memory stays bounded and each shard later
reads just its own videos' spans. A truncated or malformed file is a :class:`~norton_core.errors.DataError` with
the byte position.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from norton_core.errors import DataError


def index_captions(path: Path, wanted: set[str], chunk_chars: int = 1 << 22) -> dict[str, tuple[int, int]]:
    """Byte ``(offset, length)`` of the value of each wanted key of a top-level JSON object, scanning the file
    once with bounded memory (one value at a time is decoded)."""
    decoder = json.JSONDecoder()
    index: dict[str, tuple[int, int]] = {}
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: captions file is missing") from None
    with fh:
        buf, pos, byte_at_pos, eof = "", 0, 0, False

        def more() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            chunk = fh.read(chunk_chars)
            eof = not chunk
            buf, pos = buf[pos:] + chunk, 0
            return bool(chunk)

        def skip_ws() -> str:
            nonlocal pos, byte_at_pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                    byte_at_pos += 1
                if pos < len(buf):
                    return buf[pos]
                if not more():
                    raise DataError(f"{path}: ends early near byte {byte_at_pos} (truncated JSON?)")

        def decode() -> tuple[Any, int]:
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                    if end < len(buf) or eof:
                        return value, end
                except json.JSONDecodeError as exc:
                    if eof:
                        raise DataError(f"{path}: invalid JSON near byte {byte_at_pos}: {exc.msg}") from None
                if not more():  # a number at the very end of the buffer may continue in the next chunk
                    continue

        def advance(end: int) -> None:
            nonlocal pos, byte_at_pos
            seg = buf[pos:end]
            byte_at_pos += len(seg) if seg.isascii() else len(seg.encode("utf-8"))
            pos = end

        try:
            if skip_ws() != "{":
                raise DataError(f"{path}: expected a JSON object of captions keyed by video id")
            advance(pos + 1)
            if skip_ws() == "}":
                return index
            while True:
                key, end = decode()
                if not isinstance(key, str):
                    raise DataError(f"{path}: expected a video id string near byte {byte_at_pos}")
                advance(end)
                if skip_ws() != ":":
                    raise DataError(f"{path}: expected ':' after key {key!r} near byte {byte_at_pos}")
                advance(pos + 1)
                skip_ws()
                start_byte = byte_at_pos
                _, end = decode()
                advance(end)
                if key in wanted:
                    index[key] = (start_byte, byte_at_pos - start_byte)
                sep = skip_ws()
                advance(pos + 1)
                if sep == "}":
                    return index
                if sep != ",":
                    raise DataError(f"{path}: expected ',' or '}}' after the captions of {key!r} near byte {byte_at_pos}")
                skip_ws()
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 ({exc})") from None
