from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from norton_core.extract.decode import SkipVideo, VideoInfo, chain_text, filter_chain, iter_chunks, iter_frames
from norton_core.plugin.interfaces import DecodeSpec
from tests.extract.videos import make_audio_only, make_video

S3D = DecodeSpec()  # 30 fps, short side 224, centre crop 224
FFMPEG = shutil.which("ffmpeg")
#: (file name, width, height, fps, frames, codec, the reference's chain worked by hand:
#:  short side -> 224, long side int(long * 224 / short), crop offsets int((side - 224) / 2))
VIDEOS = [
    ("a.mp4", 320, 240, 25, 60, "libx264", "fps=30,scale=298:224,crop=224:224:37:0,format=rgb24"),
    ("b.webm", 181, 321, 24, 40, "libvpx-vp9", "fps=30,scale=224:397,crop=224:224:0:86,format=rgb24"),
    ("c.avi", 480, 270, 60, 70, "mpeg4", "fps=30,scale=398:224,crop=224:224:87:0,format=rgb24"),
]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    return {name: make_video(root / name, w, h, fps, n, codec) for name, w, h, fps, n, codec, _ in VIDEOS}


@pytest.mark.parametrize("name,width,height,fps,frames,codec,expected", VIDEOS)
def test_chain_is_the_reference_chain(name, width, height, fps, frames, codec, expected):
    assert chain_text(filter_chain(VideoInfo(width, height, 0, codec), S3D)) == expected


def test_rotated_video_is_turned_upright_before_scaling():
    # a 320x240 stream shown rotated by 90 degrees is a 240x320 picture: short side 240 -> 224, long 320 -> 298
    assert chain_text(filter_chain(VideoInfo(320, 240, 90, "h264"), S3D)) == \
        "transpose=cclock,fps=30,scale=224:298,crop=224:224:0:37,format=rgb24"
    assert chain_text(filter_chain(VideoInfo(320, 240, 180, "h264"), S3D)).startswith("hflip,vflip,fps=30,scale=298:224")


def _frames_through_graph(path: Path, description: str) -> np.ndarray:
    """The reference chain run by PyAV's own filter graph, built here from the chain's text."""
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        graph = None
        for frame in container.decode(stream):
            if graph is None:
                graph = av.filter.Graph()
                node = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                        time_base=stream.time_base)
                for part in description.split(","):
                    name, _, args = part.partition("=")
                    nxt = graph.add(name, args)
                    node.link_to(nxt)
                    node = nxt
                node.link_to(graph.add("buffersink"))
                graph.configure()
            graph.push(frame)
            out += _pull_all(graph)
        graph.push(None)
        out += _pull_all(graph)
    return np.stack(out)


def _pull_all(graph):
    frames = []
    while True:
        try:
            frames.append(graph.pull().to_ndarray())
        except (av.error.BlockingIOError, av.error.EOFError):
            return frames


@pytest.mark.parametrize("name,width,height,fps,frames,codec,expected", VIDEOS)
def test_frames_equal_pyav_filter_graph_of_the_reference_chain(videos, name, width, height, fps, frames, codec,
                                                               expected):
    ours = np.stack(list(iter_frames(videos[name], S3D)))
    assert ours.shape == (round(frames / fps * 30), 224, 224, 3)
    assert np.array_equal(ours, _frames_through_graph(videos[name], expected))


def _ffmpeg_frames(path: Path, description: str) -> np.ndarray:
    """The reference extractor's command: ffmpeg -i VIDEO -vf fps,scale,crop -f rawvideo -pix_fmt rgb24 pipe:."""
    chain = description.removesuffix(",format=rgb24")
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-vf", chain, "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "pipe:"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 224, 224, 3)


@pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg command on PATH")
@pytest.mark.parametrize("name,width,height,fps,frames,codec,expected", VIDEOS)
def test_frames_equal_the_ffmpeg_command_bit_for_bit(videos, name, width, height, fps, frames, codec, expected):
    assert np.array_equal(np.stack(list(iter_frames(videos[name], S3D))), _ffmpeg_frames(videos[name], expected))


@pytest.mark.skipif(FFMPEG is None, reason="no ffmpeg command on PATH")
def test_rotated_video_equals_the_ffmpeg_command(videos, tmp_path):
    rotated = tmp_path / "rotated.mp4"
    made = subprocess.run([FFMPEG, "-v", "error", "-i", str(videos["a.mp4"]), "-c", "copy", "-metadata:s:v:0",
                           "rotate=90", str(rotated)], capture_output=True)
    with av.open(str(rotated)) as container:
        if made.returncode != 0 or next(container.decode(video=0)).rotation == 0:
            pytest.skip("this ffmpeg cannot write rotation metadata with -metadata rotate")
    ours = np.stack(list(iter_frames(rotated, S3D)))
    # the ffmpeg command turns the picture upright itself (autorotate): only the sizes are ours
    assert np.array_equal(ours, _ffmpeg_frames(rotated, "fps=30,scale=224:298,crop=224:224:0:37"))


def test_chunks_are_zero_padded_rows_of_30_frames(videos):
    # 60 frames at 25 fps = 2.4 s = 72 frames at 30 fps: rows of 30, 30 and 12 + 18 zero frames
    frames = np.stack(list(iter_frames(videos["a.mp4"], S3D)))
    pieces = list(iter_chunks(videos["a.mp4"], S3D, max_rows=2))
    assert [p.shape for p in pieces] == [(2, 30, 224, 224, 3), (1, 30, 224, 224, 3)]
    chunks = np.concatenate(pieces)
    assert np.array_equal(chunks.reshape(-1, 224, 224, 3)[:72], frames)
    assert not chunks[2, 12:].any() and chunks[2, 11].any()


def test_no_crop_keeps_the_scaled_frame(videos):
    spec = DecodeSpec(fps=2, short_side=64, crop=None, frames_per_row=2)
    frames = list(iter_frames(videos["b.webm"], spec))  # 181 x 321 -> 64 x int(321 * 64 / 181) = 64 x 113
    assert frames[0].shape == (113, 64, 3) and len(frames) == 3  # 1.67 s at 2 fps: the ffmpeg command gives 3 too


def _skip_reason(path: Path) -> SkipVideo:
    with pytest.raises(SkipVideo) as info:
        list(iter_chunks(path, S3D))
    return info.value


def test_dirty_videos_are_skipped_with_their_reason(tmp_path, videos):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(videos["a.mp4"].read_bytes()[:2000])
    short = make_video(tmp_path / "short.mp4", 64, 48, 25, 20)  # 0.8 s: 24 frames at 30 fps
    audio = make_audio_only(tmp_path / "audio.m4a")
    assert _skip_reason(tmp_path / "nope.mp4").reason == "missing file"
    assert _skip_reason(empty).reason == "empty file"
    assert _skip_reason(garbage).reason == "unreadable"
    assert _skip_reason(truncated).reason in ("unreadable", "decode error", "too short")
    skip = _skip_reason(short)
    assert skip.reason == "too short" and "24 frames at 30 fps (0.80 s)" in skip.detail
    skip = _skip_reason(audio)
    assert skip.reason == "no video stream" and "streams: audio" in skip.detail


def test_variable_frame_rate_follows_timestamps(tmp_path):
    # frames 1/10 s apart, then 1/2 s apart: the fps filter repeats frames to fill the time, as ffmpeg does
    path = tmp_path / "vfr.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 30)
        pts = [0, 3, 6, 9, 12, 27, 42, 57]  # in 1/30 s
        for i, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 30 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 30)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    spec = DecodeSpec(fps=30, short_side=48, crop=48, frames_per_row=30)
    frames = list(iter_frames(path, spec))
    assert 57 <= len(frames) <= 60  # ~2 s of video at 30 fps although only 8 frames were stored
