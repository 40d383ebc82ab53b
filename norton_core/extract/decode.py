"""Video decoding for feature extraction: PyAV (FFmpeg's libraries) through the same libavfilter chain as the
reference extractor's ``ffmpeg`` command, so that the frames are FFmpeg's own, bit for bit.

The chain, for a ``W x H`` video and a :class:`~norton_core.plugin.interfaces.DecodeSpec`::

    fps=FPS, scale=W':H', crop=C:C:X:Y, format=rgb24

where the short side is scaled to ``short_side`` and the long side to ``int(long * short_side / short)``
(truncated, as the reference computes it), and the crop is centred at ``X = int((W' - C) / 2)``,
``Y = int((H' - C) / 2)``. A video whose stream carries a rotation is first turned upright (``transpose`` /
``hflip,vflip``) as the ``ffmpeg`` command does by default, and the sizes are computed from the upright frame.

A video that cannot give one full chunk of frames raises :class:`SkipVideo` with its reason; nothing here lets a
decoder error escape as a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import numpy as np

from norton_core.plugin.interfaces import DecodeSpec

#: the reasons a video is skipped, as they are counted in the extraction report
REASONS: tuple[str, ...] = ("missing file", "empty file", "unreadable", "no video stream", "decode error",
                            "too short", "non-finite rows")


class SkipVideo(Exception):
    """This video gives no rows: ``reason`` is one of :data:`REASONS`, ``detail`` says what exactly."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@attrs.frozen
class VideoInfo:
    """The first video stream of a file, as decoded (before rotation)."""

    width: int
    height: int
    rotation: int  # the display matrix's rotation: 0, 90, 180 or 270 degrees
    codec: str


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(W', H')``: the short side becomes ``short_side``, the long side ``int(long * short_side / short)``."""
    if height >= width:
        return short_side, int(height * short_side / width)
    return int(width * short_side / height), short_side


def filter_chain(info: VideoInfo, spec: DecodeSpec) -> list[tuple[str, str]]:
    """The libavfilter chain as ``(filter, arguments)`` pairs (see the module docstring)."""
    chain = _rotation_filters(info.rotation)
    width, height = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
    out_w, out_h = scaled_size(width, height, spec.short_side)
    chain += [("fps", str(spec.fps)), ("scale", f"{out_w}:{out_h}")]
    if spec.crop is not None:
        crop = spec.crop
        chain.append(("crop", f"{crop}:{crop}:{int((out_w - crop) / 2)}:{int((out_h - crop) / 2)}"))
    chain.append(("format", "rgb24"))
    return chain


def chain_text(chain: list[tuple[str, str]]) -> str:
    """The chain as an ``ffmpeg -vf`` argument."""
    return ",".join(f"{name}={args}" if args else name for name, args in chain)


def frame_size(info: VideoInfo, spec: DecodeSpec) -> tuple[int, int]:
    """``(height, width)`` of the decoded frames."""
    if spec.crop is not None:
        return spec.crop, spec.crop
    width, height = (info.height, info.width) if info.rotation in (90, 270) else (info.width, info.height)
    out_w, out_h = scaled_size(width, height, spec.short_side)
    return out_h, out_w


def _rotation_filters(rotation: int) -> list[tuple[str, str]]:
    return {0: [], 90: [("transpose", "cclock")], 180: [("hflip", ""), ("vflip", "")],
            270: [("transpose", "clock")]}[rotation]


def _rotation(frame: object) -> int:
    """Degrees (0, 90, 180, 270) of the frame's display matrix, as PyAV reports it (counter-clockwise)."""
    angle = getattr(frame, "rotation", 0) or 0
    return int(round(float(angle) / 90.0)) % 4 * 90


def _open(path: Path):  # noqa: ANN202 - an av container
    import av

    if not path.is_file():
        raise SkipVideo("missing file", f"{path}: no such file")
    if path.stat().st_size == 0:
        raise SkipVideo("empty file", f"{path}: the file is empty (0 bytes)")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise SkipVideo("unreadable", f"{path}: {exc.strerror or exc}") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SkipVideo("unreadable", f"{path}: {exc}") from None


def iter_frames(path: Path, spec: DecodeSpec) -> Iterator[np.ndarray]:
    """Every output frame of the chain, ``(H, W, 3)`` uint8 RGB, in order."""
    import av

    container = _open(path)
    try:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise SkipVideo("no video stream", f"{path}: no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        graph = sink = None
        try:
            for frame in container.decode(stream):
                if graph is None:
                    info = VideoInfo(frame.width, frame.height, _rotation(frame), stream.codec_context.name)
                    graph, sink = _build_graph(stream, frame, filter_chain(info, spec))
                graph.push(frame)
                yield from _drain(graph)
            if graph is not None:
                graph.push(None)
                yield from _drain(graph)
        except (av.error.FFmpegError, ValueError, OSError) as exc:
            raise SkipVideo("decode error", f"{path}: {exc}") from None
    finally:
        container.close()


def _build_graph(stream, first_frame, chain):  # noqa: ANN001, ANN202 - av objects
    import av

    graph = av.filter.Graph()
    node = graph.add_buffer(width=first_frame.width, height=first_frame.height, format=first_frame.format.name,
                            time_base=stream.time_base)
    for name, args in chain:
        nxt = graph.add(name, args)
        node.link_to(nxt)
        node = nxt
    sink = graph.add("buffersink")
    node.link_to(sink)
    graph.configure()
    return graph, sink


def _drain(graph) -> Iterator[np.ndarray]:  # noqa: ANN001 - an av filter graph
    import av

    while True:
        try:
            frame = graph.pull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return
        yield frame.to_ndarray()


def iter_chunks(path: Path, spec: DecodeSpec, max_rows: int = 8) -> Iterator[np.ndarray]:
    """The video's frames in pieces of at most ``max_rows`` chunks: ``(n, frames_per_row, H, W, 3)`` uint8, the
    last chunk zero-padded. Raises :class:`SkipVideo` when the video has fewer than ``frames_per_row`` frames (or
    none), is unreadable, or fails while decoding (pieces already yielded must then be discarded)."""
    per_row = spec.frames_per_row
    piece: list[np.ndarray] = []
    frames = 0
    for frame in iter_frames(path, spec):
        piece.append(frame)
        frames += 1
        if len(piece) == per_row * max_rows:
            yield np.stack(piece).reshape(max_rows, per_row, *frame.shape)
            piece = []
    if frames < per_row:
        seconds = frames / spec.fps
        raise SkipVideo("too short", f"{path}: {frames} frames at {spec.fps} fps ({seconds:.2f} s), fewer than the "
                                     f"{per_row} that make one row")
    if piece:
        rows = -(-len(piece) // per_row)
        block = np.zeros((rows * per_row, *piece[0].shape), dtype=np.uint8)
        block[: len(piece)] = np.stack(piece)
        yield block.reshape(rows, per_row, *piece[0].shape)
